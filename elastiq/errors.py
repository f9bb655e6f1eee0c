"""The one error type for input elastiq refuses: a hostile or broken file, a bad option.

Its message is one line that names the problem and what to do; the command line prints
it and exits 2, never a traceback. It is a ValueError, so code that already catches
ValueError keeps working. This module imports nothing: every layer may raise it.
"""


class InputError(ValueError):
    """Input elastiq refuses; ``str(error)`` is the one line to show the user."""
