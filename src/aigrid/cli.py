"""The `aigrid` command: thin over the factories in each package."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import sys
from collections.abc import Callable, Coroutine, Iterator, Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import quote

import httpx
import typer
import typer.main
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from aigrid.cli_error import input_kind, print_error
from aigrid.errors import AigridError, ConfigError, SpecError

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from aigrid.gateway.app import Gateway
    from aigrid.gateway.server import ExtraRoutes
    from aigrid.spec.models import GridSpec

Mount = Callable[[typer.Typer], None]


def _command(module: str, function: str, name: str) -> Mount:
    return lambda t: t.command(name)(getattr(importlib.import_module(module), function))


def _typer(module: str, name: str | None = None) -> Mount:
    return lambda t: t.add_typer(importlib.import_module(module).app, name=name)


class _Lazy(MutableMapping[str, Any]):
    """A group's commands, some of them (`Mount`s) built on first use: `aigrid gateway` (and each of its
    workers, `aigrid worker`) never imports the planner, the simulator or the load generator (matplotlib,
    scipy: about 35 MB of a worker's memory, docs/benchmarks.md "Memory per worker"). Iterating (`--help`) builds them all."""

    def __init__(self, commands: Mapping[str, Any]) -> None:
        self._items: dict[str, Any] = dict(commands)

    def __getitem__(self, name: str) -> Any:
        item = self._items[name]
        if isinstance(item, tuple):  # (name, mount): built as typer would have built it at import
            holder = typer.Typer()
            item[1](holder)
            item = self._items[name] = typer.main.get_group(holder).commands[item[0]]
        return item

    def __setitem__(self, name: str, command: Any) -> None:
        self._items[name] = command

    def __delitem__(self, name: str) -> None:
        del self._items[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


def _summary(help_text: str) -> str:
    """A command's first paragraph as one line: typer's rich help keeps a docstring's line breaks in the
    commands table, so `aigrid --help` broke `bench`'s summary mid-sentence where its source wraps."""
    return " ".join(inspect.cleandoc(help_text).split("\n\n")[0].split())


OTHER_NAMES = {
    **dict.fromkeys(("serve", "start", "run"), "`aigrid up SPEC` starts a spec's embedded engines and its gateway; "
                    "`aigrid gateway SPEC` a gateway in front of engines running elsewhere"),
    **dict.fromkeys(("check", "validate", "lint"), "`aigrid spec check FILE` checks a grid spec, a scenario or a "
                    "demand file"),
    "verify": "`aigrid audit verify DB` checks the audit log",
    "simulate": "`aigrid sim SCENARIO` runs the simulator",
}
"""What an operator used to vLLM (`vllm serve`), kubectl or other tools may type for a command aigrid names otherwise,
and what to type instead: `aigrid serve` said only "No such command 'serve'."."""


def _lazy_group(first: Mapping[str, Mount], last: Mapping[str, Mount] | None = None,
                other_names: Mapping[str, str] | None = None) -> type[TyperGroup]:
    """A typer group class with the commands `first` before its own and `last` after them (the order in
    --help), each imported when it is run or listed; `other_names`: a command name it lacks -> what to type."""
    class LazyGroup(TyperGroup):
        def resolve_command(self, ctx: Any, args: list[str]) -> Any:
            hint = (other_names or {}).get(args[0]) if args else None
            if hint and args[0] not in self.commands:  # ctx.fail: the usage error of whichever click typer runs on
                ctx.fail(f"No such command {args[0]!r}: {hint}.")
            return super().resolve_command(ctx, args)

        def __init__(self, **attrs: Any) -> None:
            super().__init__(**attrs)
            self.commands = _Lazy({**{n: (n, m) for n, m in first.items()}, **self.commands,
                                   **{n: (n, m) for n, m in (last or {}).items()}})

        def get_command(self, ctx: Any, cmd_name: str) -> Any:
            command = super().get_command(ctx, cmd_name)
            if command is not None and command.short_help is None and command.help:
                command.short_help = _summary(command.help)
            return command

    return LazyGroup


def _flags_show_no_type() -> None:
    """typer 0.29's help prints each parameter's type in a column of its own, a flag's too: `--help <bool>`,
    `--json <bool>`, `--no-plots <bool>`, as if each took a value (`--json true`, which is refused). A flag
    shows none now, in every command's --help (the options of those whose modules own them, and --help's
    own); a parameter given once per value (`--tenant a --tenant b`, `bench URL...`) shows the type of one,
    `<str>`, not `<list[str]>` (or `<list[Path]>` beside a single one's `<path>`), its help saying it
    repeats. typer before 0.29 has no such column (nothing to change)."""
    from typer.core import TyperArgument, TyperOption

    for kind in (TyperOption, TyperArgument):
        shown = getattr(kind, "display_type_rich", None)
        if shown is None or getattr(shown, "aigrid_flags", False):
            continue

        def display_type_rich(self: Any, ctx: Any, shown: Callable[[Any, Any], str | None] = shown) -> str | None:
            if getattr(self, "is_flag", False):
                return None
            label = shown(self, ctx)
            if isinstance(label, str) and label.startswith("<list[") and label.endswith("]>"):
                return f"<{label[6:-2].lower()}>"
            return label

        display_type_rich.aigrid_flags = True  # type: ignore[attr-defined]
        kind.display_type_rich = display_type_rich  # type: ignore[method-assign]


_flags_show_no_type()

# Commands whose modules own their options: the simulator, the planner, the load generator, the engine emulator,
# the quality estimate, the audit log's queries
app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="aigrid: an inference grid behind one OpenAI-compatible endpoint.",
                  cls=_lazy_group({"bench": _command("aigrid.bench.cli", "bench_command", "bench"),
                                   "emulator": _command("aigrid.engines.emulator_cli", "emulator_command", "emulator"),
                                   "plan": _command("aigrid.plan.cli", "plan_command", "plan")},
                                  {"sim": _typer("aigrid.sim.cli"), "models": _typer("aigrid.rightsize.cli", "models")},
                                  OTHER_NAMES))
spec_app = typer.Typer(no_args_is_help=True, help="Grid specs.")
app.add_typer(spec_app, name="spec")
keys_app = typer.Typer(no_args_is_help=True, help="API keys (stored hashed; needs the key-hashing secret: "
                       "AIGRID_KEY_SECRET, or the variable --secret-env names).")
app.add_typer(keys_app, name="keys")
audit_app = typer.Typer(no_args_is_help=True, help="The tamper-evident audit log.",
                        cls=_lazy_group({"query": _command("aigrid.audit.query_cli", "query_command", "query"),
                                         "summary": _command("aigrid.audit.query_cli", "summary_command", "summary")}))
app.add_typer(audit_app, name="audit")
console = Console()
err_console = Console(stderr=True)

DEFAULT_GATEWAY = "http://127.0.0.1:8080"
SpecArg = Annotated[Path, typer.Argument(help="grid spec (YAML)")]


def _dashboard(replay_dir: Path | None) -> ExtraRoutes:
    """The dashboard beside the API; it honours the gateway's authentication when enforcement is on."""
    from aigrid.dashboard import dashboard_routes

    def routes(gw: Gateway, stopping: Callable[[], bool]) -> Sequence[BaseRoute]:
        return dashboard_routes(gw, operators=True, stopping=stopping, replay_dir=replay_dir)

    return routes


def _run(main: Coroutine[Any, Any, None]) -> None:
    """Run a server coroutine on uvloop (uvicorn only picks its loop when it owns the process)."""
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


def _as_grid(e: AigridError, spec: Path | None) -> AigridError:
    """`PATH is a simulator scenario (for `aigrid sim`), not a grid spec` where the spec that failed to load is plainly
    another kind of input (cli_error.wrong_kind, as `aigrid sim` and `aigrid plan` say of a grid spec): `aigrid up`
    of a scenario listed a dozen fields it should not have. Only a regular file is read again (a pipe is read once)."""
    from aigrid.cli_error import wrong_kind
    from aigrid.errors import SpecError

    if spec is None or not isinstance(e, SpecError) or e.path != str(spec):
        return e
    if not spec.exists() or spec.is_dir():  # not read: `nope.yaml: cannot read file: ...` on one line, as `spec
        # check`, `sim` and `plan` say it, not `invalid grid spec nope.yaml:` and a list of one (review RV5)
        return ConfigError("\n".join(f"{e.path}: {p}" for p in e.problems))
    if not spec.is_file():
        return e
    other = wrong_kind(spec, "grid")
    return e if other is None else ConfigError(other)


def _fail(e: AigridError | httpx.HTTPError | OSError, code: int = 2) -> typer.Exit:
    print_error(err_console, e)
    return typer.Exit(code)


ReplayOpt = Annotated[Path | None, typer.Option(help="a simulator run (aigrid sim --out DIR) for the dashboard to "
                                                   "replay at /dashboard?replay=1")]


LogLevelOpt = Annotated[Literal["debug", "info", "warning", "error"] | None, typer.Option(
    help="JSON log level on stderr: debug, info (one access line per request), warning, error "
         "(default: the spec's gateway.log_level)")]


def _with_log_level(spec: GridSpec, level: str | None) -> GridSpec:
    if level is None:
        return spec
    return spec.model_copy(update={"gateway": spec.gateway.model_copy(update={"log_level": level})})


WorkersOpt = Annotated[int | None, typer.Option(
    min=1, help="gateway processes sharing the listening socket (default: the cores available to this process)")]


def _workers(workers: int | None) -> int:
    from aigrid.cores import available_cores

    if workers is not None and workers < 1:
        raise typer.BadParameter("must be at least 1", param_hint="--workers")
    return workers or available_cores()


def _worker_options(replay: Path | None) -> dict[str, Any]:
    return {"dashboard": True, "replay": None if replay is None else str(replay)}


def _replay(replay: Path | None) -> Path | None:
    """A simulator run's folder, refused before the gateway starts when it holds no requests.csv to play (a
    typo started the gateway, and the page then said only that the folder had no requests.csv)."""
    if replay is not None and not (replay / "requests.csv").is_file():
        what = "holds no requests.csv" if replay.is_dir() else "is not a folder"
        raise typer.BadParameter(f"{replay} {what}: give the --out folder of `aigrid sim SCENARIO --out DIR` "
                                 "(with requests.csv)", param_hint="--replay")
    return replay


DEMO_SPEC = Path("examples/demo.yaml")
"""`aigrid up`'s spec when none is named: the demo's, relative to where it runs (the repository's root, as `make run`)."""


def _default_spec_here(spec: Path) -> None:
    """`aigrid up` with no spec, run outside the repository's root, said `invalid grid spec examples/demo.yaml: cannot
    read file: No such file or directory`, as if the demo's spec were broken: it says what to do instead."""
    if spec == DEMO_SPEC and not spec.exists():
        raise ConfigError(f"no spec named, and the default, {DEMO_SPEC} (the demo grid), is not under {Path.cwd()}: "
                          "start the demo from the repository's root (`make run`), or name a spec: "
                          "`aigrid up SPEC.yaml`")


@app.command()
def up(spec: SpecArg = DEMO_SPEC,
       port: Annotated[int | None, typer.Option(min=1, max=65535, help="gateway port (default: the spec's)")] = None,
       replay: ReplayOpt = None, log_level: LogLevelOpt = None, workers: WorkersOpt = None) -> None:
    """Start every embedded engine of the spec and the gateway, in the foreground. Ctrl-C stops all."""
    from aigrid.gateway.server import run_grid
    from aigrid.spec.load import load_spec

    replay = _replay(replay)
    try:
        _default_spec_here(spec)
        _run(run_grid(_with_log_level(load_spec(spec), log_level), console, port=port,
                      extra_routes=_dashboard(replay), workers=_workers(workers),
                      worker_options=_worker_options(replay), source=str(spec)))
    except AigridError as e:
        raise _fail(_as_grid(e, spec)) from None
    except KeyboardInterrupt:
        console.print("stopped")


@app.command()
def gateway(spec: SpecArg,
            port: Annotated[int | None, typer.Option(min=1, max=65535, help="gateway port (default: the spec's)")] = None,
            redis: Annotated[str | None, typer.Option(help="redis://host:port/db shared with other gateways")] = None,
            replay: ReplayOpt = None, log_level: LogLevelOpt = None, workers: WorkersOpt = None) -> None:
    """Run only a gateway, in front of engines that run elsewhere (every endpoint needs a url)."""
    from aigrid.gateway.server import run_grid
    from aigrid.spec.load import load_spec
    from aigrid.spec.models import redis_url

    try:
        redis_url(redis)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--redis") from None
    replay = _replay(replay)
    try:
        s = _with_log_level(load_spec(spec), log_level)
        if redis is not None:
            s = s.model_copy(update={"gateway": s.gateway.model_copy(update={"shared_state_url": redis})})
        _run(run_grid(s, console, port=port, start_engines=False, extra_routes=_dashboard(replay),
                      workers=_workers(workers), worker_options=_worker_options(replay), source=str(spec)))
    except AigridError as e:
        raise _fail(_as_grid(e, spec)) from None
    except KeyboardInterrupt:
        console.print("stopped")


@app.command(hidden=True)
def worker(config: Annotated[Path, typer.Argument(help="the worker configuration its parent wrote")],
           index: Annotated[int, typer.Option(help="this worker's number")] = 0) -> None:
    """One gateway worker process (started by `aigrid up|gateway --workers N`, not by hand)."""
    import orjson

    from aigrid.gateway.workers import serve_worker
    from aigrid.logs import configure as configure_logs
    from aigrid.spec.models import GatewaySpec

    options = orjson.loads(config.read_bytes())
    # worker.json holds only what the spec set: a spec that sets no level has the spec's default (info), as a
    # gateway without workers has
    gateway_spec = options["spec"].get("gateway") or {}
    logs = configure_logs(gateway_spec.get("log_level", GatewaySpec.model_fields["log_level"].default),
                          process={"worker": index})
    replay = Path(options["replay"]) if options.get("replay") else None
    try:
        _run(serve_worker(config, index, _dashboard(replay) if options.get("dashboard") else None))
    except KeyboardInterrupt:
        pass
    finally:
        logs.stop()


NODE_CONTEXT = 8192
"""`aigrid node --context`'s default: a spec model's `context` default (spec.models.ModelSpec), so that a node and a
spec that both leave it out agree (before, a node held 2048 tokens a slot, whatever the spec declared)."""


def _node_context(context: int) -> int:
    """`aigrid node --context` within what a spec may declare for the model (spec.models.MAX_CONTEXT, imported here:
    the `aigrid` command imports no spec module until a command needs it): a context typed with a zero too many
    is refused naming the flag, before llama-server allocates its KV cache for it (22.5 KiB a token a slot)."""
    from aigrid.spec.models import MAX_CONTEXT

    if context > MAX_CONTEXT:
        raise typer.BadParameter(f"Input should be less than or equal to {MAX_CONTEXT} (the largest `context` a "
                                 "spec may declare for a model)", param_hint="'--context'")
    return context


@app.command()
def node(port: Annotated[int, typer.Option(min=1, max=65535, help="port for the engine's OpenAI API")] = 8100,
         host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
         slots: Annotated[int, typer.Option(min=1, help="concurrent batch slots (-np)")] = 2,
         threads: Annotated[int, typer.Option(min=1, help="CPU threads")] = 1,
         alias: Annotated[str, typer.Option(help="model name the engine answers to")] = "smollm2-135m",
         context: Annotated[int, typer.Option(min=1, callback=_node_context, help=(
             "tokens each slot holds (--ctx-size is this x the slots): the gateway's spec declares the same as "
             "the model's context, whose default is this one"))] = NODE_CONTEXT,
         api_key_env: Annotated[str | None, typer.Option(
             help="environment variable holding the key the engine requires of every request but /health "
                  "(the gateway's endpoint names the same variable in api_key_env)")] = None) -> None:
    """Run one embedded engine (llama.cpp + SmolLM2-135M) as a site node, in the foreground."""
    from aigrid.engines.llama_server import kv_cache_bytes
    from aigrid.gateway.server import kv_cache_over, run_node
    from aigrid.memory import available_memory

    # the KV cache the engine allocates at start, before it is started: `aigrid up`'s check (kv_cache_over)
    over = kv_cache_over(kv_cache_bytes(context, slots), available_memory)
    if over is not None:
        raise typer.BadParameter(f"{context:,} tokens x {slots} slots: {over}. Lower --context (or --slots)",
                                 param_hint="'--context'")
    try:
        _run(run_node(console, host=host, port=port, slots=slots, threads=threads, alias=alias, context=context,
                      api_key_env=api_key_env))
    except AigridError as e:
        raise _fail(e) from None
    except KeyboardInterrupt:
        console.print("stopped")


@spec_app.command("check")
def spec_check(spec: SpecArg) -> None:
    """Validate a grid spec and summarise it (a simulator scenario or a planner demand file too: it says which)."""
    from aigrid.spec.load import parse_spec, read_yaml

    try:  # read once: a spec given as a pipe (`<(...)`) reads as empty the second time, a FIFO waits for a writer
        raw = read_yaml(spec)
    except SpecError as e:  # a file not read is not yet any kind: `nope.yaml: cannot read file: No such file ...`
        # on one line, as `aigrid sim` and `aigrid plan` say it (it was `invalid grid spec nope.yaml:` and a list)
        raise _fail(ConfigError("\n".join(f"{e.path}: {p}" for p in e.problems))) from None
    except AigridError as e:
        raise _fail(e) from None
    try:
        s = parse_spec(raw, str(spec))
    except AigridError as e:
        if not _other_input(spec, raw):
            raise _fail(e) from None
        return
    missing = _missing_files(s, spec.parent)
    if missing:
        raise _fail(SpecError(str(spec), missing))
    _bases_given_with_v1(s, raw)
    counts = ", ".join(_count(n, what) for n, what in (
        (len(s.sites), "site"), (len(s.endpoints), "endpoint"), (len(s.models), "model"), (len(s.tenants), "tenant")))
    # the path escaped (a `[x]` in it was read as markup) and the line unwrapped (piped, it was cut at 80 columns)
    console.print(f"[green]ok[/] {escape(str(spec))}: {counts}", soft_wrap=True)
    _embedded_kv_cache(s)


def _missing_files(s: GridSpec, folder: Path) -> list[str]:
    """The files the spec names (relative to its folder) that are not there, each by its field: a site's documents
    (a glob matching nothing), an endpoint's tls_ca_file, an agents.sql database. `spec check` said ok of each and
    `aigrid up` / `aigrid gateway` refused to start seconds later; their contents are read there, not here."""
    import glob

    from aigrid.spec.load import relative_to

    s = relative_to(s, folder)
    problems = [f"sites.{sid}.documents[{i}].path: {'no file matches' if glob.has_magic(d.path) else 'no such file'} "
                f"{d.path}" for sid, site in s.sites.items() for i, d in enumerate(site.documents)
                if not glob.glob(d.path)]
    problems += [f"endpoints[{i}].tls_ca_file: no such file {e.tls_ca_file}" for i, e in enumerate(s.endpoints)
                 if e.tls_ca_file and not Path(e.tls_ca_file).exists()]
    problems += [f"agents.sql.{name}.path: no such file {db.path}" for name, db in s.agents.sql.items()
                 if not Path(db.path).exists()]
    return [f"{p} (aigrid up and aigrid gateway refuse to start without it)" for p in problems]


def _embedded_kv_cache(s: GridSpec) -> None:
    """One info line when the spec starts embedded engines: the KV cache they allocate at start together (each slot
    holds its model's context: docs/engines.md), what a context typed with a zero too many costs before it costs it."""
    from aigrid.engines.llama_server import KV_BYTES_PER_TOKEN, embedded_kv_cache

    cache = embedded_kv_cache(s)
    if cache:
        mib = sum(cache.values()) / 2**20
        verb = "allocates" if len(cache) == 1 else "allocate"
        console.print(f"[cyan]info[/] the {_count(len(cache), 'embedded engine')} {verb} about {mib:,.0f} MiB of KV "
                      f"cache at start (each slot holds its model's context, at {KV_BYTES_PER_TOKEN / 1024:g} KiB a token "
                      "of SmolLM2-135M, the model every embedded engine runs; each engine's model and buffers take "
                      "about 130 MiB more)", soft_wrap=True, highlight=False)


def _bases_given_with_v1(s: GridSpec, raw: object) -> None:
    """One info line per endpoint whose url the spec's reading changed (a trailing /v1 taken off:
    spec.models.engine_base_url), naming it and the URL the gateway calls: it was done without a word."""
    from aigrid.spec.models import url_without_password

    given = raw.get("endpoints") if isinstance(raw, dict) else None
    for i, (e, r) in enumerate(zip(s.endpoints, given if isinstance(given, list) else (), strict=False)):
        url = r.get("url") if isinstance(r, dict) else None
        if e.url and isinstance(url, str) and url != e.url:
            base = url_without_password(e.url)  # a proxy's user:password@ is not printed (as the spec's errors quote it)
            console.print(f"[cyan]info[/] endpoints.{i} ({escape(e.id)}): url {escape(repr(url_without_password(url)))} "
                          f"is the base {escape(base)} (the /v1 taken off): the gateway calls "
                          f"{escape(base.rstrip('/'))}/v1/chat/completions", soft_wrap=True, highlight=False)


def _count(n: int, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what[:-1]}ies" if what.endswith("y") else f"{n} {what}s"


def _other_input(path: Path, raw: object) -> bool:
    """Check `path` as what it is when it is no grid spec (no `endpoints`) but has a field only a simulator
    scenario or a planner demand file has (cli_error.input_kind); False when it is neither (the grid spec's
    errors stand)."""
    kind = input_kind(raw)
    load: Callable[[Path], object]
    if kind == "demand":
        from aigrid.plan.demand import load_demand

        what, command, load, parts = "a planner demand file", "plan", load_demand, ("tenants", "models")
    elif kind == "scenario":
        from aigrid.sim.scenario import load_scenario

        what, command, load, parts = "a simulator scenario", "sim", load_scenario, ("tenants", "policies")
    else:
        return False
    try:
        loaded = load(path)
        _places_and_references(loaded, str(path))
    except AigridError as e:
        raise _fail(e) from None
    counts = ", ".join(_count(len(getattr(loaded, p)), p[:-3] + "y" if p.endswith("ies") else p[:-1]) for p in parts)
    console.print(f"[green]ok[/] {escape(str(path))}: {what}, not a grid spec ({counts}): "
                  f"`aigrid {command} {escape(str(path))}`", soft_wrap=True)
    return True


def _places_and_references(loaded: object, source: str) -> None:
    """What `aigrid sim` and `aigrid plan` refuse in their setup, before any run, and a file's own validation cannot
    see without GeoNames or the built grid: a site's or a candidate's city not in GeoNames, a tenant allowed only
    jurisdictions no site is in, a fault naming no site, a tenant whose continents hold no city. `spec check`
    said `ok` to each (`Tokio`, `[EUR]`) and the run refused it seconds later; the same checks run here."""
    from aigrid.plan.demand import Demand
    from aigrid.sim.geography import load_cities
    from aigrid.sim.scenario import Scenario

    if isinstance(loaded, Demand):
        from aigrid.plan.supply import candidate_sites

        candidate_sites(loaded, load_cities(), source)
    elif isinstance(loaded, Scenario):
        from aigrid.sim.experiment import build_grids
        from aigrid.sim.scenario import ScenarioError, ScenarioProblem
        from aigrid.sim.workload import users_of

        cities = load_cities()
        try:
            build_grids(loaded, cities)
            for tenant in loaded.tenants:
                users_of(tenant, cities)
        except ScenarioProblem as e:
            raise ScenarioError(source, [str(e)]) from None


@app.command()
def explain(decision_id: Annotated[str, typer.Argument(help="the id an answer's x-aigrid-decision header gives (dec-...)")],
            gateway: Annotated[str, typer.Option(help="gateway base URL")] = DEFAULT_GATEWAY,
            api_key: Annotated[str | None, typer.Option(envvar="AIGRID_API_KEY",
                                                        help="key, when the gateway enforces keys")] = None,
            as_json: Annotated[bool, typer.Option("--json", help="print the decision as the gateway serves it "
                                                                 "(JSON), for scripts")] = False) -> None:
    """Print why a request went where it went: every candidate's scores, every rejection."""
    from aigrid.explain import render_decision

    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    # the OpenAI base URL (.../v1, as the banner prints it) asked /v1/v1/decisions: a 404
    gateway = gateway.rstrip("/").removesuffix("/v1")
    # `--gateway 127.0.0.1:8081` (host and port, as `aigrid up --port` and ss print them) was "missing an 'http://'
    # or 'https://' protocol": the gateway is plain HTTP on 127.0.0.1 unless said otherwise
    if "://" not in gateway:
        gateway = f"http://{gateway}"
    # an id cut from `curl -D -` keeps the header's CR; one with / or .. asked another route (quoted: it cannot)
    decision_id = decision_id.strip()
    # the whole line of `curl -D - ... | grep x-aigrid` pasted (quoted): the header's name taken off
    name, colon, value = decision_id.partition(":")
    if colon and name.strip().lower() in ID_HEADERS:
        decision_id = value.strip()
    if "/" in decision_id:  # quoted as %2F, the gateway's router decodes it all the same: "../../etc" asked /etc,
        # whose 404 read "http://127.0.0.1:8080 is no aigrid gateway" of the gateway itself
        print_error(err_console, f"{decision_id!r} is not a decision id: give the x-aigrid-decision header's value "
                                 "(dec-...)")
        raise typer.Exit(1)
    try:
        r = httpx.get(f"{gateway}/v1/decisions/{quote(decision_id, safe='')}", headers=headers, timeout=5,
                      trust_env=False)
    except (httpx.HTTPError, httpx.InvalidURL) as e:
        # the hint only where no connection was made: a gateway too slow to answer runs, a URL mistyped is the URL
        hint = (" (is it running? `make run` starts the demo's at http://127.0.0.1:8080; --gateway URL names "
                "another)") if isinstance(e, httpx.ConnectError) else ""
        raise _fail(ConfigError(f"cannot reach the gateway at {gateway}: {e}{hint}")) from None
    try:
        body = r.json()
    except ValueError:  # not an aigrid gateway (an HTML error page, another server)
        body = None
    if r.status_code != 200 or not isinstance(body, dict) or "candidates" not in body:
        error = body.get("error") if isinstance(body, dict) else None  # another server's error: any JSON
        message = error.get("message") if isinstance(error, dict) else None
        message = message if isinstance(message, str) else None
        message = message or f"{gateway} answered HTTP {r.status_code}, not a decision (is it an aigrid gateway?)"
        if r.status_code == 401:  # the gateway's own words ("send 'Authorization: Bearer <key>'") are a client's
            message += ("; aigrid explain sends the key given with --api-key KEY or in AIGRID_API_KEY" if not api_key
                        else "; the key given to aigrid explain (--api-key or AIGRID_API_KEY) was refused")
        if r.status_code == 404 and isinstance(error, dict) and isinstance(error.get("message"), str) \
                and error.get("param") != "decision_id":
            # another OpenAI-style server's own 404 (an engine, the emulator, a proxy): "no route /v1/decisions/..."
            message += f" ({gateway} is no aigrid gateway: --gateway URL names the gateway, as `aigrid up` prints it)"
        elif r.status_code == 404 and not decision_id.startswith("dec-"):
            # x-request-id is a req- id when the gateway answered without routing (refused before it decided)
            message += (f"; {decision_id} is not a decision id (they start with dec-): a request refused before "
                        f"routing has none; read its audit record with `aigrid audit query --request-id "
                        f"{decision_id}`")
        print_error(err_console, message)
        raise typer.Exit(1)
    if as_json:
        sys.stdout.write(json.dumps(body, indent=2) + "\n")
        return
    # the candidates' table is ~180 columns wide: piped to a file or a pager it is not cut to 80 columns
    out = console if console.is_terminal else Console(width=max(console.width, EXPLAIN_WIDTH))
    out.print(render_decision(body))


EXPLAIN_WIDTH = 200
ID_HEADERS = ("x-aigrid-decision", "x-request-id", "request-id")
"""The answer's headers whose value `aigrid explain` takes, pasted with the header's name."""
KeysFile = Annotated[Path, typer.Option(help="key file (the spec's security.keys_file)")]
SecretEnv = Annotated[str, typer.Option(help="environment variable holding the key-hashing secret (the spec's "
                                        "security.secret_env)")]
UnreadSecretEnv = Annotated[str, typer.Option(hidden=True, help="not needed: list and revoke read no secret "
                                              "(accepted for the scripts that give it)")]
SECRET_ENV = "AIGRID_KEY_SECRET"
"""`aigrid keys`' default --secret-env: security.keys_cli.SECRET_ENV, written here too since cli.py imports that
module only when a keys command runs."""


@keys_app.command("create")
def keys_create(tenant: Annotated[str, typer.Argument(help="tenant the key belongs to")],
                keys_file: KeysFile = Path(".aigrid/keys.json"),
                model: Annotated[list[str] | None, typer.Option(help="allowed model pattern (repeat)")] = None,
                jurisdiction: Annotated[list[str] | None, typer.Option(help="allowed jurisdiction (repeat)")] = None,
                site: Annotated[list[str] | None, typer.Option(help="allowed site (repeat)")] = None,
                policy: Annotated[str | None, typer.Option(help="bind the key to a routing policy")] = None,
                max_priority: Annotated[str | None, typer.Option(
                    help="highest urgency its requests may ask for: interactive, standard, batch or 0-9")] = None,
                name: Annotated[str, typer.Option(help="a label for the key")] = "",
                secret_env: SecretEnv = SECRET_ENV,
                spec: Annotated[Path | None, typer.Option(
                    help="grid spec whose tenants the key's must be one of (without it: not checked, a warning)")
                ] = None) -> None:
    """Issue an API key; the secret is printed once, only its digest is stored."""
    from aigrid.security.keys_cli import check_scopes, check_tenant, create_key, server_secret
    from aigrid.security.principal import DEFAULT_TENANT

    try:
        secret = server_secret(name=secret_env)  # before the tenant's warning: one clear error without a secret
        if spec is not None:
            from aigrid.spec.load import load_spec

            grid = load_spec(spec)
            check_tenant(tenant, grid.tenants, str(spec))
            check_scopes(grid, str(spec), tenant, models=model or (), jurisdictions=jurisdiction or (), sites=site or (),
                         policy=policy)
        elif tenant != DEFAULT_TENANT:  # every grid has it: nothing to check (it was warned of, as if unknown)
            err_console.print(f"warning: tenant {tenant!r} not checked against a grid spec's tenants (give --spec "
                              "FILE): a key of a tenant the grid lacks is refused (401) on every request",
                              markup=False, highlight=False, soft_wrap=True)  # one line: it was cut at 80 columns
        keys_file.parent.mkdir(parents=True, exist_ok=True)
        create_key(keys_file, tenant, models=model or (), jurisdictions=jurisdiction or (), sites=site or (),
                   policy=policy, max_priority=max_priority, name=name, secret=secret, secret_env=secret_env,
                   echo=console.print)
    except AigridError as e:
        raise _fail(_as_grid(e, spec)) from None
    except OSError as e:
        raise _fail(_keys_file_error(keys_file, e, "write")) from None


def _keys_file_error(keys_file: Path, e: OSError, doing: str) -> ConfigError:
    """An OSError on the key file as one line naming the flag and the path it failed on (it said only
    `[Errno 21] Is a directory: 'keys'`, or named the folder it could not create, without the flag)."""
    if isinstance(e, FileExistsError | NotADirectoryError) and e.filename:  # a file where a folder must be
        return ConfigError(f"--keys-file {keys_file}: cannot {doing} it: a file stands where its folder "
                           f"{keys_file.parent} must be")
    where = f" ({e.filename})" if e.filename and str(e.filename) != str(keys_file) else ""
    return ConfigError(f"--keys-file {keys_file}: cannot {doing} it{where}: {e.strerror or e}")


@keys_app.command("list")
def keys_list(keys_file: KeysFile = Path(".aigrid/keys.json"), secret_env: UnreadSecretEnv = SECRET_ENV) -> None:
    """List keys (ids, tenants, scopes; never secrets). Reads no secret."""
    from aigrid.security.keys_cli import list_keys

    try:
        list_keys(keys_file, echo=console.print)
    except AigridError as e:
        raise _fail(e) from None
    except OSError as e:
        raise _fail(_keys_file_error(keys_file, e, "read")) from None
    except ValueError as e:  # not JSON, or not the key file's shape
        raise _fail(ConfigError(f"{keys_file} is not a key file ({e})")) from None


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="the key's id, as `aigrid keys list` shows it")],
                keys_file: KeysFile = Path(".aigrid/keys.json"),
                secret_env: UnreadSecretEnv = SECRET_ENV) -> None:
    """Revoke a key by id. Reads no secret."""
    from aigrid.security.keys_cli import revoke_key

    try:
        if not revoke_key(keys_file, key_id, echo=lambda line: console.print(line, markup=False, highlight=False)):
            print_error(err_console, f"no key {key_id}")
            raise typer.Exit(1)
    except AigridError as e:
        raise _fail(e) from None
    except OSError as e:
        raise _fail(_keys_file_error(keys_file, e, "change")) from None


