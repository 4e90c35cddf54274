"""The one error type that means "the user asked for something we cannot do".

The CLI turns :class:`UsageError` into a one-line message and exit code 2 (bad input); any other
exception is a failure during the run (exit code 1). Raising it early, before anything is
written, is how bad input "loses nothing".
"""


class UsageError(Exception):
    """Bad input: unknown plugin, invalid config value, unsupported model, missing path..."""
