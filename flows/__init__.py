"""Prefect orchestration of the pipeline: the flow ``unit`` and its deployments, one per preset."""
