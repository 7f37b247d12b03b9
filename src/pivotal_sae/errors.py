"""The one exception type meant for users.

Anything raised as `UserError` is a problem with the user's input or environment that they can
fix; the CLI prints its message as a single line on stderr and exits with code 2. Every other
exception is a bug and is allowed to show a traceback.
"""


class UserError(Exception):
    """Bad input or an unusable environment, described in one sentence that says what to change."""
