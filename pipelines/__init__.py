"""koobill: KooGallery marketplace data to partner bills.

Every capability is a plain function taking a data dir and its slice (a date, a month):
``ingest.ingest_date``, ``close.close_month``, ``amount_due.amount_due``,
``exports.export_month``, ``generate.generate``. The CLI and the Airflow DAGs call these.
"""

__version__ = "0.1.0"
