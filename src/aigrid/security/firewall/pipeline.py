"""The firewall pipeline: checks on the texts a model reads and on its answers, with a per-tenant action each.

    input:  injection (untrusted sources: user, prompt, tool / MCP results, documents, web pages)
                -> block | flag | off
            (block: scores above the model's block threshold are blocked, those between its flag and
            block thresholds are flagged, so borderline texts pass with a verdict; data sources use the
            model's document head)
            pii (what the client sent)                         -> redact | block | flag | off
    output: pii (whole responses, or streamed through StreamingRedactor) -> redact | flag | off

check_texts never raises: it returns the texts to forward (redacted where the policy says) and the
verdicts (plain data for the audit log); when a check blocked, Screened.raise_if_blocked() raises
InvalidRequest (400, code "firewall_blocked", param naming the field) for the client. It is pure CPU work:
the gateway calls it through the choke point (screen.Screen), which runs large inputs off the event loop.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import accumulate

from aigrid.errors import InvalidRequest
from aigrid.security.firewall.features import STEP, WINDOW
from aigrid.security.firewall.injection import InjectionModel, more_severe, other_readings, pasted_start
from aigrid.security.firewall.pii import PiiMatch, cannot_hold, find_pii, read_together, redact
from aigrid.security.firewall.score_cache import DEFAULT_SIZE, ScoreCache
from aigrid.security.firewall.texts import DATA, FROM_CLIENT, UNTRUSTED, ModelText, Source

SHORT = 100
"""Texts a client wrote shorter than this, following each other, are also read together (Firewall._seams)."""


class Action(StrEnum):
    OFF = "off"
    FLAG = "flag"
    REDACT = "redact"
    BLOCK = "block"


@dataclass(frozen=True, slots=True)
class FirewallPolicy:
    injection: Action = Action.BLOCK
    pii_input: Action = Action.REDACT
    pii_output: Action = Action.REDACT
    tool_descriptions: Action = Action.FLAG
    """The client's tool definitions (Source.TOOL_DESCRIPTION): read like an MCP server's, flagged by default
    (a description is an instruction about its tool by nature: docs/security.md, "Tool descriptions"); not read
    where `injection` is off."""

    @property
    def reads_input(self) -> bool:
        """Whether check_texts reads the texts at all: with injection and personal data in both off, it passes them
        as they are (each at the cost of a loop's turn)."""
        return self.injection != Action.OFF or self.pii_input != Action.OFF


@dataclass(frozen=True, slots=True)
class Verdict:
    check: str
    action: str
    """What was done: flagged, redacted, blocked."""
    detail: str
    score: float | None = None
    where: str | None = None
    """The text it is about: a body field ("messages[1].content", "prompt") or a tool ("tool retrieve")."""
    source: str | None = None
    field: tuple[int | str, ...] | None = None
    """`where`'s field as its parts (ModelText.field), which a front door names in its own form; None for a text
    that is no field's value."""

    def to_dict(self) -> dict[str, object]:
        return {"check": self.check, "action": self.action, "detail": self.detail, "score": self.score,
                "where": self.where, "source": self.source}


@dataclass(slots=True)
class Screened:
    texts: list[ModelText]
    """The texts to forward, in the order given (redacted copies where the policy said so)."""
    verdicts: list[Verdict] = field(default_factory=list)

    @property
    def blocked(self) -> Verdict | None:
        return next((v for v in self.verdicts if v.action == "blocked"), None)

    def raise_if_blocked(self) -> None:
        verdict = self.blocked
        if verdict is not None:
            raise InvalidRequest(f"request blocked by the AI firewall: {verdict.detail}", code="firewall_blocked",
                                 param=verdict.field or verdict.where)


class Firewall:
    def __init__(self, model: InjectionModel, policies: Mapping[str, FirewallPolicy] | None = None,
                 default: FirewallPolicy = FirewallPolicy(), *, cache_size: int = DEFAULT_SIZE) -> None:
        self.model = model
        self.scores = ScoreCache(lambda text, document: model.score(text, document=document), cache_size)
        self.policies = dict(policies or {})
        self.default = default

    def policy(self, tenant: str) -> FirewallPolicy:
        return self.policies.get(tenant, self.default)

    def reads_slowly(self, tenant: str, texts: Sequence[ModelText]) -> bool:
        """Whether scoring `texts` may run a cascade's transformer (cascade.py): with the document cascade, a
        data source or a prompt with a pasted part; with the prompt cascade, a prompt whose n-gram score lies in
        its grey zone and is not already kept for `tenant` (the n-gram head reads it here to know: callers ask
        only about short texts). Such texts are never scored on the event loop."""
        model = self.model
        if model.cascade is None and model.prompt_cascade is None:
            return False
        if any(t.source in UNTRUSTED and t.text and other_readings(t.text) for t in texts):
            return True  # a decoded or look-alike reading is scored too, and may reach either cascade
        if model.cascade is not None and any(
                t.source in DATA or t.source == Source.TOOL_DESCRIPTION
                or (t.source in UNTRUSTED and pasted_start(t.text) is not None) for t in texts):
            return True
        return model.prompt_cascade is not None and any(
            t.source in UNTRUSTED and t.source not in DATA and t.text and not self.scores.known(tenant, t.text, False)
            and model.rereads_prompt(t.text) for t in texts)

    def tool_description(self, tool: str, text: str) -> Verdict | None:
        """The verdict on a tool server's description of one of its tools (with its parameters'), read before
        any model sees it in a tool list (InjectionModel.score_tool): "blocked" where the grid blocks injection
        for its default policy or any tenant (the tool is then withheld from every tenant), else "flagged";
        None when it reads as a description or no policy checks injection."""
        policies = [self.default, *self.policies.values()]
        if not text or all(p.injection == Action.OFF for p in policies):
            return None
        score = self.model.score_tool(text)
        if not score.is_injection:
            return None
        block = score.should_block and any(p.injection == Action.BLOCK for p in policies)
        return Verdict("injection", "blocked" if block else "flagged",
                       f"prompt injection suspected in the description of tool {tool}", round(score.probability, 4),
                       f"tool {tool}", "tool_description")

    def check_texts(self, tenant: str, texts: Sequence[ModelText]) -> Screened:
        """Run the input checks on every text; stops at the first block (the rest pass unchanged). Whether a text
        blocked is asked of its own verdicts only: asking of all of them (`Screened.blocked`) after every text cost
        the square of the texts where each had a verdict (10,000 text parts of "12 ", each flagged as a piece of a
        phone number read across them, held the firewall's worker thread 2-6 s, 0.4 s of it reading them).
        `texts` as WeighedTexts (screen.Screen's) bring their personal data's runs, not worked out again."""
        policy = self.policy(tenant)
        result = Screened(list(texts))
        found = personal_data(texts) if policy.pii_input != Action.OFF else {}
        for i, text in enumerate(texts):
            action = (policy.tool_descriptions if text.source == Source.TOOL_DESCRIPTION and policy.injection != Action.OFF
                      else policy.injection)  # injection off: tool descriptions are not read either
            before = len(result.verdicts)
            if action != Action.OFF and text.source in UNTRUSTED:
                self._injection(tenant, action, text, result.verdicts)
            if found.get(i) and not _blocks(result.verdicts, before):
                result.texts[i] = self._pii_input(policy, texts, i, found[i], result.verdicts)
            if _blocks(result.verdicts, before):
                return result
        if policy.injection != Action.OFF:
            self._seams(tenant, policy.injection, texts, result.verdicts)
        return result

    def _seams(self, tenant: str, action: Action, texts: Sequence[ModelText], out: list[Verdict]) -> None:
        """Short texts a client wrote (user texts, prompts, each under SHORT characters) read together where two
        or more follow each other: a model reads a message's text parts, and a conversation's user turns, as one
        text, and an attack cut into one word per part or per message was read word by word (helper 122: of 12
        attacks the prompt head blocks, 4 still blocked so cut; a piece of a long text is read with it). A run is
        read in windows of the prompt head's size from its start (WINDOW, every STEP), each kept in the score
        cache, so a conversation that grows a turn at a time pays for its new window only; a window is flagged
        only where none of the texts it spans was. Not read together: a short text beside a long one (the
        gateway's own turns beside a summary read as an instruction, 2026-12-05). A completion's list of prompts
        is a request per prompt to the model: each prompt is read with the suffix only, never with another prompt
        (until 2026-12-05 the list was read as one text: words cut into prompts were blocked together, and an
        attack cut between a prompt and the suffix was missed, read in one window with the prompts before it)."""
        batch = [t for t in texts if _a_prompt_of_a_list(t)]
        rest = [t for t in texts if not _a_prompt_of_a_list(t)]
        for requested in ([[p, *rest] for p in batch] if batch else [rest]):
            run: list[ModelText] = []
            for text in [*requested, None]:
                if text is not None and text.source in (Source.USER, Source.PROMPT) and len(text.text) < SHORT:
                    if text.text:  # an empty part between two words neither joins nor breaks the run
                        run.append(text)
                    continue
                if text is not None and text.source not in (Source.USER, Source.PROMPT):
                    continue  # the application's turns and tool results between them: the user's run goes on
                if len(run) > 1 and self._run(tenant, action, run, out):
                    return
                run = []

    def _run(self, tenant: str, action: Action, run: list[ModelText], out: list[Verdict]) -> bool:
        """A run read joined by a space (a word per text reads as a sentence) and, where two texts meet inside a word
        (a letter or digit on either side), also as written, nothing between them: a template that prints the parts
        one after the other shows a model "Ignore" where "Ign" + "ore" was read "Ign ore" (helper 128, 5 Dec 2026:
        scripts/firewall_seams_eval.py, attacks cut inside words 371 of 396 blocked, now 394; harmless pairs of
        turns 15 of 2,790 flagged before and after, none blocked)."""
        seen = {v.where for v in out if v.check == "injection"}
        tight = any(a.text[-1:].isalnum() and b.text[:1].isalnum() for a, b in zip(run, run[1:], strict=False))
        return any(self._read_joined(tenant, action, run, sep, seen, out) for sep in (" ", "")[:1 + tight])

    def _read_joined(self, tenant: str, action: Action, run: list[ModelText], sep: str, seen: set[str | None],
                     out: list[Verdict]) -> bool:
        joined = sep.join(t.text for t in run)
        starts = list(accumulate((len(t.text) + len(sep) for t in run[:-1]), initial=0))
        for lo in range(0, max(1, len(joined) - WINDOW + STEP), STEP):
            hi = min(len(joined), lo + WINDOW)
            spanned = run[bisect_right(starts, lo) - 1:bisect_right(starts, hi - 1)]
            if len(spanned) < 2:
                continue
            score = self.scores.score(tenant, joined[lo:hi], False)
            block = action == Action.BLOCK and score.should_block
            if not score.is_injection or (not block and any(t.where in seen for t in spanned)):
                continue
            out.append(Verdict("injection", "blocked" if block else "flagged",
                               f"prompt injection suspected in {spanned[0].where} to {spanned[-1].where} "
                               f"({spanned[0].source}, read together)", round(score.probability, 4),
                               spanned[0].where, spanned[0].source, spanned[0].field))
            seen.update(t.where for t in spanned)
            if block:
                return True
        return False

    def _injection(self, tenant: str, action: Action, text: ModelText, out: list[Verdict]) -> None:
        if not text.text:
            return
        if text.source == Source.TOOL_DESCRIPTION:  # InjectionModel.score_tool, each reading kept in the cache
            score = more_severe(self.scores.score(tenant, text.text, False), self.scores.score(tenant, text.text, True))
        else:
            score = self.scores.score(tenant, text.text, text.source in DATA)
        if not score.is_injection:
            return
        block = action == Action.BLOCK and score.should_block
        part = (", in the text pasted after the request" if score.pasted else "") + \
            (", in another reading of it (an encoded part decoded, or look-alike letters made Latin)"
             if score.encoded else "")
        out.append(Verdict("injection", "blocked" if block else "flagged",
                           f"prompt injection suspected in {text.where} ({text.source}{part})",
                           round(score.probability, 4), text.where, text.source, text.field))

    def _pii_input(self, policy: FirewallPolicy, texts: Sequence[ModelText], i: int, found: list[PiiMatch],
                   out: list[Verdict]) -> ModelText:
        text = texts[i]
        kinds = ", ".join(sorted({m.kind for m in found}))
        if policy.pii_input == Action.BLOCK:  # once a request: the first block ends the checks
            together = sorted({j for m in found for j in m.pieces} - {i})
            where = f"{text.where} to {texts[together[-1]].where} (read together)" if together else text.where
            out.append(Verdict("pii", "blocked", f"personal data ({kinds}) in {where}", None, text.where, text.source,
                               text.field))
            return text
        action = "redacted" if policy.pii_input == Action.REDACT else "flagged"
        out.append(Verdict("pii", action, f"personal data: {kinds}{_read_with(texts, i, found)}", None, text.where,
                           text.source, text.field))
        if policy.pii_input == Action.REDACT:
            return ModelText(redact(text.text, found), text.source, text.path, text.label)
        return text

    def redacts_output(self, tenant: str) -> bool:
        """Whether the tenant's policy redacts answers (a stream's texts then go through StreamingRedactors)."""
        return self.policy(tenant).pii_output == Action.REDACT


NAMED = 8
"""The most pieces of an item read across texts that a verdict names one by one; past it, the first and the last."""


def _read_with(texts: Sequence[ModelText], i: int, found: list[PiiMatch]) -> str:
    """What a redacted or flagged text's verdict says of the other texts its items were read with: each by name
    where they are few (NAMED), else the first and last and how many pieces. Every piece of an item gets a verdict,
    so naming every piece in each cost the square of the pieces: an item read across 4,000 parts of "12 " wrote
    16 million names (42 s of the worker thread) and an audit record of about 100 MB."""
    pieces = [m.pieces for m in found if m.pieces]
    if not pieces:
        return ""
    if sum(len(p) for p in pieces) <= NAMED:
        together = sorted({j for p in pieces for j in p} - {i})
        return f" (read together with {', '.join(texts[j].where for j in together)})" if together else ""
    first, last = min(p[0] for p in pieces), max(p[-1] for p in pieces)
    return (f" (read together with the texts {texts[first].where} to {texts[last].where}, "
            f"{max(len(p) for p in pieces):,} pieces)")


def _blocks(verdicts: list[Verdict], since: int) -> bool:
    """Whether a verdict from index `since` on blocked."""
    return any(v.action == "blocked" for v in verdicts[since:])


def personal_data(texts: Sequence[ModelText]) -> dict[int, list[PiiMatch]]:
    """The personal data in each text the input policy reads (sent_by_client), by its index in `texts`, an item cut
    across a message's text parts or the client's user turns included: a model reads them as one text, in order
    (the application's and the model's turns between them left out, as Firewall._seams does), so they are read
    joined around each seam as well (pii.read_together), and the pieces an item covers are numbered as in
    `texts` (PiiMatch.pieces). So are the places where a user turn meets the system prompt or a tool result, and
    those meet each other, in the order of the messages (the model's turns between them left out): a template
    prints them one after the other too, and until 2026-12-05 (twenty-second session) a card cut between the
    system prompt and the first user turn, or between a user turn and a tool result, passed every policy. Only
    the text around each seam is read (read_together's window), the seams between two user turns in both orders:
    read in the first only, an item cut between two user turns whose end the first reading ran into the next user
    turn passed, a system prompt or tool result between them in the messages ("+" | "1 415 555 0100" | a system
    " " | "x": "+1 415 555 0100x" in the first reading; R2's review, 2026-12-05). The runs are WeighedTexts.runs
    where `texts` bring them."""
    found = {i: find_pii(t.text) for i, t in enumerate(texts) if sent_by_client(t)}
    for run in texts.runs if isinstance(texts, WeighedTexts) else _runs(texts):
        found.update(zip(run, read_together([texts[i].text for i in run], [found[i] for i in run], ids=run),
                         strict=True))
    return found


def _runs(texts: Sequence[ModelText]) -> list[list[int]]:
    """The runs of texts personal_data reads joined around each seam, by their indexes in `texts`: the user's turns
    (and their text parts), then all the turns (system, user, tool) where they differ; each of two texts or more."""
    # the source first (looked up once): a request's other texts (20,000 documents) cost no call each
    user = Source.USER
    run = [i for i, t in enumerate(texts) if t.source is user and t.text and _a_users_turn(t)]
    turns = [i for i, t in enumerate(texts) if t.source in _TURNS and t.text and _a_turn(t)]
    return [r for r in (run, turns if turns != run else []) if len(r) > 1]


def pii_runs(policy: FirewallPolicy, texts: Sequence[ModelText]) -> list[list[int]]:
    """The runs of `texts` that `policy` reads personal data across (personal_data's), none where it does not read
    personal data."""
    return _runs(texts) if policy.pii_input != Action.OFF else []


class WeighedTexts(list[ModelText]):
    """A request's texts with the runs its policy reads personal data across (pii_runs). The choke point
    (screen.Screen) works them out once, on the event loop, to weigh the request (read_across), and hands the texts
    so to check_texts on its worker thread, where personal_data reads them: until the thirty-first session the worker
    worked them out again (two passes over every text's source and path: 4,000 one-character user parts 2.1-3.5 ms,
    best of 5-7, on 2 cores at load 12; a scratch timing, not kept)."""

    __slots__ = ("runs",)

    def __init__(self, texts: Sequence[ModelText], runs: list[list[int]]) -> None:
        super().__init__(texts)
        self.runs = runs


def read_across(policy: FirewallPolicy, texts: Sequence[ModelText],
                runs: list[list[int]] | None = None) -> frozenset[int]:
    """The indexes of the texts `policy` reads across their seams with others (personal_data's runs, where the policy
    reads personal data): the costly kind of text, whatever its length. Each seam is read in a window of up to 2 x 56
    characters (pii.read_together), twice where a user's text is in both runs, so a system prompt and one-character
    user parts of digit groups cost up to 0.9 ms a text; another text costs its characters and a pass of the
    injection heads, about 0.15 ms where it is short (scripts/bench_screen_parts.py; screen.py bounds and charges
    both). The injection check's reading of short user texts together (Firewall._seams) costs little a text (windows
    of the joined run, each kept in the score cache). `runs`: pii_runs(policy, texts), where the caller has them."""
    return frozenset(i for run in (pii_runs(policy, texts) if runs is None else runs) for i in run)


def _a_turn(text: ModelText) -> bool:
    """A system (developer), user or tool message's content, or one of its text parts: the texts of a chat whose
    meeting places personal_data reads (not the model's own turns, as between two user turns)."""
    path = text.path
    return len(path) > 2 and path[2] == "content" and path[0] == "messages" and text.source in _TURNS


_TURNS = frozenset({Source.SYSTEM, Source.USER, Source.TOOL_RESULT})


def _a_prompt_of_a_list(text: ModelText) -> bool:
    """One prompt of a completion's list of prompts (`prompt[i]`): each is sent to the model as a request of its own."""
    return text.source == Source.PROMPT and len(text.path) == 2 and text.path[0] == "prompt"


def _a_users_turn(text: ModelText) -> bool:
    """A user message's content, or one of its text parts (not a completion's prompts: each of a list is a prompt
    of its own; nor template variables or documents, which a template puts elsewhere)."""
    path = text.path
    return text.source == Source.USER and len(path) > 2 and path[0] == "messages" and path[2] == "content"


def sent_by_client(text: ModelText) -> bool:
    """Whether the personal-data input policy reads `text`: what the client sent (FROM_CLIENT), and a document it
    sent in the request (a chat body's `documents`, Anthropic's document blocks: a document with a path in the
    body; until 2026-12-05 no document was read, so `pii_input: block` passed an SSN in a document block that it
    blocked in the message beside it). Documents the grid retrieves itself have no path."""
    return text.source in FROM_CLIENT or (text.source == Source.DOCUMENT and bool(text.path))


def read_output(text: str) -> tuple[str, list[str]]:
    """A text of an answer read whole under the output policy: the text with each item found redacted, and the kinds
    found (each once, in the order found). One reading of the detectors (find_pii), none for a text that cannot hold
    an item (pii.cannot_hold); until the twenty-eighth session check_output read each text twice where it found an
    item (find_pii, then redact's own find_pii). The one reading of an answer's texts and strings read whole
    (gateway/output_filter.py: OutputReads, under the tenant's `pii_output`); Firewall.check_output, a second door to it
    that no answer went through (whole answers and streams are read by OutputReads), was removed in the twenty-ninth
    session."""
    if cannot_hold(text):
        return text, []
    found = find_pii(text)
    if not found:
        return text, []
    return redact(text, found), list(dict.fromkeys(m.kind for m in found))


def output_verdicts(kinds: Iterable[str], action: Action | str = Action.REDACT) -> list[Verdict]:
    """The verdict on an answer (or one text of it) in which the output policy (`action`: redact or flag) found
    `kinds`: one, naming each kind once, sorted; none where nothing was found."""
    found = sorted(set(kinds))
    if not found:
        return []
    done = "redacted" if action == Action.REDACT else "flagged"
    return [Verdict("pii_output", done, f"personal data: {', '.join(found)}")]
