"""The document head's operating points of scripts/train_firewall.py (`document_threshold`, `--doc-rule`): the
shipped rule (strictest) lets a source of a few dozen clean validation documents set a point at its highest
score; pooled and balanced (docs/security.md, "Tried and not shipped") do not, within a per-source cap."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")  # the `train` extra
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
from train_firewall import document_threshold  # noqa: E402

BIG = np.concatenate([np.linspace(0.01, 0.80, 396), [0.90, 0.91, 0.92, 0.93]])  # 400 documents, 4 above 0.85
SMALL = np.concatenate([np.linspace(0.05, 0.60, 39), [0.97]])  # 40 documents, one clean outlier


def blocked(scores: np.ndarray, t: float) -> int:
    return int(np.sum(scores >= t))


def test_the_shipped_rule_lets_one_document_of_a_small_source_set_the_point() -> None:
    t = document_threshold({"documentation": BIG, "prose": SMALL}, 0.005)
    assert t == pytest.approx(0.97 + 1e-6)
    assert blocked(SMALL, t) == 0 and blocked(BIG, t) == 0


def test_pooled_reads_every_document_together_within_the_cap() -> None:
    scores = {"documentation": BIG, "prose": SMALL}
    t = document_threshold(scores, 0.005, "pooled", cap=0.05)
    # 440 documents: at most 2 at or above the point; the prose outlier (1 of 40, 2.5%) is within the cap
    assert blocked(SMALL, t) + blocked(BIG, t) == 2
    assert blocked(SMALL, t) == 1 and t == pytest.approx(0.92 + 1e-6)
    # a cap below one document of 40 gives the small source back its veto
    assert document_threshold(scores, 0.005, "pooled", cap=0.02) == pytest.approx(0.97 + 1e-6)


def test_balanced_weighs_each_source_the_same_whatever_its_size() -> None:
    scores = {"documentation": BIG, "prose": SMALL}
    # one prose document is 2.5% of its source, 1.25% of the mean of two sources: within 1.6%, not within 1%
    loose = document_threshold(scores, 0.016, "balanced", cap=0.05)
    assert blocked(SMALL, loose) == 1 and blocked(BIG, loose) == 2  # (2.5% + 0.5%) / 2
    assert np.mean([blocked(SMALL, loose) / len(SMALL), blocked(BIG, loose) / len(BIG)]) <= 0.016
    assert document_threshold(scores, 0.01, "balanced", cap=0.05) == pytest.approx(0.97 + 1e-6)
    # pooled at 1%: 4 of the 440 documents, the outlier and three of documentation's (documentation outweighs)
    assert document_threshold(scores, 0.01, "pooled", cap=0.05) < loose


def test_no_point_below_one_half_and_an_unknown_rule_is_refused() -> None:
    low = {"a": np.array([0.1, 0.2]), "b": np.array([0.3])}
    assert document_threshold(low, 0.005, "pooled") == 0.5
    assert document_threshold(low, 0.005, "balanced") == 0.5
    with pytest.raises(ValueError, match="unknown document rule 'loosest'"):
        document_threshold(low, 0.005, "loosest")


@pytest.mark.parametrize("args, says", [
    (["--doc-source-cap", "-1"], "--doc-source-cap: -1.0 is not a share in [0, 1]"),
    (["--doc-rule", "pooled", "--doc-source-cap", "1.5"], "is not a share in [0, 1]"),
    (["--doc-source-cap", "0.1"], "--doc-source-cap is read only with --doc-rule pooled or balanced"),
    (["--doc-source", "0.1"], "--doc-source-cap is read only with --doc-rule pooled or balanced"),  # abbreviated
])
def test_a_document_cap_the_rule_cannot_read_is_refused_naming_it(args: list[str], says: str) -> None:
    # the options are read before any data: none is needed
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "train_firewall.py"), "--garak", "g", "--agentdojo",
                        "a", *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and says in r.stderr and "Traceback" not in r.stderr, r.stderr
