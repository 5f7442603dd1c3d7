"""Grid specs: the demo loads; every bad spec gets one error naming the file and each bad field."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from aigrid.errors import AigridError, SpecError
from aigrid.spec.load import MAX_SPEC_BYTES, _SpecLoader, cities, endpoints, load_spec, parse_spec, policies
from aigrid.spec.models import MAX_CONTEXT

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo.yaml"


def demo_raw() -> dict:
    return yaml.safe_load(DEMO.read_text())


def test_demo_spec_has_the_four_required_sites() -> None:
    spec = load_spec(DEMO)
    assert {sid: s.jurisdiction for sid, s in spec.sites.items()} == {"fra": "EU", "iad": "US", "nrt": "JP", "gru": "BR"}
    assert {e.site for e in spec.endpoints} == set(spec.sites)
    assert endpoints(spec)[0].family == "smollm2"
    assert "tokyo" in cities(spec) and "london" in cities(spec)
    assert {"balanced", "latency-first", "cost-first"} <= set(policies(spec))


@pytest.mark.parametrize(("mutate", "expected"), [
    (lambda r: r["sites"]["fra"].update(lat=123), "sites.fra.lat: Input should be less than or equal to 90"),
    (lambda r: r["endpoints"][0].update(site="atlantis"), "endpoints[0].site: unknown site 'atlantis'"),
    (lambda r: r["endpoints"][1].update(model="gpt-9"), "endpoints[1].model: unknown model 'gpt-9'"),
    (lambda r: r["endpoints"][0].update(engine="vllm"), "engine 'vllm' needs a url"),
    (lambda r: r["endpoints"][0].update(slots=0), "endpoints[0].slots: Input should be greater than or equal to 1"),
    (lambda r: r["endpoints"][0].update(colour="red"), "endpoints[0].colour: Extra inputs are not permitted"),
    # a typo names the field it is nearly, wherever it is (a list's item, a mapping's value, a nested model)
    (lambda r: r["endpoints"][0].update(slot=2), "endpoints[0].slot: Extra inputs are not permitted (did you mean "
     "slots?)"),
    (lambda r: r["sites"]["fra"].update(jurisdicton="EU"), "sites.fra.jurisdicton: Extra inputs are not permitted "
     "(did you mean jurisdiction?)"),
    (lambda r: r.update(endpoint=r.pop("endpoints")), "endpoint: Extra inputs are not permitted (did you mean "
     "endpoints?)"),
    (lambda r: r["gateway"].update(admission={"max_queue": 3}), "gateway.admission.max_queue: Extra inputs are not "
     "permitted (known: max_wait_s, "),
    (lambda r: r["agents"]["graphs"].update(g={"edges": [], "tenant": ["x"]}),
     "agents.graphs.g.tenant: Extra inputs are not permitted (did you mean tenants?)"),
    # shortest_path's Dijkstra: a negative distance gave a wrong path, or failed every call of the tool
    (lambda r: r["agents"]["graphs"]["rail"][0].__setitem__(2, -465),
     "agents.graphs.rail.edges[0][2]: Input should be greater than or equal to 0"),
    (lambda r: r.update(policies={"x": {"weights": {"speed": 1}}}), "unknown axes speed; the axes are ttft, "),
    (lambda r: r.update(slo={"ttft_ms": 0}), "slo.ttft_ms: Input should be greater than 0"),
    (lambda r: r.update(slo={"tpot_ms": 50}), "slo.ttft_ms: Field required"),
    (lambda r: r["gateway"].update(default_policy="fastest"), "gateway.default_policy: unknown policy 'fastest'"),
    (lambda r: r["tenants"]["default"].update(policy="nope"), "tenants.default.policy: unknown policy 'nope'"),
    (lambda r: r["endpoints"].append(dict(r["endpoints"][0])), "duplicate endpoint id 'fra-smollm2'"),
    (lambda r: r.pop("sites"), "sites: Field required"),
    # a value where a section goes said `Input should be a valid dictionary or instance of SiteSpec`: a class name
    # the file never shows (thirty-eighth session)
    (lambda r: r["sites"].update(fra="Frankfurt"), "sites.fra: Input should be a mapping (got a text)"),
    (lambda r: r["gateway"].update(admission=3), "gateway.admission: Input should be a mapping (got 3)"),
    # a key with no value (its fields mis-indented below it) said only that; YAML's `yes` was `(got True)` (review RV5)
    (lambda r: r["sites"].update(fra=None), "sites.fra: Input should be a mapping (got nothing: the key has no value)"),
    (lambda r: r["gateway"].update(admission=True), "gateway.admission: Input should be a mapping (got the boolean "
     "true)"),
    (lambda r: r["tenants"]["default"].update(priority={"max": "urgent"}),
     "tenants.default.priority.max: 'urgent' is not a priority: use interactive, standard, batch"),
    (lambda r: r["tenants"]["default"].update(priority={"default": 9, "max": "standard"}),
     "tenants.default.priority: default 9 is above max 'standard'"),
    (lambda r: r["tenants"]["default"].update(priority={"weight": 0}),
     "tenants.default.priority.weight: Input should be greater than 0"),
    (lambda r: r["gateway"].update(admission={"max_wait_s": {"batch": 0}}),
     "gateway.admission.max_wait_s: must be > 0 and at most 86400 seconds (a day) for ['batch']"),
    (lambda r: r["gateway"].update(admission={"max_wait_s": {"urgent": 5}}), "gateway.admission.max_wait_s.urgent"),
    (lambda r: r["gateway"].update(admission={"max_wait_slo": {"standard": -1}}),
     "gateway.admission.max_wait_slo: must be > 0 and at most 1000 (a multiple of the TTFT SLO) for ['standard']"),
    (lambda r: r["gateway"].update(admission={"max_wait_slo": {"standard": "soon"}}),
     "gateway.admission.max_wait_slo.standard"),
    (lambda r: r["gateway"].update(admission={"max_wait_slo": 2}),
     "gateway.admission.max_wait_slo: Input should be a valid dictionary"),
    (lambda r: r["gateway"].update(admission={"engine_queue_share": 0}),
     "gateway.admission.engine_queue_share: Input should be greater than 0"),
    (lambda r: r["gateway"].update(admission={"engine_queue_share": 1.5}),
     "gateway.admission.engine_queue_share: Input should be less than or equal to 1"),
    (lambda r: r["gateway"].update(stream_idle_s=0), "gateway.stream_idle_s: Input should be greater than 0"),
    (lambda r: r["gateway"].update(stream_idle_s="5m"), "gateway.stream_idle_s: Input should be a valid number"),
    (lambda r: r["gateway"].update(stream_idle_s=float("inf")), "gateway.stream_idle_s: Input should be a finite"),
    (lambda r: r["gateway"].update(stream_idle_s=172_800),
     "gateway.stream_idle_s: Input should be less than or equal to 86400"),
    (lambda r: r["gateway"].update(stream_max_s=0.5), "gateway.stream_max_s: Input should be greater than or equal to 1"),
    (lambda r: r["gateway"].update(stream_max_s=float("nan")), "gateway.stream_max_s: Input should be a finite"),
    (lambda r: r["gateway"].update(stream_max_s=10**6),
     "gateway.stream_max_s: Input should be less than or equal to 604800"),
])
def test_bad_spec_names_the_field(mutate: object, expected: str) -> None:
    raw = demo_raw()
    mutate(raw)  # type: ignore[operator]
    with pytest.raises(SpecError) as e:
        parse_spec(raw, "grid.yaml")
    assert e.value.path == "grid.yaml"
    assert expected in str(e.value), str(e.value)


@pytest.mark.parametrize(("admission", "standard_s", "batch_s"), [
    ({}, 2.0, 600.0),  # the default: a standard request waits 1x its SLO (here 2 s), at most 30 s
    ({"max_wait_slo": {"standard": 3.0, "batch": 0.5}}, 6.0, 10.0),  # batch's SLO is relaxed 10x
    ({"max_wait_slo": {"batch": 0.5}}, 2.0, 10.0),  # a class left out keeps its default
    ({"max_wait_slo": {"standard": None}}, 30.0, 600.0),  # never shed at the SLO: wait up to 30 s
    ({"max_wait_slo": None, "max_wait_s": {"standard": 45}}, 45.0, 600.0),  # no class sheds at the SLO
])
def test_the_longest_wait_defaults_to_the_slo_and_can_be_turned_off(
        admission: dict[str, object], standard_s: float, batch_s: float) -> None:
    raw = demo_raw()
    raw["gateway"]["admission"] = admission
    spec = parse_spec(raw, "grid.yaml")
    rules = spec.gateway.admission.rules()
    assert rules.expires(5, 0.0, None, 2000.0) == pytest.approx(standard_s)  # 5: standard, a 2 s SLO
    assert rules.expires(0, 0.0, None, 2000.0) == pytest.approx(batch_s)  # 0: batch


def test_the_grid_slo_is_what_every_policy_gates_on_unless_a_policy_sets_its_own() -> None:
    raw = demo_raw()
    assert {n: p.ttft_slo_ms for n, p in policies(parse_spec(raw, "grid.yaml")).items()} == {
        "latency-first": 2000.0, "balanced": 2000.0, "cost-first": 5000.0}  # without one: each policy's own
    raw["slo"] = {"ttft_ms": 800, "tpot_ms": 60}
    raw["policies"] = {"mine": {"weights": {"ttft": 1}, "ttft_slo_ms": 300},  # its own TTFT, the grid's TPOT
                       "theirs": {"weights": {"cost": 1}}}
    got = {n: (p.ttft_slo_ms, p.tpot_slo_ms) for n, p in policies(parse_spec(raw, "grid.yaml")).items()}
    assert got == {"latency-first": (800.0, 60.0), "balanced": (800.0, 60.0), "cost-first": (800.0, 60.0),
                   "mine": (300.0, 60.0), "theirs": (800.0, 60.0)}


def test_the_engine_queue_share_reaches_the_rules() -> None:
    raw = demo_raw()
    assert parse_spec(raw, "grid.yaml").gateway.admission.rules().engine_queue_share == 0.5  # the default
    raw["gateway"]["admission"] = {"engine_queue_share": 1.0}  # the whole SLO may be queued at an engine
    assert parse_spec(raw, "grid.yaml").gateway.admission.rules().engine_queue_share == 1.0


def test_unreadable_and_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read file"):
        load_spec(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("sites: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(bad)
    bad.write_text("- just a list\n")
    with pytest.raises(SpecError, match="top level must be a mapping"):
        load_spec(bad)


@pytest.mark.parametrize(("content", "said"), [("", "the file is empty"), ("# to do\n\n", "the file holds nothing"),
                                              ("---\n", "the file holds nothing")])
def test_an_empty_file_is_said_to_be_empty(tmp_path: Path, content: str, said: str) -> None:
    """An empty spec, scenario or demand file (or one of comments only) was "the top level must be a mapping with
    models, sites and endpoints" / "expected a mapping at the top level", as if it held something else (7 Dec 2026,
    thirty-third session). It is said to be empty, with a shipped example of that input."""
    from aigrid.plan.demand import load_demand
    from aigrid.sim.scenario import load_scenario

    f = tmp_path / "grid.yaml"
    f.write_text(content)
    for load, example in ((load_spec, "examples/demo.yaml"), (load_scenario, "examples/sim/small.yaml"),
                          (load_demand, "examples/plan/small.yaml")):
        with pytest.raises(AigridError, match=re.escape(said)) as e:
            load(f)
        assert str(f) in str(e.value) and f"is a YAML mapping, e.g. {example}" in str(e.value), e.value


def test_yaml_bare_off_means_off() -> None:
    raw = demo_raw()
    raw["security"] = yaml.safe_load("firewall: {injection: off, pii_output: off}")
    assert parse_spec(raw).security.firewall.pii_output == "off"
    assert parse_spec(raw).security.firewall.injection == "off"


def test_a_key_given_twice_in_one_mapping_is_an_error_naming_both_lines(tmp_path: Path) -> None:
    """YAML keeps the last of two equal keys: a second site or tenant of the same name silently replaced the
    first (spec check said ok). A merge key's values may still be overridden."""
    text = DEMO.read_text()
    for twice, key in [(text.replace("sites:\n", "sites:\n  iad: {name: X, lat: 0, lon: 0, jurisdiction: US}\n", 1),
                        "'iad'"),
                       (text.replace("tenants:\n", "tenants:\n  eu-bank: {policy: balanced}\n", 1), "'eu-bank'"),
                       (text + "gateway: {port: 9999}\n", "'gateway'")]:
        path = tmp_path / "twice.yaml"
        path.write_text(twice)
        with pytest.raises(SpecError, match=f"{key} is given twice in one mapping \\(first at line \\d+, column "
                                            "\\d+; again at line \\d+, column \\d+\\)"):
            load_spec(path)
    path = tmp_path / "merged.yaml"
    path.write_text(text.replace("endpoints:\n", "endpoints:\n  - {<<: {site: fra, model: smollm2-135m, slots: 2}, "
                                 "id: fra-extra, slots: 4}\n", 1))
    assert next(e for e in load_spec(path).endpoints if e.id == "fra-extra").slots == 4


