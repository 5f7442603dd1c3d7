"""One error line of the command line, the same from every command: `error: MESSAGE` on the given console,
the message escaped (a path or a header with `[...]` in it is printed as written, never read as rich markup)
and never wrapped mid-sentence."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape


def print_error(console: Console, message: object) -> None:
    console.print(f"[bold red]error:[/] {escape(str(message))}", highlight=False, soft_wrap=True)
