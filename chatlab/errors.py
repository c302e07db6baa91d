"""The one kind of error the CLI turns into a one-line message and exit status 2."""


class UsageError(Exception):
    """A user error: the message names the parameter, the value and what is allowed."""