@pytest.mark.parametrize(("twice", "key", "first", "again"), [
    ("  - {id: e1, site: a, model: m, engine: vllm, url: 'http://h:1', url: 'http://h:2'}\n", "'url'",
     "line 4, column 47", "line 4, column 66"),
    ("  - {id: e1, site: a, model: m, engine: vllm, url: 'http://h:1'}\n"
     "tenants: {t: {allowed_sites: [a]}, t: {models: [m]}}\n", "'t'", "line 5, column 11", "line 5, column 36"),
])
def test_a_key_given_twice_on_one_line_is_an_error_too(tmp_path: Path, twice: str, key: str, first: str,
                                                        again: str) -> None:
    """The check compared the two keys' lines: a flow mapping with a key twice on one line (`{url: a, url: b}`,
    `{t: {...}, t: {...}}`) passed, and YAML kept the last."""
    path = tmp_path / "twice.yaml"
    path.write_text("models: {m: {family: f, params_b: 1}}\n"
                    "sites: {a: {name: A, lat: 1, lon: 2, jurisdiction: EU}}\n"
                    "endpoints:\n" + twice)
    with pytest.raises(SpecError, match=f"{key} is given twice in one mapping \\(first at {first}; again at {again}\\)"):
        load_spec(path)


def test_a_merge_override_is_not_a_key_given_twice() -> None:
    """A mapping merged into another before its own turn came (`top: {<<: *m}` read before `m: {<<: *b, x: 2}`,
    an anchor that itself merges and overrides) was refused as 'given twice': the merge had already put b's keys
    into m. So was an engine template deriving from another (`faster: {<<: *fast, decode_tps: 80}`)."""
    templates = ("x-templates:\n"
                 "  fast: &fast {slots: 8, decode_tps: 60}\n"
                 "  faster: &faster\n"
                 "    <<: *fast\n"
                 "    decode_tps: 80\n"
                 "endpoints:\n"
                 "  - <<: *faster\n"
                 "    id: e1\n")
    assert yaml.load(templates, Loader=_SpecLoader)["endpoints"] == [{"slots": 8, "decode_tps": 80, "id": "e1"}]
    merge2 = "defaults:\n  sub:\n    base: &b {x: 1}\n    m: &m\n      <<: *b\n      x: 2\ntop:\n  <<: *m\n"
    assert yaml.load(merge2, Loader=_SpecLoader) == yaml.safe_load(merge2)  # read as YAML reads it, not refused


