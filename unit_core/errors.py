"""The one error type every layer raises for a problem with the user's input.

The ``unit`` command prints it as one message (exit status 2); library callers catch it
like any exception. It lives at the bottom of the layers so that none imports upward.
"""


class UserError(Exception):
    """A problem with the user's input: printed as one message, exit status 2."""
