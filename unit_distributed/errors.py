"""The error a distributed run reports without a traceback."""


class DistributedError(RuntimeError):
    """Bad settings or state for a distributed run (storage, resources, resume); the message says which."""