@audit_app.command("verify")
def audit_verify(db: Annotated[Path, typer.Argument(help="audit database (security.audit.path)")] = Path(
                     ".aigrid/audit.db"),
                 public_key: Annotated[list[Path] | None, typer.Option(
                     help="Ed25519 public key (PEM); repeat it for each key that signed this log (a rotation) "
                          "(default: .aigrid/audit-signing.pub.pem)")] = None,
                 anchor: Annotated[str | None, typer.Option(
                     help="SEQ:HASH printed by an earlier verify and kept elsewhere: the log must still hold it "
                          "(finds an older copy of the log and its head put back, or another log)")] = None) -> None:
    """Prove the log intact, or name the first record that was changed, deleted or reordered."""
    from aigrid.audit.cli import verify_command

    keys = public_key or [Path(".aigrid/audit-signing.pub.pem")]
    raise typer.Exit(verify_command(db, keys, echo=typer.echo, anchor=anchor, err=_to_stderr))


@audit_app.command("keygen")
def audit_keygen(private_key: Annotated[Path, typer.Option(help="where to write the signing key (keep secret; "
                                                         "the spec's security.audit.signing_key)")] = Path(
                     ".aigrid/audit-signing.pem"),
                 public_key: Annotated[Path, typer.Option(help="where to write the public key (for auditors: "
                                                        "aigrid audit verify --public-key)")] = Path(
                     ".aigrid/audit-signing.pub.pem")) -> None:
    """Create the Ed25519 key pair that signs audit checkpoints."""
    from aigrid.audit.cli import keygen_command

    raise typer.Exit(keygen_command(private_key, public_key, echo=typer.echo, err=_to_stderr))


def _to_stderr(line: str) -> None:
    """An `error:` line of `aigrid audit verify` or `keygen`, on stderr as every command's."""
    typer.echo(line, err=True)


def main() -> None:
    try:
        app()
    except BrokenPipeError:
        sys.exit(1)


if __name__ == "__main__":
    main()
