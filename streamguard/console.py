"""The rich console every command prints its tables to.

On a terminal, rich fits tables to the terminal's width. On a pipe or a log
file it would assume 80 columns, wrap cells mid-word and cut names short
(``campaign_me…``); there the console is :data:`PIPE_WIDTH` columns wide
instead, unless ``COLUMNS`` says otherwise.
"""

from __future__ import annotations

import os
from typing import Any

PIPE_WIDTH = 200
"""Columns of a console that is not a terminal: wide enough that no table of streamguard's is cut."""


def make_console(**kwargs: Any):
    """A :class:`rich.console.Console`; ``PIPE_WIDTH`` wide when it does not write to a terminal."""
    from rich.console import Console  # noqa: PLC0415 - rich only when something is printed

    out = Console(**kwargs)
    if not out.is_terminal and "width" not in kwargs and not os.environ.get("COLUMNS"):
        out = Console(width=PIPE_WIDTH, **kwargs)
    return out
