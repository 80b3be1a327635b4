"""Telephony: PBX events (generic and per-provider adapters) that become call records."""
