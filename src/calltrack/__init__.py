"""calltrack: a self-hosted call-tracking calls store with a CallKeeper v3 export API."""

__version__ = "0.1.0"
