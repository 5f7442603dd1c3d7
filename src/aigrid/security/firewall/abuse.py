"""Model-extraction and abuse signals per key, over a sliding window of recent requests.

Signals (each a threshold in AbuseRules):
- volume: more requests in the window than a person or an ordinary app would send;
- diversity: almost every prompt is new (a crawl of the input space, not a product's repeated calls);
- logprobs: most requests ask for top logprobs or set logit_bias (distillation and logit sweeps);
- enumeration: many temperature-0 requests sharing one prompt prefix with varying endings (a systematic
  sweep of a template to map the model's outputs).
One signal -> flag; two or more -> throttle (the gateway answers 429). The clock is injected.

A request is reduced to an AbuseDigest (two 64-bit hashes and two flags, no text) before it is counted;
`observe_digest` counts one that another process computed, so the workers' hub runs this same monitor over
every worker's digests (abuse_shared.py).
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

from aigrid.errors import RateLimited


class AbuseAction(StrEnum):
    ALLOW = "allow"
    FLAG = "flag"
    THROTTLE = "throttle"


@dataclass(frozen=True, slots=True)
class RequestTraits:
    prompt: str
    temperature: float | None = None
    logprobs: bool = False
    top_logprobs: int = 0
    logit_bias: bool = False


@dataclass(frozen=True, slots=True)
class AbuseRules:
    window_s: float = 300.0
    min_requests: int = 50
    """No signal below this many requests in the window (except volume)."""
    max_requests: int = 1500
    diversity: float = 0.97
    logprobs_share: float = 0.5
    enumeration_share: float = 0.6
    prefix_chars: int = 32
    max_keys: int = 50_000


SEVERITY = {AbuseAction.ALLOW: 0, AbuseAction.FLAG: 1, AbuseAction.THROTTLE: 2}


@dataclass(frozen=True, slots=True)
class AbuseVerdict:
    action: AbuseAction
    signals: tuple[str, ...]
    requests_in_window: int
    shared: bool = False
    """Counted over every worker's requests of the key (the hub's verdict), not this process's alone."""

    def raise_if_throttled(self, retry_after_s: int = 60) -> None:
        """The client-facing answer to THROTTLE: 429 with Retry-After (FLAG only goes to the audit log)."""
        if self.action == AbuseAction.THROTTLE:
            raise RateLimited(f"request rate limited by abuse protection ({', '.join(self.signals)})",
                              code="abuse_throttled", headers={"Retry-After": str(retry_after_s)})

    def to_dict(self) -> dict[str, object]:
        scope = "all workers" if self.shared else "this process"
        return {"check": "abuse", "action": str(self.action), "detail": ", ".join(self.signals),
                "score": None, "message": f"{self.requests_in_window} requests in the window ({scope})"}


@dataclass(frozen=True, slots=True)
class AbuseDigest:
    """What the signals need of one request, and nothing else (no text): hashes of the prompt and of its
    first `prefix_chars` characters, temperature 0 or not, top logprobs or logit bias asked or not."""

    prompt: str
    prefix: str
    greedy: bool
    probing: bool


def digest(t: RequestTraits, prefix_chars: int) -> AbuseDigest:
    prompt = hashlib.blake2b(t.prompt.encode("utf-8", "replace"), digest_size=8).hexdigest()
    prefix = hashlib.blake2b(t.prompt[:prefix_chars].encode("utf-8", "replace"), digest_size=8).hexdigest()
    greedy = t.temperature is not None and t.temperature <= 0.01
    return AbuseDigest(prompt, prefix, greedy, (t.logprobs and t.top_logprobs >= 5) or t.logit_bias)


