"""The ``unit`` command line: one entry point for every stage of the pipeline."""
