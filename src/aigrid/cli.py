"""The `aigrid` command: thin over the factories in each package."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.console import Console

from aigrid.errors import AigridError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="aigrid: an inference grid behind one OpenAI-compatible endpoint.")
spec_app = typer.Typer(no_args_is_help=True, help="Grid specs.")
app.add_typer(spec_app, name="spec")
console = Console()
err_console = Console(stderr=True)

DEFAULT_GATEWAY = "http://127.0.0.1:8080"
SpecArg = Annotated[Path, typer.Argument(help="grid spec (YAML)")]


def _fail(e: AigridError | httpx.HTTPError | OSError, code: int = 2) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {e}", highlight=False)
    return typer.Exit(code)


@app.command()
def up(spec: SpecArg = Path("examples/demo.yaml"),
       port: Annotated[int | None, typer.Option(help="gateway port (default: the spec's)")] = None) -> None:
    """Start every embedded engine of the spec and the gateway, in the foreground. Ctrl-C stops all."""
    from aigrid.gateway.server import run_grid
    from aigrid.spec.load import load_spec

    try:
        asyncio.run(run_grid(load_spec(spec), console, port=port))
    except AigridError as e:
        raise _fail(e) from None
    except KeyboardInterrupt:
        console.print("stopped")


@spec_app.command("check")
def spec_check(spec: SpecArg) -> None:
    """Validate a grid spec and summarise it."""
    from aigrid.spec.load import load_spec

    try:
        s = load_spec(spec)
    except AigridError as e:
        raise _fail(e) from None
    console.print(f"[green]ok[/] {spec}: {len(s.sites)} sites, {len(s.endpoints)} endpoints, "
                  f"{len(s.models)} models, {len(s.tenants)} tenants")


@app.command()
def explain(decision_id: str,
            gateway: Annotated[str, typer.Option(help="gateway base URL")] = DEFAULT_GATEWAY) -> None:
    """Print why a request went where it went: every candidate's scores, every rejection."""
    from aigrid.explain import render_decision

    try:
        r = httpx.get(f"{gateway.rstrip('/')}/v1/decisions/{decision_id}", timeout=5, trust_env=False)
    except httpx.HTTPError as e:
        raise _fail(e) from None
    if r.status_code != 200:
        err_console.print(f"[bold red]error:[/] {r.json().get('error', {}).get('message', r.text)}")
        raise typer.Exit(1)
    console.print(render_decision(r.json()))


def main() -> None:
    try:
        app()
    except BrokenPipeError:
        sys.exit(1)
