"""The one error type the command turns into a one-line message."""


class AsmSketchError(Exception):
    """Bad input or a missing tool: the message names the problem and what to do."""
