"""The one error type the command line turns into a one-line message."""


class FnlInputError(ValueError):
    """Bad input (maps, masks, settings): the message names the problem and what to do."""
