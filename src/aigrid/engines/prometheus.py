"""Pure parsers from Prometheus exposition text to EngineStats, one small function per engine kind.

No I/O here: the adapters fetch /metrics, these functions read the text. Every engine names the same
ideas differently (vLLM's ``num_requests_waiting`` is SGLang's ``num_queue_reqs`` and llama.cpp's
``requests_deferred``), and names drift between releases, so each field is looked up through a short list
of alternatives, newest name first.

Samples are matched by their own name (``vllm:time_to_first_token_seconds_sum``), not by family, so that
text without ``# TYPE`` lines (a grep of /metrics, some exporters) parses the same as full output.
Counts and cumulative counters are summed over label sets (several models, data-parallel engines,
GPUs); fractions such as KV-cache usage are averaged, since summing two 0.5 fills would read as full.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import replace
from types import MappingProxyType

from prometheus_client.parser import text_string_to_metric_families

from aigrid.engines.protocol import EngineStats
from aigrid.errors import EngineError

Labels = Mapping[str, str]
Samples = Mapping[str, list[tuple[Labels, float]]]
"""Sample name -> every (labels, value) with that name."""


_BUCKETS = re.compile(r"\n[a-zA-Z_:][a-zA-Z0-9_:]*+(?<=_bucket)[{ \t][^\n]*")
"""A histogram's bucket sample with the line break before it: no parser here reads them (a histogram is read by
its _sum and _count), and they are most of an engine's exposition (vLLM: a dozen histograms of 10 to 30 buckets).
The name is taken whole (`*+`, no backtracking) and the search steps from one line break to the next: the pattern
anchored with `^` over every character took up to 0.12 s of 16 MiB of long lines or comments before any bound
(now at most about 0.04 s)."""


MAX_LINES = 50_000
"""The most lines of one exposition read, its buckets included (vLLM's, about 100 KiB with its histograms and comments, is roughly 1,500;
an estimate from its size, not a count). Within the 16 MiB a scrape reads, an engine could send 4 million one-sample
lines: parsed on the event loop at about 9 us a line (100,000 in 0.9 s), at every scrape, into one series each."""
MAX_PARSED_CHARS = 256 << 10
"""The most characters parsed once the buckets are cut: about 2.5 times vLLM's whole exposition, buckets included
(the shipped llama.cpp, vLLM and SGLang texts are 1.3 to 3.3 KB once their buckets are cut). prometheus-client's
parser takes 0.05 to 0.3 us a character on the event loop, at every scrape: 2 MiB (the bound until the twenty-third
session) held it 0.1 to 0.6 s."""
MAX_PARSED_LINES = 5_000
"""The most lines parsed once the buckets are cut (vLLM's some hundreds, an estimate from its series; the shipped
texts at most 46): a line costs the parser about 4 us, so 50,000 short ones within MAX_PARSED_CHARS took 0.2 s."""
MAX_LABELS = 5_000
"""The most '=' in the text parsed, so label pairs at most (vLLM's some hundreds once its buckets are cut, an
estimate from its series; the shipped texts at most 86). A label costs the parser 5 to 11 us, and more the more one
sample has: 100,000 on one line (1 MB) took 7.7 s, 20,000 (200 KB) 0.23 s. Within all three bounds a parse held
the event loop about 0.05 s, 0.09 s with the machine busy (the worst shapes found: lines of one label each, short
lines and one of 5,000 labels)."""


def _without_buckets(text: str) -> str:
    return _BUCKETS.sub("", "\n" + text)[1:]


_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*+"
_VALUE = r"[+-]?+(?:[0-9]++(?:\.[0-9]*+)?+(?:[eE][+-]?+[0-9]++)?+|\.[0-9]++(?:[eE][+-]?+[0-9]++)?+|NaN|Inf)"
_LABEL = r'[ \t]*+[a-zA-Z_][a-zA-Z0-9_]*+[ \t]*+=[ \t]*+"(?:[^"\\\n]|\\.)*+"[ \t]*+'
_LABELS = rf"\{{(?:{_LABEL}(?:,{_LABEL})*+,?+)?+[ \t]*+\}}"
"""Every quantifier possessive, so that nothing is tried twice: a line is matched or refused in time linear in its
length (250 KB of a space run before a missing brace, of digits, of labels never closed, of escapes or of short lines:
0.2 to 17 ms, on a busy machine)."""


@functools.lru_cache(maxsize=16)
def _unread_lines(reads: frozenset[str]) -> re.Pattern[str]:
    """The lines no parser of the kind reads, with the line break before each: a sample whose name is none of
    `reads` nor one of them less _total (a counter's sample written without it is read with it), a TYPE line whose
    family is none of them less nothing, _total, _sum or _count, and every HELP line (of a family's HELP the parser
    keeps only its documentation, which no parser reads; a TYPE line or a sample starts a family without one).
    Only a well-formed line is matched (a name, labels of a name and a quoted value with its escapes, a number or
    NaN / +Inf / -Inf, an integer timestamp; `# HELP name ...`, `# TYPE name type`): a line that is not one (an
    error page's text, a label value without quotes) is left for the parser to refuse, as before."""
    names: set[str] = set(reads)
    for name in reads:
        for suffix in ("_total", "_sum", "_count"):
            if name.endswith(suffix):
                names.add(name[:-len(suffix)])
    known = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    other = rf"(?!(?:{known})(?![a-zA-Z0-9_:])){_NAME}"
    return re.compile(rf"\n(?:{other}(?:{_LABELS})?+[ \t]++{_VALUE}(?:[ \t]++-?+[0-9]++)?+"
                      rf"|#[ \t]++(?:HELP[ \t]++{_NAME}(?:[ \t][^\n]*+)?+|TYPE[ \t]++{other}[ \t]++[a-z]++))"
                      rf"[ \t\r]*+(?=\n|\Z)")


def collect_samples(text: str, reads: Collection[str] | None = None) -> Samples:
    """Flatten exposition text into sample name -> values, histogram buckets left out. Raises EngineError on
    text that is not Prometheus.

    The buckets are cut from the text before prometheus-client's parser (pure Python, character by
    character) sees it: the emulator's 86-line exposition took 1.2 ms to parse, on the event loop, at every
    scrape of every endpoint, and takes 0.2 ms without its 65 bucket lines (SGLang's documented example:
    1.7 -> 0.4 ms). Every other sample comes out as before: a bucket line inside its histogram (its TYPE
    line, then its samples: any exporter's output) only adds itself to that family.

    With `reads` (an engine kind's READS), the lines of the series no parser of the kind reads are cut too
    (_unread_lines), so that the parser validates none of their labels: the samples of `reads` come out as from
    the whole text where each family's lines are together, as the format requires (a family's TYPE line is kept
    with its samples, and a line of a family that is cut does not change another family's). As with the buckets,
    a well-formed line that is cut is not checked further (a reserved or repeated label name in it is not an
    error). The emulator's exposition: 349 -> 255 us a scrape, vLLM's (V0, with HELP lines) 569 -> 196 us,
    llama.cpp's 407 -> 129 us (scripts/bench_scrape_parse.py, load 2.8-3.8)."""
    lines = text.count("\n")
    if lines > MAX_LINES:
        raise EngineError(f"metrics text has {lines} lines, more than the {MAX_LINES} read: not parsed")
    kept = _without_buckets(text)
    chars, kept_lines, labels = len(kept), kept.count("\n"), kept.count("=")
    if chars > MAX_PARSED_CHARS or kept_lines > MAX_PARSED_LINES or labels > MAX_LABELS:
        raise EngineError(f"metrics text has {chars} characters, {kept_lines} lines and {labels} labels besides its "
                          f"buckets, more than the {MAX_PARSED_CHARS}, {MAX_PARSED_LINES} and {MAX_LABELS} read: "
                          "not parsed")
    if reads is not None:
        kept = _unread_lines(frozenset(reads)).sub("", "\n" + kept)[1:]
    out: dict[str, list[tuple[Labels, float]]] = {}
    try:
        for family in text_string_to_metric_families(kept):
            for sample in family.samples:
                out.setdefault(sample.name, []).append((sample.labels, float(sample.value)))
    except ValueError as exc:  # prometheus_client's only parse error: mapped here, once
        raise EngineError(f"metrics text is not valid Prometheus exposition format: {exc}") from exc
    return out


def _values(samples: Samples, names: tuple[str, ...]) -> list[float] | None:
    """Finite values of at least 0 of the first name in `names` that is present (names are alternatives, newest
    first). Every series read here is a count, a fraction or a sum of durations: a negative one is an engine's lie,
    and read as it came it made the engine look better than idle to the routing (running -1000, KV use -5)."""
    for name in names:
        found = samples.get(name)
        if found:
            return [v for _, v in found if 0.0 <= v < math.inf]
    return None


def _sum(samples: Samples, *names: str) -> float | None:
    """The values' sum; None when it is not finite (two values of 1e308: an OverflowError in the scrape, which
    stopped the gateway starting)."""
    values = _values(samples, names)
    total = sum(values) if values else None
    return total if total is not None and math.isfinite(total) else None


def _mean(samples: Samples, *names: str) -> float | None:
    values = _values(samples, names)
    return sum(values) / len(values) if values else None


def _count(samples: Samples, *names: str) -> int | None:
    total = _sum(samples, *names)
    return None if total is None else round(total)


def _hist(samples: Samples, *bases: str) -> tuple[float | None, float | None]:
    """(sum, count) of the first histogram in `bases` that has both series."""
    for base in bases:
        s, c = _sum(samples, base + "_sum"), _sum(samples, base + "_count")
        if s is not None and c is not None:
            return s, c
    return None, None


def _histograms(*bases: str) -> tuple[str, ...]:
    return tuple(base + suffix for base in bases for suffix in ("_sum", "_count"))


VLLM_READS = frozenset({
    *_histograms("vllm:time_to_first_token_seconds", "vllm:inter_token_latency_seconds",
                 "vllm:time_per_output_token_seconds", "vllm:request_time_per_output_token_seconds"),
    "vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
    "vllm:gpu_cache_usage_perc", "vllm:prompt_tokens_total", "vllm:generation_tokens_total",
})
"""Every sample name _read_vllm reads (tests/engines/test_prometheus_reads.py holds each reader to its READS)."""


def parse_vllm(text: str) -> EngineStats:
    """vLLM (V0 and V1 engines). kv_cache_usage_perc replaced gpu_cache_usage_perc; inter-token latency
    replaced time_per_output_token (V1 keeps the old name as a deprecated alias for a while)."""
    return _read_vllm(collect_samples(text, VLLM_READS))


def _read_vllm(s: Samples) -> EngineStats:
    ttft_sum, ttft_count = _hist(s, "vllm:time_to_first_token_seconds")
    tpot_sum, tpot_count = _hist(
        s,
        "vllm:inter_token_latency_seconds",
        "vllm:time_per_output_token_seconds",
        "vllm:request_time_per_output_token_seconds",
    )
    return EngineStats(
        running=_count(s, "vllm:num_requests_running"),
        waiting=_count(s, "vllm:num_requests_waiting"),
        kv_usage=_mean(s, "vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
        ttft_sum_s=ttft_sum,
        ttft_count=ttft_count,
        tpot_sum_s=tpot_sum,
        tpot_count=tpot_count,
        prompt_tokens_total=_sum(s, "vllm:prompt_tokens_total"),
        generation_tokens_total=_sum(s, "vllm:generation_tokens_total"),
    )


def _sglang(suffix: str) -> tuple[str, str]:
    return ("sglang:" + suffix, "sglang_" + suffix)


SGLANG_READS = frozenset({
    *_histograms(*_sglang("time_to_first_token_seconds"), *_sglang("inter_token_latency_seconds"),
                 *_sglang("time_per_output_token_seconds")),
    *(name for suffix in ("num_running_reqs", "num_queue_reqs", "token_usage", "prompt_tokens_total",
                          "generation_tokens_total") for name in _sglang(suffix)),
})
"""Every sample name _read_sglang reads."""


def parse_sglang(text: str) -> EngineStats:
    """SGLang (--enable-metrics). token_usage is the fraction of the KV token pool in use. Some
    deployments export an underscore prefix (sglang_...) instead of the colon one; both are read."""
    return _read_sglang(collect_samples(text, SGLANG_READS))


def _read_sglang(s: Samples) -> EngineStats:
    names = _sglang

    ttft_sum, ttft_count = _hist(s, *names("time_to_first_token_seconds"))
    tpot_sum, tpot_count = _hist(
        s, *names("inter_token_latency_seconds"), *names("time_per_output_token_seconds")
    )
    return EngineStats(
        running=_count(s, *names("num_running_reqs")),
        waiting=_count(s, *names("num_queue_reqs")),
        kv_usage=_mean(s, *names("token_usage")),
        ttft_sum_s=ttft_sum,
        ttft_count=ttft_count,
        tpot_sum_s=tpot_sum,
        tpot_count=tpot_count,
        prompt_tokens_total=_sum(s, *names("prompt_tokens_total")),
        generation_tokens_total=_sum(s, *names("generation_tokens_total")),
    )


def parse_llamacpp(text: str) -> EngineStats:
    """llama.cpp llama-server started with --metrics.

    requests_processing / requests_deferred are busy slots / queued requests. kv_cache_usage_ratio is
    gone from newer builds (then kv_usage is None). There is no TTFT series and no request counter, so
    TTFT stays None. Time per output token is derived honestly: tokens_predicted_seconds_total is the
    decode time summed over slots, tokens_predicted_total the tokens it produced, so their ratio is the
    mean per-sequence time per output token.
    """
    return _read_llamacpp(collect_samples(text, LLAMACPP_READS))


LLAMACPP_READS = frozenset({
    "llamacpp:tokens_predicted_total", "llamacpp:tokens_predicted_seconds_total", "llamacpp:requests_processing",
    "llamacpp:requests_deferred", "llamacpp:kv_cache_usage_ratio", "llamacpp:prompt_tokens_total",
})
"""Every sample name _read_llamacpp reads."""


def _read_llamacpp(s: Samples) -> EngineStats:
    generated = _sum(s, "llamacpp:tokens_predicted_total")
    decode_s = _sum(s, "llamacpp:tokens_predicted_seconds_total")
    return EngineStats(
        running=_count(s, "llamacpp:requests_processing"),
        waiting=_count(s, "llamacpp:requests_deferred"),
        kv_usage=_mean(s, "llamacpp:kv_cache_usage_ratio"),
        tpot_sum_s=decode_s if generated is not None else None,
        tpot_count=generated if decode_s is not None else None,
        prompt_tokens_total=_sum(s, "llamacpp:prompt_tokens_total"),
        generation_tokens_total=generated,
    )


def parse_tgi(text: str) -> EngineStats:
    """Hugging Face TGI router metrics. The queue and the current batch are exact; TTFT is not exported
    (it would need queue + prefill histograms with different buckets), so it stays None. The token totals
    are the sums of the per-request input-length and generated-tokens histograms; TPOT is the mean of the
    per-request mean time per token."""
    return _read_tgi(collect_samples(text, TGI_READS))


TGI_READS = frozenset({
    *_histograms("tgi_request_mean_time_per_token_duration"), "tgi_batch_current_size", "tgi_queue_size",
    "tgi_request_input_length_sum", "tgi_request_generated_tokens_sum",
})
"""Every sample name _read_tgi reads."""


def _read_tgi(s: Samples) -> EngineStats:
    tpot_sum, tpot_count = _hist(s, "tgi_request_mean_time_per_token_duration")
    return EngineStats(
        running=_count(s, "tgi_batch_current_size"),
        waiting=_count(s, "tgi_queue_size"),
        tpot_sum_s=tpot_sum,
        tpot_count=tpot_count,
        prompt_tokens_total=_sum(s, "tgi_request_input_length_sum"),
        generation_tokens_total=_sum(s, "tgi_request_generated_tokens_sum"),
    )


def parse_dcgm(text: str, gpus: Collection[str] | None = None) -> EngineStats:
    """NVIDIA dcgm-exporter: total power draw in watts over the physical GPUs.

    `gpus` optionally restricts the sum to GPUs named by index ("0") or UUID ("GPU-..."), for a node
    whose GPUs serve several endpoints. With MIG the exporter repeats the card's power once per GPU
    instance, so each physical GPU (by UUID, else index) is counted once, at its highest reading.
    """
    return _read_dcgm(collect_samples(text, DCGM_READS), gpus)


DCGM_READS = frozenset({"DCGM_FI_DEV_POWER_USAGE"})
"""Every sample name _read_dcgm reads."""


def _read_dcgm(s: Samples, gpus: Collection[str] | None = None) -> EngineStats:
    per_gpu: dict[str, float] = {}
    for labels, value in s.get("DCGM_FI_DEV_POWER_USAGE", []):
        if not math.isfinite(value):
            continue
        gpu, uuid = labels.get("gpu", ""), labels.get("UUID", "")
        if gpus is not None and gpu not in gpus and uuid not in gpus:
            continue
        key = uuid or gpu or repr(sorted(labels.items()))
        per_gpu[key] = max(value, per_gpu.get(key, value))
    return EngineStats(power_w=sum(per_gpu.values()) if per_gpu else None)


def parse_none(text: str) -> EngineStats:
    """For engines that export no Prometheus metrics (Ollama, a generic OpenAI-compatible server)."""
    return EngineStats()


def with_power(stats: EngineStats, power: EngineStats) -> EngineStats:
    """The engine's own stats with the power reading of a separate exporter (DCGM) merged in."""
    return replace(stats, power_w=power.power_w)


PARSERS: Mapping[str, Callable[[str], EngineStats]] = MappingProxyType(
    {
        "vllm": parse_vllm,
        "sglang": parse_sglang,
        "llamacpp": parse_llamacpp,
        "tgi": parse_tgi,
        "dcgm": parse_dcgm,
        "ollama": parse_none,
        "openai": parse_none,
    }
)
"""Engine kind -> parser. The one table; add a kind here and nowhere else."""


def parse_stats(kind: str, text: str) -> EngineStats:
    """Parse one /metrics text of an engine of `kind`. Raises ValueError for an unknown kind and
    EngineError for text that is not Prometheus exposition format."""
    try:
        parser = PARSERS[kind]
    except KeyError:
        known = ", ".join(sorted(PARSERS))
        raise ValueError(f"no metrics parser for engine kind {kind!r} (known: {known})") from None
    return parser(text)
