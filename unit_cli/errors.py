"""Errors the ``unit`` command reports without a traceback."""


class UserError(Exception):
    """A problem with the user's input: printed as one message, exit status 2."""
