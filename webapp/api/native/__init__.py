"""Tunebook's native REST API under /api/ (django-ninja; OpenAPI at /api/schema/, docs at /api/docs/).

Each area lives in its own router module; `app.ROUTERS` lists them, one line each.
"""
