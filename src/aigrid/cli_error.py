"""One error line of the command line, the same from every command: `error: MESSAGE` on the given console,
the message escaped (a path or a header with `[...]` in it is printed as written, never read as rich markup;
a character that is not printable, as an escape sequence's ESC in a key of a spec file, shown escaped: printed,
it wrote the terminal's clipboard or erased the lines above) and never wrapped mid-sentence."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

from aigrid.printable import printable_lines


def print_error(console: Console, message: object) -> None:
    console.print(f"[bold red]error:[/] {escape(printable_lines(str(message)))}", highlight=False, soft_wrap=True)