class _Window:
    """One key's recent requests, with the counts the signals need kept up to date on push and pop, so a
    verdict costs O(1) per request instead of a rescan of the whole window."""

    def __init__(self) -> None:
        self.items: deque[tuple[float, AbuseDigest]] = deque()
        """(time counted, digest), oldest first."""
        self.prompts: Counter[str] = Counter()
        self.probing = 0
        self.greedy = 0
        self.greedy_prefixes: Counter[str] = Counter()
        self.greedy_variants: dict[str, Counter[str]] = {}
        """Per greedy prefix: its distinct prompts (the enumeration signal's variants), counted."""
        self.prefixes_by_count: dict[int, dict[str, None]] = {}
        """The greedy prefixes per count (each count's an ordered set), and `top`, the highest count: the
        enumeration signal's most repeated prefix in O(1) (Counter.most_common(1) scanned every prefix of the
        window, up to 3,000, on each request of a key sending mostly greedy requests)."""
        self.top = 0

    def push(self, at: float, s: AbuseDigest) -> None:
        self.items.append((at, s))
        self.prompts[s.prompt] += 1
        self.probing += s.probing
        if s.greedy:
            self.greedy += 1
            count = self.greedy_prefixes[s.prefix] = self.greedy_prefixes[s.prefix] + 1
            self._move(s.prefix, count - 1, count)
            self.top = max(self.top, count)
            self.greedy_variants.setdefault(s.prefix, Counter())[s.prompt] += 1

    def pop(self) -> None:
        s = self.items.popleft()[1]
        self.prompts[s.prompt] -= 1
        if not self.prompts[s.prompt]:
            del self.prompts[s.prompt]
        self.probing -= s.probing
        if s.greedy:
            self.greedy -= 1
            count = self.greedy_prefixes[s.prefix] = self.greedy_prefixes[s.prefix] - 1
            if not count:
                del self.greedy_prefixes[s.prefix]
            self._move(s.prefix, count + 1, count)
            if self.top == count + 1 and self.top not in self.prefixes_by_count:
                self.top = count  # it held the top alone: one less now (0 when it was the last prefix)
            variants = self.greedy_variants[s.prefix]
            variants[s.prompt] -= 1
            if not variants[s.prompt]:
                del variants[s.prompt]
            if not variants:
                del self.greedy_variants[s.prefix]

    def _move(self, prefix: str, was: int, now: int) -> None:
        if was:
            bucket = self.prefixes_by_count[was]
            del bucket[prefix]
            if not bucket:
                del self.prefixes_by_count[was]
        if now:
            self.prefixes_by_count.setdefault(now, {})[prefix] = None


class AbuseMonitor:
    """Keeps a bounded history per key; observe() is called once per request, after authentication."""

    def __init__(self, rules: AbuseRules = AbuseRules(), clock: Callable[[], float] = time.monotonic) -> None:
        self.rules = rules
        self.clock = clock
        self._history: OrderedDict[str, _Window] = OrderedDict()

    def observe(self, key_id: str, traits: RequestTraits) -> AbuseVerdict:
        return self.observe_digest(key_id, digest(traits, self.rules.prefix_chars))

    def observe_digest(self, key_id: str, d: AbuseDigest) -> AbuseVerdict:
        """Count one request and answer the key's verdict with it."""
        return self._verdict(self._count(key_id, d, self.clock()))

    def count_all(self, digests: Iterable[tuple[str, AbuseDigest]]) -> set[str]:
        """Count a batch of (key, digest) at the current time, without a verdict each; the keys it touched."""
        now, keys = self.clock(), set()
        for key_id, d in digests:
            self._count(key_id, d, now)
            keys.add(key_id)
        return keys

    def verdict(self, key_id: str) -> AbuseVerdict:
        """The key's verdict now (requests older than the window no longer count), without counting one."""
        window = self._history.get(key_id)
        if window is None:
            return AbuseVerdict(AbuseAction.ALLOW, (), 0)
        self._expire(window, self.clock())
        return self._verdict(window)

    def _count(self, key_id: str, d: AbuseDigest, now: float) -> _Window:
        window = self._history.pop(key_id, None) or _Window()
        self._history[key_id] = window
        if len(self._history) > self.rules.max_keys:
            self._history.popitem(last=False)
        self._expire(window, now)
        window.push(now, d)
        if len(window.items) > self.rules.max_requests * 2:
            window.pop()
        return window

    def _expire(self, window: _Window, now: float) -> None:
        while window.items and window.items[0][0] <= now - self.rules.window_s:
            window.pop()

    def _verdict(self, window: _Window) -> AbuseVerdict:
        signals = self._signals(window)
        action = (AbuseAction.THROTTLE if len(signals) >= 2 else
                  AbuseAction.FLAG if signals else AbuseAction.ALLOW)
        return AbuseVerdict(action, signals, len(window.items))

    def _signals(self, w: _Window) -> tuple[str, ...]:
        r, n = self.rules, len(w.items)
        out: list[str] = []
        if n > r.max_requests:
            out.append("volume")
        if n < r.min_requests:
            return tuple(out)
        if len(w.prompts) / n >= r.diversity:
            out.append("diversity")
        if w.probing / n >= r.logprobs_share:
            out.append("logprobs")
        if w.greedy / n >= r.enumeration_share:  # only then can one greedy prefix reach the share
            count = w.top  # the most repeated greedy prefix's (or prefixes': a share of 0.5 or less can tie)
            if count / n >= r.enumeration_share and any(len(w.greedy_variants[prefix]) >= 0.8 * count
                                                        for prefix in w.prefixes_by_count[count]):
                out.append("enumeration")
        return tuple(out)
