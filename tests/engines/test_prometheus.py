"""The Prometheus parsers, against real /metrics texts saved in tests/engines/data (each names its source)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aigrid.engines.prometheus import (
    MAX_LABELS,
    MAX_LINES,
    MAX_PARSED_CHARS,
    MAX_PARSED_LINES,
    PARSERS,
    _without_buckets,
    collect_samples,
    parse_dcgm,
    parse_stats,
    with_power,
)
from aigrid.engines.protocol import EngineStats
from aigrid.errors import EngineError

DATA = Path(__file__).parent / "data"


def fixture(name: str) -> str:
    text = (DATA / name).read_text()
    assert text.startswith("# Source:"), f"{name} must say where it came from"
    return text


def test_vllm_v0_reads_gpu_cache_usage_and_token_counters() -> None:
    stats = parse_stats("vllm", fixture("vllm_v0_aibrix.prom"))
    assert stats == EngineStats(
        running=0, waiting=0, kv_usage=0.0, prompt_tokens_total=148.0, generation_tokens_total=955.0
    )


def test_vllm_v1_without_type_lines_reads_new_names() -> None:
    stats = parse_stats("vllm", fixture("vllm_v1_grep.prom"))
    assert (stats.running, stats.waiting, stats.kv_usage) == (0, 0, 0.0)
    assert (stats.ttft_sum_s, stats.ttft_count) == (0.205, 10.0)
    assert (stats.tpot_sum_s, stats.tpot_count) == (0.864, 490.0)
    assert (stats.prompt_tokens_total, stats.generation_tokens_total) == (80.0, 500.0)
    assert stats.power_w is None


def test_vllm_sums_counts_over_engines_and_averages_kv() -> None:
    # Two data-parallel engines of one server, in vLLM V1's label shape.
    text = "\n".join(
        [
            "# TYPE vllm:num_requests_running gauge",
            'vllm:num_requests_running{engine="0",model_name="m"} 3.0',
            'vllm:num_requests_running{engine="1",model_name="m"} 5.0',
            "# TYPE vllm:num_requests_waiting gauge",
            'vllm:num_requests_waiting{engine="0",model_name="m"} 1.0',
            'vllm:num_requests_waiting{engine="1",model_name="m"} 0.0',
            'vllm:num_requests_waiting_by_reason{engine="0",model_name="m",reason="capacity"} 9.0',
            "# TYPE vllm:kv_cache_usage_perc gauge",
            'vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.2',
            'vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.4',
            "# TYPE vllm:gpu_cache_usage_perc gauge",
            'vllm:gpu_cache_usage_perc{engine="0",model_name="m"} 0.9',
            "# TYPE vllm:time_to_first_token_seconds histogram",
            'vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="m"} 2.0',
            'vllm:time_to_first_token_seconds_sum{engine="0",model_name="m"} 0.5',
            'vllm:time_to_first_token_seconds_count{engine="0",model_name="m"} 2.0',
            'vllm:time_to_first_token_seconds_bucket{engine="1",le="+Inf",model_name="m"} 3.0',
            'vllm:time_to_first_token_seconds_sum{engine="1",model_name="m"} 1.0',
            'vllm:time_to_first_token_seconds_count{engine="1",model_name="m"} 3.0',
            "",
        ]
    )
    stats = parse_stats("vllm", text)
    assert (stats.running, stats.waiting) == (8, 1)
    assert stats.kv_usage == pytest.approx(0.3)  # the newer name wins over the deprecated one
    assert (stats.ttft_sum_s, stats.ttft_count) == (1.5, 5.0)


def test_sglang_under_load() -> None:
    stats = parse_stats("sglang", fixture("sglang_docs.prom"))
    assert (stats.running, stats.waiting, stats.kv_usage) == (162, 2826, 0.28)
    assert (stats.ttft_sum_s, stats.ttft_count) == (2.3518979474117756e06, 11008.0)
    assert (stats.tpot_sum_s, stats.tpot_count) == (866964.5791549598, 7.400757e06)
    assert (stats.prompt_tokens_total, stats.generation_tokens_total) == (8.128902e06, 7.557572e06)


def test_llamacpp_idle_after_one_request() -> None:
    stats = parse_stats("llamacpp", fixture("llamacpp_idle.prom"))
    assert (stats.running, stats.waiting) == (0, 0)
    assert stats.kv_usage is None  # kv_cache_usage_ratio is gone from this build
    assert (stats.prompt_tokens_total, stats.generation_tokens_total) == (37.0, 15.0)
    assert (stats.tpot_sum_s, stats.tpot_count) == (0.087363, 15.0)
    assert stats.ttft_sum_s is None and stats.ttft_count is None


def test_llamacpp_busy_slots_and_deferred_requests() -> None:
    stats = parse_stats("llamacpp", fixture("llamacpp_busy.prom"))
    assert (stats.running, stats.waiting) == (2, 1)
    assert stats.prompt_tokens_total == 65.0


def test_tgi_queue_and_batch() -> None:
    stats = parse_stats("tgi", fixture("tgi_tgis_ibm_vllm.prom"))
    assert stats == EngineStats(running=0, waiting=0)


def test_tgi_token_totals_and_tpot_from_histograms() -> None:
    text = "\n".join(
        [
            "# TYPE tgi_queue_size gauge",
            "tgi_queue_size 4",
            "# TYPE tgi_batch_current_size gauge",
            "tgi_batch_current_size 8",
            "# TYPE tgi_request_input_length histogram",
            'tgi_request_input_length_bucket{le="+Inf"} 10',
            "tgi_request_input_length_sum 1200",
            "tgi_request_input_length_count 10",
            "# TYPE tgi_request_generated_tokens histogram",
            'tgi_request_generated_tokens_bucket{le="+Inf"} 10',
            "tgi_request_generated_tokens_sum 3000",
            "tgi_request_generated_tokens_count 10",
            "# TYPE tgi_request_mean_time_per_token_duration histogram",
            'tgi_request_mean_time_per_token_duration_bucket{le="+Inf"} 10',
            "tgi_request_mean_time_per_token_duration_sum 0.25",
            "tgi_request_mean_time_per_token_duration_count 10",
            "",
        ]
    )
    stats = parse_stats("tgi", text)
    assert (stats.running, stats.waiting) == (8, 4)
    assert (stats.prompt_tokens_total, stats.generation_tokens_total) == (1200.0, 3000.0)
    assert (stats.tpot_sum_s, stats.tpot_count) == (0.25, 10.0)


def test_dcgm_sums_power_over_gpus() -> None:
    stats = parse_stats("dcgm", fixture("dcgm_h100x8.prom"))
    expected = 67.268 + 67.616 + 66.477 + 69.523 + 66.297 + 66.324 + 115.22 + 69.424
    assert stats.power_w == pytest.approx(expected)
    assert stats.running is None


def test_dcgm_counts_a_mig_card_once() -> None:
    stats = parse_dcgm(fixture("dcgm_a30_mig.prom"))
    assert stats.power_w == pytest.approx(52.746 + 56.127)


def test_dcgm_restricted_to_the_endpoints_gpus() -> None:
    text = fixture("dcgm_h100x8.prom")
    assert parse_dcgm(text, gpus={"6"}).power_w == pytest.approx(115.22)
    assert parse_dcgm(text, gpus={"GPU-22dbdd79-f55a-92a8-aa39-322198e72ed6"}).power_w == pytest.approx(67.268)
    assert parse_dcgm(text, gpus={"99"}).power_w is None


def test_with_power_merges_the_exporter_reading() -> None:
    engine = parse_stats("vllm", fixture("vllm_v1_grep.prom"))
    merged = with_power(engine, parse_stats("dcgm", fixture("dcgm_h100x8.prom")))
    assert merged.power_w is not None and merged.power_w > 500
    assert merged.generation_tokens_total == 500.0


@pytest.mark.parametrize("kind", ["ollama", "openai"])
def test_engines_without_metrics_give_all_none(kind: str) -> None:
    assert parse_stats(kind, "") == EngineStats()


@pytest.mark.parametrize("kind", sorted(PARSERS))
def test_empty_text_gives_all_none(kind: str) -> None:
    assert parse_stats(kind, "") == EngineStats()


def test_unknown_kind_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="known: dcgm, llamacpp"):
        parse_stats("triton", "")


def test_garbage_is_an_engine_error() -> None:
    with pytest.raises(EngineError, match="Prometheus"):
        collect_samples("<html><body>502 Bad Gateway</body></html>\n")


def test_non_finite_values_are_ignored() -> None:
    stats = parse_stats("vllm", "vllm:kv_cache_usage_perc NaN\nvllm:num_requests_running 2\n")
    assert stats.kv_usage is None and stats.running == 2


@pytest.mark.parametrize("name", sorted(p.name for p in DATA.glob("*.prom")))
def test_buckets_are_left_out_and_every_other_sample_is_as_prometheus_client_reads_it(name: str) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    text = fixture(name) + (  # and a histogram with TYPE lines, as vLLM and the emulator write them
        "# TYPE x_seconds histogram\n"
        'x_seconds_bucket{le="0.1"} 1\nx_seconds_bucket{le="+Inf"} 3\nx_seconds_sum 0.5\nx_seconds_count 3\n'
        "# TYPE y counter\ny 7\n")
    full: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if not s.name.endswith("_bucket"):
                full.setdefault(s.name, []).append((s.labels, float(s.value)))
    assert collect_samples(text) == full
    assert "x_seconds_count" in full and "y_total" in full


def test_negative_and_overflowing_values_are_not_read() -> None:
    """Every series read is a count, a fraction or a sum of durations: a negative value is a lie (it made an engine
    look better than idle), and a sum past the largest float raised OverflowError in the scrape."""
    text = ('vllm:num_requests_running -1000\nvllm:kv_cache_usage_perc -5\nvllm:num_requests_waiting{a="1"} 1e308\n'
            'vllm:num_requests_waiting{a="2"} 1e308\nvllm:prompt_tokens_total 12\n')
    stats = parse_stats("vllm", text)
    assert (stats.running, stats.kv_usage, stats.waiting, stats.prompt_tokens_total) == (None, None, None, 12.0)


def _no_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    """The text parser, made to fail the test if it is reached (refused before it, whatever the machine's speed)."""
    def parsed(text: str) -> Any:
        raise AssertionError("parsed")

    monkeypatch.setattr("aigrid.engines.prometheus.text_string_to_metric_families", parsed)


def test_a_million_line_exposition_is_refused_before_it_is_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Within the 16 MiB a scrape reads, an engine could send a million one-sample lines: each parsed into a
    series, on the event loop, at every scrape (100,000 took 0.9 s). More than MAX_LINES is the engine's error."""
    text = "".join(f'vllm:num_requests_running{{model="m{i}"}} 1\n' for i in range(1_000_000))
    _no_parse(monkeypatch)
    with pytest.raises(EngineError, match="more than the 50000 read"):
        parse_stats("vllm", text)
    monkeypatch.undo()
    edge = "vllm:num_requests_running 7\n" + 'vllm:x_seconds_bucket{le="1"} 1\n' * (MAX_LINES - 1)
    assert parse_stats("vllm", edge).running == 7


@pytest.mark.parametrize("text", [
    "vllm:num_requests_running{" + ",".join(f'l{i}="v"' for i in range(100_000)) + "} 1\n",  # one sample, 1 MB
    'vllm:num_requests_running{a="' + "x" * 8_000_000 + '"} 1\n',
    "".join(f'vllm:num_requests_running{{model="m{i}",engine="{i}",pad="{"x" * 300}"}} 1\n' for i in range(40_000)),
])
def test_an_exposition_within_its_lines_but_too_large_to_parse_is_refused(text: str,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Under MAX_LINES, a line can still hold 100,000 labels (parsed in 7.7 s: the parser's cost grows faster than
    a sample's labels) or megabytes (about 0.2 us a character: 16 MiB some 3 s), at every scrape, on the event loop."""
    _no_parse(monkeypatch)
    with pytest.raises(EngineError, match="not parsed"):
        parse_stats("vllm", text)


_SAMPLE = 'vllm:num_requests_running{a="' + "x" * 30 + '"} 1\n'


@pytest.mark.parametrize("text", [
    _SAMPLE * 32_000,  # 2 MB: 0.64 s a scrape
    "".join(f"# TYPE vllm:f{i} gauge\nvllm:f{i} 1\n" for i in range(24_000)),  # 0.9 MB, 0.37 s
    ("# HELP vllm:x " + "h" * 1000 + "\n") * 2000,  # 2 MB of comments, 0.15 s
    "v 1\n" * 49_000,  # 0.2 MB: 4 us a line
    "".join("vllm:num_requests_running{" + ",".join(f'l{j}="{i}"' for j in range(10)) + "} 1\n"
            for i in range(1_000)),  # 10,000 labels, 0.2 MB: 5 to 11 us each
])
def test_an_exposition_within_the_old_bounds_that_held_the_event_loop_is_refused(
        text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Within 2 MiB and 50,000 labels besides the buckets, a hostile /metrics held the event loop 0.1 to 0.6 s at
    every scrape; the parsed part is now at most MAX_PARSED_CHARS, MAX_PARSED_LINES and MAX_LABELS, refused before
    the parser."""
    assert text.count("\n") <= MAX_LINES and len(text) <= 2 << 20 and text.count("=") <= 50_000
    _no_parse(monkeypatch)
    with pytest.raises(EngineError, match="not parsed"):
        parse_stats("vllm", text)


def test_an_exposition_at_the_bounds_is_parsed_and_a_real_one_is_far_within() -> None:
    labelled = "vllm:num_requests_waiting{" + ",".join(f'l{i}="1"' for i in range(MAX_LABELS)) + "} 0\n"
    samples = labelled + "vllm:num_requests_running 3\n" + "vllm:num_requests_waiting 0\n" * (MAX_PARSED_LINES - 3)
    text = samples + "#" * (MAX_PARSED_CHARS - len(samples) - 1) + "\n"
    assert (len(text), text.count("\n"), text.count("=")) == (MAX_PARSED_CHARS, MAX_PARSED_LINES, MAX_LABELS)
    buckets = 'vllm:time_to_first_token_seconds_bucket{engine="0",le="0.5",model_name="m"} 1\n' * 10_000
    assert parse_stats("vllm", buckets + text + buckets).running == 3  # buckets are not counted (1.6 MB here)
    for name in ("vllm_v0_aibrix.prom", "vllm_v1_grep.prom", "sglang_docs.prom", "llamacpp_busy.prom"):
        kept = _without_buckets(fixture(name))
        assert len(kept) * 50 < MAX_PARSED_CHARS and kept.count("=") * 50 < MAX_LABELS, name
        assert kept.count("\n") * 40 < MAX_PARSED_LINES, name


@pytest.mark.parametrize("text", [
    'a_bucket{le="1"} 1\nb 2\nc_bucket 3',  # a bucket first, and last without its line break
    'a_bucket_x{le="1"} 1\nab_bucket\t4\n#a_bucket 1\nx_bucket{le="2"} 6\n\ny 7\n',
])
def test_buckets_are_cut_at_either_end_and_only_where_a_sample_s_name_ends(text: str) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    full = {s.name: [(s.labels, float(s.value))] for f in text_string_to_metric_families(text) for s in f.samples
            if not s.name.endswith("_bucket")}
    assert collect_samples(text) == full
    assert _without_buckets(text).count("_bucket") == text.count("_bucket") - 2
