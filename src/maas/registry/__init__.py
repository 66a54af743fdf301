"""The registry: models, immutable versions, movable aliases, and their artifacts.

Metadata lives in SQL (SQLAlchemy 2, Alembic migrations; SQLite by default,
PostgreSQL for shared installs); artifacts in a content-addressed store. May import:
``maas.config``, ``maas.errors``, ``maas.protocols``.
"""