def test_a_file_that_is_not_utf8_too_big_or_too_deep_is_one_line_naming_it(tmp_path: Path) -> None:
    """Each was a traceback (UnicodeDecodeError, RecursionError) or minutes of parsing (a 50 MB file)."""
    path = tmp_path / "grid.yaml"
    path.write_bytes(DEMO.read_bytes().replace(b"Frankfurt", b"Frankf\xfcrt", 1))
    with pytest.raises(SpecError, match=r"line \d+: not UTF-8 text \(byte 0xfc\)"):
        load_spec(path)
    path.write_bytes(DEMO.read_text().encode("utf-16"))
    with pytest.raises(SpecError, match=r"line 1: not UTF-8 text \(byte 0xff\)"):
        load_spec(path)
    path.write_bytes(b"# padding\n" * (MAX_SPEC_BYTES // 10 + 1))
    with pytest.raises(SpecError, match="larger than 8 MiB"):
        load_spec(path)
    path.write_text("a: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(SpecError, match="line 1"):
        load_spec(path)
    path.write_text(DEMO.read_text().replace("  fra:", "\tfra:", 1))
    with pytest.raises(SpecError, match=r"not valid YAML at line \d+, column 1: .*\(a tab: YAML indents with spaces"):
        load_spec(path)
    with pytest.raises(SpecError, match="cannot read file: Is a directory"):
        load_spec(tmp_path)


@pytest.mark.parametrize(("mutate", "expected"), [
    (lambda r: r["tenants"]["eu-bank"].update(allowed_jurisdictions=["XX"]),
     "tenants.eu-bank.allowed_jurisdictions: no site is in XX (jurisdictions: BR, EU, JP, US)"),
    (lambda r: r["tenants"]["eu-bank"].update(allowed_jurisdictions=["eu"]),
     "tenants.eu-bank.allowed_jurisdictions: no site is in jurisdiction 'eu'; sites are in 'EU'"),
    (lambda r: r["tenants"]["eu-bank"].update(allowed_jurisdictions=[]),
     "tenants.eu-bank.allowed_jurisdictions: an empty list allows nothing"),
    (lambda r: r["tenants"]["default"].update(allowed_sites=[]), "tenants.default.allowed_sites: an empty list"),
    (lambda r: r["tenants"]["default"].update(models=[]), "tenants.default.models: an empty list allows nothing"),
    (lambda r: r["tenants"]["default"].update(models=["gpt-9", "llama-*"]),
     "tenants.default.models: ['gpt-9', 'llama-*'] match no model an endpoint serves (served: ['smollm2-135m'])"),
    (lambda r: r["tenants"]["eu-bank"].update(allowed_sites=["iad"]),
     "tenants.eu-bank: no endpoint is within its allowed_jurisdictions ['EU'], allowed_sites ['iad']; every "
     "request of it would be refused"),
    (lambda r: r.update(endpoints=[]), "endpoints: List should have at least 1 item"),
    (lambda r: r.update(models={}), "models: Dictionary should have at least 1 item"),
])
def test_a_tenant_whose_limits_leave_it_no_endpoint_is_refused(mutate: object, expected: str) -> None:
    """Each was accepted by spec check and `up`; then every request of the tenant was refused (or, with no
    endpoint at all, the gateway started with nothing to route to)."""
    raw = demo_raw()
    mutate(raw)  # type: ignore[operator]
    with pytest.raises(SpecError) as e:
        parse_spec(raw, "grid.yaml")
    assert expected in str(e.value), str(e.value)
    assert "(top level)" not in str(e.value)


def test_a_tenant_may_name_a_jurisdiction_or_model_the_grid_lacks_beside_ones_it_has() -> None:
    raw = demo_raw()
    raw["tenants"]["eu-bank"].update(allowed_jurisdictions=["EU", "CH"], models=["smollm2-*", "qwen-*"])
    raw["tenants"]["auto-only"] = {"models": ["auto"]}
    assert parse_spec(raw).tenants["eu-bank"].allowed_jurisdictions == ["EU", "CH"]


def test_a_jurisdiction_given_in_two_cases_is_accepted_when_one_matches() -> None:
    """`allowed_jurisdictions: [EU, eu]` was refused as 'no site is in jurisdiction eu' though EU matches: a
    case-only mismatch is a misspelling only when nothing matches exactly."""
    raw = demo_raw()
    raw["tenants"]["eu-bank"]["allowed_jurisdictions"] = ["EU", "eu"]
    assert parse_spec(raw).tenants["eu-bank"].allowed_jurisdictions == ["EU", "eu"]


@pytest.mark.parametrize("models", [["all-minilm-l6-v2"], ["sentence-transformers/all-MiniLM-L6-v2"],
                                    ["all-minilm-*"], ["gpt-9", "all-MiniLM-L6-v2"]])
def test_a_tenant_limited_to_the_gateways_own_embedding_model_is_accepted(models: list[str]) -> None:
    """Every gateway serves all-minilm-l6-v2 (and its aliases) at /v1/embeddings, no endpoint needed: a tenant
    limited to it (a search indexer) was refused as 'match no model an endpoint serves', and, had that passed,
    as 'no endpoint is within its models'."""
    raw = demo_raw()
    raw["tenants"]["search-indexer"] = {"models": models, "allowed_sites": ["fra"]}
    assert parse_spec(raw).tenants["search-indexer"].models == models


def test_the_embedding_names_spec_check_reads_are_the_embedders() -> None:
    from aigrid.agents.embeddings import MiniLMEmbedder
    from aigrid.spec.builtin_models import EMBEDDING_ALIASES, EMBEDDING_MODEL

    assert (MiniLMEmbedder.model, MiniLMEmbedder.aliases) == (EMBEDDING_MODEL, EMBEDDING_ALIASES)


def test_cross_checks_are_one_line_each_without_a_top_level_prefix() -> None:
    raw = demo_raw()
    raw["endpoints"].append(dict(raw["endpoints"][0]))
    raw["endpoints"][1]["site"] = "atlantis"
    with pytest.raises(SpecError) as e:
        parse_spec(raw, "grid.yaml")
    assert e.value.problems == ["endpoints[1].site: unknown site 'atlantis' (sites: fra, gru, iad, nrt)",
                                "endpoints[4].id: duplicate endpoint id 'fra-smollm2'"]


@pytest.mark.parametrize(("mutate", "expected"), [
    (lambda r: r["endpoints"][0].update(decode_tps=float("inf")), "endpoints[0].decode_tps: Input should be a finite"),
    (lambda r: r["models"]["smollm2-135m"].update(params_b=float("inf")), "params_b: Input should be a finite number"),
    (lambda r: r["cities"].update(Nowhere=[200, 0]),
     "cities.Nowhere: [200, 0] is not [latitude -90..90, longitude -180..180]"),
    (lambda r: r["endpoints"][0].update(id=""), "endpoints[0].id: String should have at least 1 character"),
    (lambda r: r["endpoints"][0].update(served_model=""), "endpoints[0].served_model: String should have at least 1"),
    (lambda r: r["sites"]["fra"].update(name=""), "sites.fra.name: String should have at least 1 character"),
    (lambda r: r["sites"]["fra"].update(jurisdiction=False),
     "sites.fra.jurisdiction: Input should be a valid string (YAML reads a bare yes, no, on, off, true or false as "
     "the boolean false: quote it"),
    (lambda r: r["sites"].update({False: r["sites"].pop("fra")}),  # `no:` (Norway) as a site's id: "sites.0.[key]"
     "sites: a key YAML read as the boolean false (a bare yes, no, on, off, true or false is a boolean in YAML): "
     "quote it, e.g. 'no': for Norway"),
    (lambda r: r["gateway"].update(port="${PORT}"), "gateway.port: Input should be a valid integer, unable to parse "
     "string as an integer (environment variables are not expanded in a grid spec"),
    (lambda r: r["gateway"].update(network="netns", location="Frankfurt") or r["endpoints"][0].update(
        engine="vllm", url="http://127.0.0.1:8000") or r.update(endpoints=r["endpoints"][:1]),
     "gateway.network: netns puts each embedded endpoint's site in a network namespace, and no endpoint is embedded"),
])
def test_values_that_passed_but_could_not_work_are_refused(mutate: object, expected: str) -> None:
    """Each passed spec check: an infinite speed or size, a city off the globe, an empty id or name; a bare NO
    (Norway) said only 'should be a valid string'; netns with no embedded endpoint was a StopIteration
    traceback at `up`."""
    raw = demo_raw()
    mutate(raw)  # type: ignore[operator]
    with pytest.raises(SpecError) as e:
        parse_spec(raw, "grid.yaml")
    assert expected in str(e.value), str(e.value)


@pytest.mark.parametrize(("path", "value", "expected"), [
    ("models.smollm2-135m.params_b", 1e308, "models.smollm2-135m.params_b: Input should be less than or equal to 100000"),
    ("models.smollm2-135m.context", 10**23, "models.smollm2-135m.context: Input should be less than or equal to 10485760"),
    # a typo: 131,072 with two zeros too many (each embedded slot allocates its KV cache for the context at start)
    ("models.smollm2-135m.context", 13_107_200, "models.smollm2-135m.context: Input should be less than or equal to "
     "10485760"),
    ("endpoints.0.prefill_tps", 1e308, "endpoints[0].prefill_tps: Input should be less than or equal to 1000000000"),
    ("endpoints.0.prefill_tps", 1e-308, "endpoints[0].prefill_tps: Input should be greater than or equal to 0.001"),
    ("endpoints.0.decode_tps", 1e-308, "endpoints[0].decode_tps: Input should be greater than or equal to 0.001"),
    ("endpoints.0.price_out_per_mtok", 1e308, "endpoints[0].price_out_per_mtok: Input should be less than or equal"),
    ("sites.fra.power_budget_w", 1e308, "sites.fra.power_budget_w: Input should be less than or equal to 10000000000"),
    ("sites.fra.peak_power_w", 1e308, "sites.fra.peak_power_w: Input should be less than or equal"),
    ("policies", {"p": {"weights": {"ttft": 1e308, "cost": 1e308}}}, "policies.p.weights: weights must be from 0 to 1e+09"),
    ("policies", {"p": {"weights": {"ttft": 1}, "ttft_slo_ms": 1e308}}, "policies.p.ttft_slo_ms: Input should be"),
    ("tenants.default.quotas", {"token_budget": 2**64}, "tenants.default.quotas.token_budget: Input should be less"),
    ("tenants.default.quotas", {"budget_period_s": 1e-300}, "tenants.default.quotas.budget_period_s: Input should be"),
    ("gateway.scrape_interval_s", 1e-300, "gateway.scrape_interval_s: Input should be greater than or equal to 0.01"),
    ("gateway.shared_sync_interval_s", 1e-300, "gateway.shared_sync_interval_s: Input should be greater than"),
    ("gateway.max_output_tokens", 10**20, "gateway.max_output_tokens: Input should be less than or equal"),
    ("gateway.first_byte_timeout", {"max_s": 1e308, "whole_max_s": 1e308}, "gateway.first_byte_timeout.max_s:"),
    ("gateway.hedge", {"factor": 1e308}, "gateway.hedge.factor: Input should be less than or equal to 1000"),
    ("gateway.admission", {"max_wait_s": {"batch": 1e308}}, "gateway.admission.max_wait_s: must be > 0 "
     "and at most 86400 seconds"),
    ("gateway.batch", {"stale_s": 1e308}, "gateway.batch.stale_s: Input should be less than or equal to 86400"),
    ("slo", {"ttft_ms": 1e308}, "slo.ttft_ms: Input should be less than or equal to 86400000"),
    ("security", {"abuse": {"window_s": 1e308}}, "security.abuse.window_s: Input should be less than or equal"),
])
def test_a_number_no_deployment_has_is_refused_naming_the_field(path: str, value: object, expected: str) -> None:
    """Each passed `spec check` and was taken as written: a speed, size, price or power of 1e308 or 1e-308, two
    policy weights whose sum is inf (every score NaN), a quota past Redis's 64-bit counters, a timer of 1e-300 s
    (a busy loop) or a deadline of 1e308 s."""
    raw = demo_raw()
    *parents, last = [int(k) if k.isdigit() else k for k in path.split(".")]
    node = raw
    for key in parents:
        node = node.setdefault(key, {}) if isinstance(node, dict) else node[key]
    node[last] = value
    with pytest.raises(SpecError) as e:
        parse_spec(raw, "grid.yaml")
    assert expected in str(e.value), str(e.value)


def test_the_largest_context_an_open_model_declares_is_accepted() -> None:
    """Llama 4 Scout's max_position_embeddings, 10,485,760 (MAX_CONTEXT): the bound is a typo's, no real model's."""
    raw = demo_raw()
    raw["models"]["smollm2-135m"]["context"] = MAX_CONTEXT
    assert MAX_CONTEXT == 10_485_760 and parse_spec(raw, "grid.yaml").models["smollm2-135m"].context == MAX_CONTEXT


def test_every_example_grid_spec_is_within_the_bounds() -> None:
    examples = DEMO.parent
    specs = [p for p in sorted(examples.glob("*.yaml")) if "endpoints" in (yaml.safe_load(p.read_text()) or {})]
    assert len(specs) >= 3
    for p in specs:
        load_spec(p)


def _finishes(call: object, within_s: float = 10.0) -> list[object]:
    """What `call` returned or raised, run in a thread; [] if it had not ended within `within_s` (a thread
    blocked in open() cannot be stopped: it is a daemon, left behind)."""
    import threading

    out: list[object] = []

    def run() -> None:
        try:
            out.append(call())  # type: ignore[operator]
        except Exception as e:  # noqa: BLE001 (what it raised is the answer)
            out.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(within_s)
    return out


def test_a_fifo_a_device_or_a_pipe_is_read_without_a_wait_without_end(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A FIFO no one wrote to blocked `aigrid spec check`, `sim` and `plan` in open() for ever, and /dev/zero was
    read to the size bound: each is now refused by name, within the pipe deadline; a pipe that is written to
    its end (`<(envsubst < grid.yaml)`) is read as the file."""
    import os
    import threading

    import aigrid.spec.load as load

    monkeypatch.setattr(load, "PIPE_DEADLINE_S", 0.5)
    monkeypatch.setattr(load, "FIFO_WRITER_S", 0.3)
    fifo = tmp_path / "grid.yaml"
    os.mkfifo(fifo)
    got = _finishes(lambda: load_spec(fifo))
    assert got and isinstance(got[0], SpecError), got
    assert "cannot read file: no one opened the FIFO to write within 0.3 s" in str(got[0])
    writer = os.open(fifo, os.O_RDWR)  # a writer that never writes (a reader beside it, so its open returns)
    try:
        got = _finishes(lambda: load_spec(fifo))
    finally:
        os.close(writer)
    assert got and "cannot read file: a pipe not written to its end within 0.5 s" in str(got[0]), got
    got = _finishes(lambda: load_spec("/dev/zero"))
    assert got and isinstance(got[0], SpecError) and "not a regular file" in str(got[0]), got

    def write() -> None:
        with open(fifo, "wb") as f:
            f.write(DEMO.read_bytes())

    threading.Thread(target=write, daemon=True).start()
    got = _finishes(lambda: load_spec(fifo))
    assert got and not isinstance(got[0], Exception), got
    assert got[0].sites.keys() == load_spec(DEMO).sites.keys()  # type: ignore[attr-defined]


def test_a_pipe_is_read_on_a_descriptor_past_1023_and_a_fifo_no_one_opens_is_refused_sooner(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """_read_pipe waited with select.select, which raises ValueError for a descriptor numbered 1024 or more (a
    process holding many files). And a FIFO no one opened to write was refused only at PIPE_DEADLINE_S (30 s):
    it is now refused after FIFO_WRITER_S, while a FIFO whose writer comes within it, and a pipe written to its
    end or empty (`<(...)`), are read as before."""
    import os
    import threading
    import time

    import aigrid.spec.load as load

    r, w = os.pipe()
    os.write(w, b"sites: {}\n")
    os.close(w)
    os.dup2(r, 1500)
    os.close(r)
    try:
        assert load._read_pipe(1500, 100) == b"sites: {}\n"
    finally:
        os.close(1500)
    r, w = os.pipe()
    os.close(w)
    began = time.monotonic()
    assert load.read_bounded(Path(f"/dev/fd/{r}"), 100) == b""  # an empty pipe is its end at once
    os.close(r)
    assert time.monotonic() - began < 1.0

    monkeypatch.setattr(load, "FIFO_WRITER_S", 1.0)
    fifo = tmp_path / "grid.fifo"
    os.mkfifo(fifo)
    began = time.monotonic()
    got = _finishes(lambda: load.read_bounded(fifo, 100), within_s=10.0)
    assert got and isinstance(got[0], TimeoutError) and "no one opened the FIFO" in str(got[0]), got
    assert time.monotonic() - began < 5.0

    def late() -> None:
        time.sleep(0.3)
        with open(fifo, "wb") as f:
            time.sleep(0.2)
            f.write(b"late")
    threading.Thread(target=late, daemon=True).start()
    assert _finishes(lambda: load.read_bounded(fifo, 100)) == [b"late"]


def test_a_spec_with_many_problems_lists_the_first_twenty_and_counts_the_rest(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import difflib

    nearest = difflib.get_close_matches
    calls = []
    monkeypatch.setattr(difflib, "get_close_matches", lambda *a, **k: calls.append(a) or nearest(*a, **k))
    raw = demo_raw()
    raw["sites"]["fra"].update({f"junk{k}": 1 for k in range(2000)})
    with pytest.raises(SpecError) as e:
        parse_spec(raw, "g.yaml")
    assert len(calls) == 20  # the nearest field looked for the listed ones only (200,000 keys: ~20 s of difflib)
    assert len(e.value.problems) == 2000  # every problem kept on the error, the message lists 20
    lines = str(e.value).splitlines()
    assert lines[0] == "invalid grid spec g.yaml:"
    assert lines[1].startswith("  - sites.fra.junk0: Extra inputs are not permitted")
    assert len(lines) == 22 and lines[-1] == "  - and 1,980 more"
    raw["sites"]["fra"] = {k: v for k, v in raw["sites"]["fra"].items() if not k.startswith("junk")}
    raw["sites"]["fra"].update({f"junk{k}": 1 for k in range(20)})
    with pytest.raises(SpecError) as e:
        parse_spec(raw, "g.yaml")
    assert len(str(e.value).splitlines()) == 21 and "more" not in str(e.value)  # 20: all listed


@pytest.mark.parametrize("name", ["MY-SECRET", "1SECRET", "MY SECRET", "$SECRET", ""])
def test_the_key_hashing_secrets_variable_is_a_name_a_shell_reads(name: str) -> None:
    """security.secret_env had no pattern (api_key_env has one): the banner printed AIGRID_KEY_SECRET="$MY-SECRET",
    which the shell reads as $MY followed by -SECRET, so `keys create` hashed with another secret (the key a 401)."""
    raw = demo_raw()
    raw["security"] = {**raw.get("security", {}), "secret_env": name}
    with pytest.raises(SpecError) as e:
        parse_spec(raw, "grid.yaml")
    assert "security.secret_env: String should match pattern" in str(e.value), str(e.value)
    raw["security"]["secret_env"] = "MY_SECRET_2"
    assert parse_spec(raw, "grid.yaml").security.secret_env == "MY_SECRET_2"


@pytest.mark.parametrize("name", ["MY-JWT", "1JWT", "MY JWT", "$JWT", ""])
def test_the_jwt_secrets_variable_is_a_name_a_shell_reads(name: str) -> None:
    """security.jwt.secret_env had no pattern while security.secret_env has ENV_NAME: `MY-JWT` loaded and the
    gateway failed only at start ("MY-JWT is empty", no variable can hold that name in a shell); now refused at
    spec load, naming the field."""
    raw = demo_raw()
    raw["security"] = {**raw.get("security", {}), "jwt": {"issuer": "i", "audience": "a", "secret_env": name}}
    with pytest.raises(SpecError) as e:
        parse_spec(raw, "grid.yaml")
    assert "security.jwt.secret_env: String should match pattern" in str(e.value), str(e.value)
    raw["security"]["jwt"]["secret_env"] = "MY_JWT_2"
    jwt = parse_spec(raw, "grid.yaml").security.jwt
    assert jwt is not None and jwt.secret_env == "MY_JWT_2"


@pytest.mark.parametrize(("mutate", "expected"), [
    (lambda r: r["endpoints"][0].update(engine="vlm"), "endpoints[0].engine: Input should be 'embedded', 'vllm', "
     "'sglang', 'llamacpp', 'ollama', 'tgi' or 'openai' (did you mean vllm?)"),
    (lambda r: r["endpoints"][0].update(engine="LlamaCPP"), "(did you mean llamacpp?)"),
    (lambda r: r["tenants"]["eu-bank"]["firewall"].update(injection="blok"), "(did you mean block?)"),
    (lambda r: r["gateway"].update(log_level="warn"), "gateway.log_level: Input should be 'debug', 'info', "
     "'warning' or 'error' (did you mean warning?)"),
    (lambda r: r["gateway"].update(default_policy="balance"), "gateway.default_policy: unknown policy 'balance' "
     "(did you mean balanced?) (known: "),
    (lambda r: r["tenants"]["default"].update(policy="latency_first"), "tenants.default.policy: unknown policy "
     "'latency_first' (did you mean latency-first?)"),
    (lambda r: r["endpoints"][0].update(site="fr"), "endpoints[0].site: unknown site 'fr' (did you mean fra?)"),
    (lambda r: r["endpoints"][0].update(model="smollm2-13m"), "unknown model 'smollm2-13m' (did you mean "
     "smollm2-135m?)"),
    (lambda r: r["tenants"]["default"].update(allowed_sites=["iadd"]), "unknown site 'iadd' (did you mean iad?)"),
    (lambda r: r["tenants"]["default"].update(allowed_jurisdictions=["EUR"]), "no site is in EUR (did you "
     "mean EU?)"),
    (lambda r: r.update(policies={"x": {"weights": {"ttft": 1, "cots": 1}}}), "unknown axes cots (did you "
     "mean cost?)"),
])
def test_a_mistyped_value_of_a_closed_set_names_the_nearest(mutate, expected: str) -> None:
    """`engine: vlm` said only "Input should be 'embedded', 'vllm', ...": a field's typo had a did-you-mean, a
    value's had none. Every closed set of values (a Literal's, a policy, a site, a model, a jurisdiction, an axis)
    now names the nearest known one through one helper (spec/near.did_you_mean)."""
    raw = demo_raw()
    mutate(raw)
    with pytest.raises(SpecError) as e:
        parse_spec(raw)
    assert any(expected in p for p in e.value.problems), e.value.problems


@pytest.mark.parametrize(("mutate", "expected"), [
    (lambda r: r["sites"]["fra"].update(lat="north"), "sites.fra.lat: Input should be a valid number, unable to parse "
     "string as a number (got 'north')"),
    (lambda r: r["endpoints"][0].update(slots="eight"), "endpoints[0].slots: Input should be a valid integer, unable "
     "to parse string as an integer (got 'eight')"),
    (lambda r: r["endpoints"][0].update(slots=[8]), "endpoints[0].slots: Input should be a valid integer (got a list)"),
    (lambda r: r.update(cities=["Berlin"]), "cities: Input should be a valid dictionary (got a list)"),
    (lambda r: r["endpoints"][0].update(engine="tensorrt"), "or 'openai' (got 'tensorrt')"),
    (lambda r: r["sites"]["fra"].update(lat="x" * 100), f"(got '{'x' * 40}'...)"),
])
def test_a_value_of_the_wrong_kind_is_quoted_back(mutate, expected: str) -> None:
    """`lat: north`, `slots: eight` said "Input should be a valid number, unable to parse string as a number", not
    what was written, and `slots: [8]` "Input should be a valid integer" (7 Dec 2026, thirty-third session): the
    text (cut to 40 characters) is quoted back, a list or a mapping named."""
    raw = demo_raw()
    mutate(raw)
    with pytest.raises(SpecError) as e:
        parse_spec(raw)
    assert any(expected in p for p in e.value.problems), e.value.problems


def test_a_text_where_a_mapping_goes_is_not_quoted_back() -> None:
    """`gateway.otel.headers` holds an exporter's API key: written as OTEL_EXPORTER_OTLP_HEADERS is, one text
    (`Authorization=Bearer ...`), its error quoted the key back (`(got 'Authorization=Bearer sk-...')`) into the
    terminal and any CI log (7 Dec 2026, thirty-third session, review of 3da2c4dd). A text is said to be one."""
    raw = demo_raw()
    raw["gateway"]["otel"] = {"headers": "Authorization=Bearer sk-live-0123456789"}
    with pytest.raises(SpecError) as e:
        parse_spec(raw)
    [said] = [p for p in e.value.problems if p.startswith("gateway.otel.headers")]
    assert "valid dictionary (got a text)" in said and "sk-live" not in said and "Bearer" not in said, said


def test_a_value_near_nothing_known_gets_no_guess() -> None:
    raw = demo_raw()
    raw["endpoints"][0]["engine"] = "tensorrt"
    with pytest.raises(SpecError) as e:
        parse_spec(raw)
    assert "did you mean" not in str(e.value) and "endpoints[0].engine: Input should be 'embedded'" in str(e.value)



def test_only_the_listed_problems_are_given_a_guess(monkeypatch: pytest.MonkeyPatch) -> None:
    """Review RV12: every unknown name was matched with difflib against all the known ones, so 2,000 endpoints naming
    models not among 2,000 took 174 s of `spec check`; only the first MAX_LISTED problems are shown, and only they
    are matched now (counted, not timed), each still with its guess."""
    import aigrid.spec.near as near_module
    from aigrid.errors import MAX_LISTED

    raw = demo_raw()
    raw["endpoints"] = [{**raw["endpoints"][0], "id": f"e{i}", "model": "smollm2-135n"} for i in range(200)]
    matched = []
    real = near_module.difflib.get_close_matches
    monkeypatch.setattr(near_module.difflib, "get_close_matches", lambda *a, **k: matched.append(1) or real(*a, **k))
    with pytest.raises(SpecError) as e:
        parse_spec(raw)
    assert len(e.value.problems) == 200 and len(matched) <= MAX_LISTED, len(matched)
    assert all("(did you mean smollm2-135m?)" in p for p in e.value.problems[:MAX_LISTED])

@pytest.mark.parametrize(("site", "expected"), [
    # a flow mapping: YAML reads `lat: 50, 11: null` ("sites.fra.11: Keys should be strings")
    ("fra: {name: Frankfurt, lat: 50,11, lon: 8,68, jurisdiction: EU}",
     ["sites.fra.lat: a number is expected (got 50,11; a decimal comma? write 50.11)",
      "sites.fra.lon: a number is expected (got 8,68; a decimal comma? write 8.68)"]),
    ("fra: {name: Frankfurt, lat: 50.11, lon: -8,68, jurisdiction: EU}",
     ["sites.fra.lon: a number is expected (got -8,68; a decimal comma? write -8.68)"]),
    # a block mapping: YAML reads the string "50,11" ("Input should be a valid number, unable to parse string")
    ("fra:\n    name: Frankfurt\n    lat: 50,11\n    lon: 8.68\n    jurisdiction: EU",
     ["sites.fra.lat: a number is expected (got 50,11; a decimal comma? write 50.11)"]),
    ("fra: {name: Frankfurt, lat: 50.11, lon: 8.68, jurisdiction: EU, power_budget_w: '250,5'}",
     ["sites.fra.power_budget_w: a number is expected (got 250,5; a decimal comma? write 250.5)"]),
])
def test_a_decimal_comma_is_named_on_its_field(tmp_path: Path, site: str, expected: list[str]) -> None:
    """`lat: 50,11` (a European locale's decimal comma) said 'sites.fra.11: Keys should be strings': the error
    now names the field, what was written and the number meant, in a flow or a block mapping."""
    text = DEMO.read_text()
    start = text.index("  fra:")
    end = text.index("}", start) + 1  # the demo's fra, over two lines
    given = tmp_path / "grid.yaml"
    given.write_text(text[:start] + "  " + site.replace("\n", "\n  ") + text[end:])
    with pytest.raises(SpecError) as e:
        load_spec(given)
    assert e.value.problems == expected


@pytest.mark.parametrize(("slots", "expected"), [
    ("1,000", "endpoints[0].slots: a whole number is expected (got 1,000; a thousands separator? write 1000)"),
    ("2,5", "endpoints[0].slots: a whole number is expected (got 2,5)"),
])
def test_a_comma_in_a_whole_number_is_not_called_a_decimal_comma(slots: str, expected: str) -> None:
    """Review RV12: `slots: 1,000` was told `a decimal comma? write 1.000`, which the spec reads as 1 slot."""
    raw = demo_raw()
    raw["endpoints"][0]["slots"] = slots
    with pytest.raises(SpecError) as e:
        parse_spec(raw)
    assert e.value.problems == [expected]
    assert parse_spec({**demo_raw(), "endpoints": [{**demo_raw()["endpoints"][0], "slots": 1.000}]}).endpoints[0].slots == 1


def test_every_spec_error_names_a_list_item_in_one_form() -> None:
    """A field's own check said `endpoints.0.slots` (pydantic's loc joined with dots) and the cross-checks
    `endpoints[1].model`, in one error: every line now writes a list's item `endpoints[0]` (the docs' form, and
    the start checks': `endpoints[1].api_key_env`, `sites.fra.documents[0].path`), a list in a list `[0][2]`."""
    raw = demo_raw()
    raw["endpoints"][0].update(slots=0)
    raw["agents"]["graphs"]["rail"][0][2] = -1
    with pytest.raises(SpecError) as e:
        parse_spec(raw)
    fields = sorted(p.split(":")[0] for p in e.value.problems)
    assert fields == ["agents.graphs.rail.edges[0][2]", "endpoints[0].slots"], e.value.problems
    assert not any(re.search(r"\.\d+[.:\[]", p.split(":")[0]) for p in e.value.problems), e.value.problems
