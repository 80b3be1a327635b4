"""Fault and load scenarios: scripts anyone can run, whose quick versions run in CI."""
