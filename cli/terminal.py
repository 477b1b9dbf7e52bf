"""Where the CLI's tables and messages go."""

from __future__ import annotations

import os

LOG_WIDTH = 160  # columns when the output is not a terminal (a CI log, a file) and COLUMNS does not say


def new_console(stderr: bool = False):
    """A rich Console. Rich squeezes output that is not a terminal into 80 columns, which folds the fleet and
    review tables into fragments in the nightly job's log; there it is LOG_WIDTH wide instead."""
    from rich.console import Console

    console = Console(stderr=stderr)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = LOG_WIDTH
    return console
