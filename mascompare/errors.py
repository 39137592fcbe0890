"""The one exception type that reaches the user as a single sentence."""


class UserError(Exception):
    """Bad input from the user: the message is one sentence saying what is wrong and what would be right.

    The CLI prints it without a traceback and exits with status 2.
    """
