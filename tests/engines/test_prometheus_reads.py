"""Each engine kind's parser parses only the series it reads (prometheus.collect_samples with the kind's READS):
the lines of every other series are cut before prometheus-client's parser, which validates each label of each line
it is given (issue 13: 3.8% of a gateway worker's CPU at ~90 requests/s, at every scrape)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from aigrid.engines import prometheus
from aigrid.engines.prometheus import (
    DCGM_READS,
    LLAMACPP_READS,
    SGLANG_READS,
    TGI_READS,
    VLLM_READS,
    Samples,
    collect_samples,
    parse_stats,
)
from aigrid.engines.protocol import EngineStats
from aigrid.errors import EngineError

DATA = Path(__file__).parent / "data"
TEXTS = sorted(p.name for p in DATA.glob("*.prom"))
KINDS: dict[str, tuple[frozenset[str], Callable[[Samples], EngineStats]]] = {
    "vllm": (VLLM_READS, prometheus._read_vllm),
    "sglang": (SGLANG_READS, prometheus._read_sglang),
    "llamacpp": (LLAMACPP_READS, prometheus._read_llamacpp),
    "tgi": (TGI_READS, prometheus._read_tgi),
    "dcgm": (DCGM_READS, prometheus._read_dcgm),
}


class _Parsed:
    """prometheus-client's parser, wrapped: the texts it was given."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.texts: list[str] = []
        real = prometheus.text_string_to_metric_families

        def parse(text: str) -> Iterable[Any]:
            self.texts.append(text)
            return real(text)

        monkeypatch.setattr(prometheus, "text_string_to_metric_families", parse)


def test_a_text_of_many_other_families_is_parsed_without_them(monkeypatch: pytest.MonkeyPatch) -> None:
    others = "".join(f'# HELP other_{i} A series no parser reads.\n# TYPE other_{i} gauge\n'
                     f'other_{i}{{model_name="m",engine="0"}} {i}\n' for i in range(200))
    text = (others + '# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{model_name="m"} 3\n'
            "# TYPE vllm:prefix_cache_hits_total counter\nvllm:prefix_cache_hits_total 9\n" + others)
    parsed = _Parsed(monkeypatch)
    assert parse_stats("vllm", text) == EngineStats(running=3)
    assert len(parsed.texts) == 1
    assert "other_" not in parsed.texts[0] and "prefix_cache" not in parsed.texts[0] and "HELP" not in parsed.texts[0]
    assert parsed.texts[0].count("\n") == 2


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("name", TEXTS)
def test_every_shipped_text_reads_the_same_as_from_all_of_its_series(name: str, kind: str) -> None:
    text = (DATA / name).read_text()
    reads, reader = KINDS[kind]
    whole = collect_samples(text)
    assert {k: v for k, v in collect_samples(text, reads).items() if k in reads} == {
        k: v for k, v in whole.items() if k in reads}
    assert parse_stats(kind, text) == reader(whole)


class _Asked(dict[str, list[tuple[Any, float]]]):
    def __init__(self, samples: Samples) -> None:
        super().__init__(samples)
        self.asked: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> list[tuple[Any, float]]:
        self.asked.add(key)
        return super().__getitem__(key)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_reader_asks_only_for_its_reads(kind: str) -> None:
    reads, reader = KINDS[kind]
    samples = _Asked({})
    reader(samples)
    assert samples.asked and samples.asked <= reads, samples.asked - reads
    assert prometheus.PARSERS[kind].__name__ == f"parse_{kind}"


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("text", [
    "<html><body>502 Bad Gateway</body></html>\n",
    "Internal Server Error\n",
    "other_series 1\nupstream connect error or disconnect/reset before headers\n",
    'other{a="1" 2\n',  # a label set never closed
    'other{a=1} 2\n',  # a label value without quotes
    'other{a="1" b="2"} 2\n',  # labels without a comma
    "other 1_000\n",
    "# TYPE other\nother 1\n",  # a TYPE line without its type
])
def test_text_that_is_not_prometheus_is_still_an_error_for_every_kind(kind: str, text: str) -> None:
    with pytest.raises(EngineError, match="Prometheus"):
        parse_stats(kind, text)


def test_the_format_s_corners_in_the_series_read_and_beside_them() -> None:
    text = ("# A comment\n"
            '# HELP vllm:num_requests_running Running, with an \\\\ escape and a "quote".\n'
            "# TYPE vllm:num_requests_running gauge\n"
            'vllm:num_requests_running{model_name="a \\"b\\" c\\\\d\\n",x="}{,"} 2 1733500000000\n'
            'vllm:num_requests_running{model_name="z"}\t1\n'
            "# TYPE vllm:prompt_tokens counter\n"  # a counter's sample written without _total
            "vllm:prompt_tokens 12\n"
            'other{label="with \\" vllm:num_requests_waiting 9"} NaN\n'
            "other2 +Inf 1733500000000\n"
            "vllm:kv_cache_usage_perc NaN\n"
            "vllm:generation_tokens_total -Inf\n"
            "vllm:num_requests_waiting 4\r\n")
    stats = parse_stats("vllm", text)
    assert stats == EngineStats(running=3, waiting=4, prompt_tokens_total=12.0)
    samples = collect_samples(text, VLLM_READS)
    assert samples["vllm:num_requests_running"][0][0] == {"model_name": 'a "b" c\\d\n', "x": "}{,"}
    assert set(samples) == {"vllm:num_requests_running", "vllm:prompt_tokens_total", "vllm:kv_cache_usage_perc",
                            "vllm:generation_tokens_total", "vllm:num_requests_waiting"}
