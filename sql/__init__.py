"""koobill's SQL files, installed as the package data folder ``pipelines.sql``.

Read them with ``pipelines.db.sql(name)``; the views are top-level (``bills.sql`` ...), the
steps of a pipeline are in its own folder (``ingest/``, ``close/``).
"""
