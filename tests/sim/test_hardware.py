"""The engine cost model against the measurements it claims (data/engine-perf)."""

import csv

import pytest

from aigrid.sim.hardware import engine_perf
from aigrid.sim.workload import trace_dir

KV = {"llama-3.2-1b": 32768, "llama-3.2-3b": 114688, "llama-3.1-8b": 131072}


def floor_rows() -> list[dict[str, str]]:
    path = trace_dir().parent / "engine-perf" / "h100_floor_steps.csv"
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_decode_steps_match_the_h100_floor_within_20_percent() -> None:
    for r in floor_rows():
        if r["phase"] != "decode":
            continue
        perf = engine_perf("h100", float(r["params_b"]), KV[r["model"]])
        b, ctx = int(r["batch"]), int(r["context"])
        assert perf.step_ms(b, b * ctx) == pytest.approx(float(r["ms"]), rel=0.2), r


def test_long_prefills_match_within_35_percent() -> None:
    for r in floor_rows():
        if r["phase"] == "prefill" and int(r["context"]) >= 2048:
            perf = engine_perf("h100", float(r["params_b"]), KV[r["model"]])
            assert perf.prefill_alone_ms(int(r["context"])) == pytest.approx(float(r["ms"]), rel=0.35), r


def test_step_time_grows_with_batch_and_smaller_hardware_is_slower() -> None:
    h100, l40s = engine_perf("h100", 8.03, 131072), engine_perf("l40s", 8.03, 131072)
    assert h100.step_ms(1, 1024) < h100.step_ms(64, 64 * 1024) < h100.step_ms(256, 256 * 1024)
    assert l40s.w_ms > 3 * h100.w_ms and l40s.prefill_tps < h100.prefill_tps
    assert l40s.kv_capacity_tokens < h100.kv_capacity_tokens
    cpu = engine_perf("cpu", 1.5, 32768)
    assert cpu.prefill_tps < 0.1 * engine_perf("h100", 1.5, 32768).prefill_tps


def test_a_model_too_big_for_the_device_is_refused() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        engine_perf("l40s", 70, 327680)
