"""The one way elastiq shows long work: a rich progress bar, on a terminal only.

A bar is transient (it disappears when the work ends, leaving the results) and is not
drawn when stderr is not a terminal (logs, CI, pipes) or the caller turned it off.
"""
from __future__ import annotations

import sys

from rich.progress import Progress


def progress_bar(*columns, enabled: bool = True, console=None) -> Progress:
    """A transient ``rich.progress.Progress`` with ``columns`` (rich's default ones when
    none are given), drawn only when ``enabled`` and stderr is a terminal."""
    return Progress(*columns, console=console, transient=True, disable=not (enabled and sys.stderr.isatty()))
