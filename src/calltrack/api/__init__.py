"""The HTTP API: parse the v3 request, ask access and the store, hand the result to render."""
