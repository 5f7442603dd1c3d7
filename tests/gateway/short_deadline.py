"""A first-byte deadline short for a test's silent endpoints only and long for every other: a test of
what happens once an attempt is past its deadline, whose other engines must still answer within theirs. One short
deadline for every endpoint left those a margin of the deadline itself (0.1 s, 0.5 s), which a loaded 2-core CI
machine can spend before an in-process engine's first byte."""

from __future__ import annotations

from dataclasses import dataclass

from aigrid.core.types import Candidate
from aigrid.gateway.proxy import FirstByteDeadline

OTHERS_S = 30.0
"""Every other endpoint's deadline: none is reached (their engines answer at once), so the test never waits it."""


@dataclass(frozen=True)
class ShortDeadline(FirstByteDeadline):
    """FirstByteDeadline's own bounds for the attempts of `short`'s endpoints; OTHERS_S for every other's."""

    short: tuple[str, ...] = ()

    def seconds(self, cand: Candidate) -> float:
        return FirstByteDeadline.seconds(self, cand) if cand.endpoint_id in self.short else OTHERS_S

    def whole(self, cand: Candidate, max_tokens: int | None) -> float:
        return FirstByteDeadline.whole(self, cand, max_tokens) if cand.endpoint_id in self.short else OTHERS_S
