"""Data ingestion for UNIT: turns raw sources into ``<out>/<domain>/<split>/<file>`` data sets.

Every step is a plain typed function (called by the ``unit ingest`` commands, DVC stages and
Prefect flows); the model code does not import this package. ``run.run_ingest`` runs one
kind from its typed settings (``unit_core.ingest_settings``); ``synthetic/`` renders the
procedural demo data sets instead of reading raw data.
"""
