"""Writers of API answers: call pages and error bodies."""
