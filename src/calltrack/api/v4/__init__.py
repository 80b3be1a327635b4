"""API v4 (``/api/v4``): the changes feed, calls with filters and stats, beside v3.

Bearer keys with v3's access rules (``access``), RFC 9457 errors (``problems``), an OpenAPI
3.1 document built from the code's types (``openapi``).
"""
