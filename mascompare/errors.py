"""The one exception type that reaches the user as a single sentence."""


def is_int_at_least(value, minimum: int) -> bool:
    """Whether a config value is an integer (a bool is not) no smaller than minimum."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


class UserError(Exception):
    """Bad input from the user: the message is one sentence saying what is wrong and what would be right.

    The CLI prints it without a traceback and exits with `status`.
    """

    status = 2


class EnvironmentFault(UserError):
    """The machine, not the input, is at fault (e.g. a full disk): one sentence as for bad input, status 1."""

    status = 1
