"""The pipeline of one preset: ingest -> train -> evaluate -> register, as plain functions.

Called alike by ``unit stage`` (and so by DVC) and by the Prefect flow in ``flows/``.
"""
