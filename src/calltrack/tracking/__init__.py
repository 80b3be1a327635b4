"""Dynamic call tracking: the page snippet, hits, sources and number lending."""
