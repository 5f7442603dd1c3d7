"""The firewall's worker queue (security/firewall/screen.py): large texts are read off the event loop, fairly
between tenants, and a job whose caller has gone is never read."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest

from aigrid.security.firewall.injection import InjectionModel
from aigrid.security.firewall.pipeline import Firewall, Screened
from aigrid.security.firewall.screen import Screen
from aigrid.security.firewall.texts import ModelText, Source

BIG = "The quarterly report lists the figures of every branch in the region. " * 60  # ~4,300 characters


class RecordingFirewall(Firewall):
    """The real firewall, recording which tenant's texts it read in which order; its first read waits for
    `release`, so a test can queue jobs behind it."""

    def __init__(self) -> None:
        super().__init__(InjectionModel.load())
        self.order: list[str] = []
        self.started = threading.Event()
        self.release = threading.Event()

    def check_texts(self, tenant: str, texts: Sequence[ModelText]) -> Screened:
        self.started.set()
        self.release.wait(10)
        self.order.append(texts[0].text[:12] + "/" + tenant)
        return super().check_texts(tenant, texts)


def doc(tag: str, chars: int = len(BIG)) -> list[ModelText]:
    return [ModelText(f"{tag:<12}" + BIG[: chars - 12], Source.DOCUMENT, ("documents", 0))]


@pytest.fixture
def firewall() -> RecordingFirewall:
    return RecordingFirewall()


async def wait_started(fw: RecordingFirewall) -> None:
    while not fw.started.is_set():
        await asyncio.sleep(0.001)


async def read_behind_a0(firewall: RecordingFirewall, requests: Sequence[tuple[str, Sequence[ModelText]]],
                         tags: bool = True) -> list[str]:
    """The order the worker reads `requests` (tenant, texts) in, sent in that order while tenant "a"'s document a0
    is being read: each request's first text's tag (or its tenant, `tags` False), a0's first."""
    screen = Screen(firewall)
    try:
        first = asyncio.create_task(screen.check("a", doc("a0")))
        await wait_started(firewall)  # a0 is being read; the others queue behind it
        jobs = [asyncio.create_task(screen.check(tenant, texts)) for tenant, texts in requests]
        await asyncio.sleep(0.01)
        firewall.release.set()
        await asyncio.gather(first, *jobs)
    finally:
        screen.close()
    return [o.split("/")[0].split()[0] if tags else o.split("/")[1] for o in firewall.order]


async def test_a_tenants_backlog_does_not_hold_back_another_tenant(firewall: RecordingFirewall) -> None:
    screen = Screen(firewall)
    try:
        heavy = [asyncio.create_task(screen.check("heavy", doc(f"h{i}", 40_000))) for i in range(5)]
        await wait_started(firewall)  # h0 is being read; h1-h4 wait
        await asyncio.sleep(0.01)
        light = asyncio.create_task(screen.check("light", doc("l0")))
        await asyncio.sleep(0.01)
        firewall.release.set()
        results = await asyncio.gather(*heavy, light)
        assert all(isinstance(r, Screened) and not r.blocked for r in results)
        # first in, first out would read l0 sixth; by characters read it goes as soon as h0 is done
        assert [o.split("/")[0].strip() for o in firewall.order] == ["h0", "l0", "h1", "h2", "h3", "h4"]
    finally:
        screen.close()


async def test_a_tenant_back_from_idle_does_not_jump_ahead_of_the_backlog_it_left(firewall: RecordingFirewall) -> None:
    """Fairness counts from when a tenant became busy again: an idle tenant banks no credit, and a busy one's
    past reading does not starve it behind a newcomer."""
    screen = Screen(firewall)
    firewall.release.set()
    try:
        for i in range(3):  # "early" reads 120,000 characters while nobody else is busy
            await screen.check("early", doc(f"e{i}", 40_000))
        firewall.release.clear()
        firewall.started.clear()
        first = asyncio.create_task(screen.check("new", doc("n0")))
        await wait_started(firewall)
        later = [asyncio.create_task(screen.check("new", doc(f"n{i}"))) for i in (1, 2)]
        await asyncio.sleep(0.01)
        back = asyncio.create_task(screen.check("early", doc("e3")))
        await asyncio.sleep(0.01)
        firewall.release.set()
        await asyncio.gather(first, *later, back)
        # "early" is not made to wait until "new" has read 120,000 characters too: it waits one turn
        assert [o.split("/")[0].strip() for o in firewall.order[3:]] == ["n0", "e3", "n1", "n2"]
    finally:
        screen.close()


async def test_a_request_of_many_tiny_texts_is_charged_for_each_text(firewall: RecordingFirewall) -> None:
    """Reading costs per text as well as per character (screen.PART_CHARS: a system prompt and 9,999 one-character
    parts of digit groups took 8.9 s of the worker, a 20,000-character document about 10 ms). Charged by characters
    only, a tenant's request of 3,000 one-character parts counted as much as another's 3 texts of 1,000 characters,
    and its second such request went before the other's second: now the many-parts tenant has been charged more
    and yields."""
    def tiny(tag: str) -> list[ModelText]:  # 3,000 characters in 2,999 texts
        return [ModelText(tag if j == 0 else "x", Source.USER, ("messages", 0, "content", j, "text"))
                for j in range(2_999)]

    def large(tag: str) -> list[ModelText]:  # 3,000 characters in 3 texts
        return [ModelText((tag + " " + BIG)[:1_000], Source.DOCUMENT, ("documents", j)) for j in range(3)]

    assert sum(len(t.text) for t in tiny("t1")) == sum(len(t.text) for t in large("l1")) == 3_000
    order = await read_behind_a0(firewall, (("tiny", tiny("t1")), ("tiny", tiny("t2")), ("large", large("l1")),
                                            ("large", large("l2"))))
    # by characters: t1, l1, then t2 (level with "large" and sent first), l2
    assert order == ["a0", "t1", "l1", "l2", "t2"]


async def test_more_texts_than_the_bound_are_refused_before_any_is_read(firewall: RecordingFirewall) -> None:
    """One request's texts cost the worker per text, dearest where personal data is read across their seams (a system
    prompt and 9,999 one-character user parts of digit groups 8.8-8.9 s, every other tenant's request queued behind
    them): the choke point reads at most MAX_TOGETHER such texts of one call, another text counting TEXT_CHARS /
    PART_CHARS of one (MAX_OTHERS of them alone), and more is the client's 400 naming the field the bound is passed
    at, none read."""
    from aigrid.errors import InvalidRequest
    from aigrid.security.firewall.screen import MAX_OTHERS, MAX_TOGETHER

    def request(parts: int, documents: int) -> list[ModelText]:  # a system prompt, user parts, then documents
        return ([ModelText("You are a helpful assistant.", Source.SYSTEM, ("messages", 0, "content"))] if parts else []) \
            + [ModelText("x", Source.USER, ("messages", 1, "content", j, "text")) for j in range(parts)] \
            + [ModelText("a note", Source.DOCUMENT, ("documents", j)) for j in range(documents)]

    screen = Screen(firewall)
    firewall.release.set()
    try:
        # MAX_TOGETHER + 1 read together; MAX_TOGETHER and a document; MAX_OTHERS + 1 documents
        for parts, documents, field in ((MAX_TOGETHER, 0, "messages[1]"), (MAX_TOGETHER - 1, 1, "documents"),
                                        (0, MAX_OTHERS + 1, "documents")):
            with pytest.raises(InvalidRequest) as refused:
                await screen.check("t", request(parts, documents))
            assert (refused.value.code, refused.value.param) == ("too_many_texts", field)
            assert refused.value.message.startswith(f"{field}: this request holds ")
            assert f"at most {MAX_TOGETHER:,} such texts, or {MAX_OTHERS:,} others" in refused.value.message
        assert firewall.order == []  # none read
        # at the bound: MAX_TOGETHER - 2 read together and 10 others, then MAX_OTHERS others alone
        for parts, documents in ((MAX_TOGETHER - 3, 10), (0, MAX_OTHERS)):
            assert isinstance(await screen.check("t", request(parts, documents)), Screened)
        assert len(firewall.order) == 2
    finally:
        screen.close()


def agent(steps: int) -> list[ModelText]:
    """An agent's conversation as the gateway reads it (gateway/model_texts.chat_texts): a system prompt and a task,
    then for each tool step the model's short turn, its call's name, arguments' keys and three arguments, and the
    tool's result (about 500 characters): 7 texts a step, one of them (the result) read together with the others'."""
    result = "src/report/figures.py:{}: the team reviewed the delivery schedule for the third quarter\n" * 6
    texts = [ModelText("You are a coding agent. Use the tools given.", Source.SYSTEM, ("messages", 0, "content")),
             ModelText("Find why the nightly report fails and fix it.", Source.USER, ("messages", 1, "content"))]
    for step in range(steps):
        i = 2 + 2 * step
        call = ("messages", i, "tool_calls", 0, "function")
        texts += [ModelText(f"Step {step}: reading the report's code.", Source.ASSISTANT, ("messages", i, "content")),
                  ModelText("read_file", Source.ASSISTANT, (*call, "name")),
                  ModelText("path\nquery\nlimit", Source.ASSISTANT, (*call, "arguments", "keys")),
                  ModelText(f"src/report/figures_{step}.py", Source.ASSISTANT, (*call, "arguments", "path")),
                  ModelText(f"quarter {step}", Source.ASSISTANT, (*call, "arguments", "query")),
                  ModelText(str(step % 50), Source.ASSISTANT, (*call, "arguments", "limit")),
                  ModelText(result.format(*range(step, step + 6)), Source.TOOL_RESULT, ("messages", i + 1, "content"))]
    return texts


async def test_an_agents_conversation_of_a_thousand_tool_steps_is_read(firewall: RecordingFirewall) -> None:
    """An agent's conversation is mostly texts read apart (the model's turns and calls) beside one tool result a step
    read together with the others (review RV1, thirtieth session: 1,000 steps, 7,038 texts, cost 0.53 s of the worker,
    0.075 ms a text): it is read, as OpenAI's API takes 2,048 messages. Until then every text counted as one read
    together, and the bound (4,000 texts) refused it from about 570 steps."""
    texts = agent(1_000)
    assert len(texts) == 7_002
    screen = Screen(firewall)
    firewall.release.set()
    try:
        screened = await screen.check("agent", texts)
        assert not screened.blocked and len(screened.texts) == 7_002 and len(firewall.order) == 1
    finally:
        screen.close()
    from aigrid.security.firewall.screen import MAX_TOGETHER, PART_CHARS, TEXT_CHARS, weights

    weighed = weights(firewall.default, texts)
    assert weighed.count(PART_CHARS) == 1_002 and weighed.count(TEXT_CHARS) == 6_000  # the results, prompt and task
    assert sum(weighed) < MAX_TOGETHER * PART_CHARS  # 55% of the bound: refused from about 1,820 steps


async def test_a_tenant_whose_policy_reads_nothing_is_not_bounded_by_the_firewall(firewall: RecordingFirewall) -> None:
    """The bound is on what the tenant's policy reads: a policy with injection and personal data off reads no text
    (its requests' messages and parts are bounded as JSON before, gateway.schemas.MAX_PARTS, as everyone's), one with
    personal data off reads none across its seams (each counts as a text read apart). Until review RV1 (thirtieth
    session) the bound was counted before the policy was looked at."""
    from aigrid.errors import InvalidRequest
    from aigrid.security.firewall.pipeline import Action, FirewallPolicy
    from aigrid.security.firewall.screen import MAX_OTHERS, MAX_TOGETHER

    firewall.policies["open"] = FirewallPolicy(injection=Action.OFF, pii_input=Action.OFF)
    firewall.policies["no-pii"] = FirewallPolicy(pii_input=Action.OFF)
    parts = [ModelText("You are a helpful assistant.", Source.SYSTEM, ("messages", 0, "content"))] + [
        ModelText("x", Source.USER, ("messages", 1, "content", j, "text")) for j in range(MAX_TOGETHER + 1)]
    documents = [ModelText("a note", Source.DOCUMENT, ("documents", j)) for j in range(MAX_OTHERS + 1)]
    screen = Screen(firewall)
    firewall.release.set()
    try:
        for texts in (parts, documents):
            with pytest.raises(InvalidRequest):
                await screen.check("reads", texts)  # the default policy
            screened = await screen.check("open", texts)
            assert screened.texts == texts and screened.verdicts == []
        assert isinstance(await screen.check("no-pii", parts), Screened)
        with pytest.raises(InvalidRequest):
            await screen.check("no-pii", documents)
        assert [o.split("/")[1] for o in firewall.order] == ["open", "open", "no-pii"]
    finally:
        screen.close()


async def test_a_tools_definition_counts_as_two_other_texts_where_injection_is_read(
        firewall: RecordingFirewall) -> None:
    """A tool's definition is scored twice (as a prompt and as a document, InjectionModel.score_tool): 0.254 ms a
    short one against 0.141 ms a document of the same words (review RV7, thirtieth session: 19,999 client tools of
    distinct names and no description, 20,000 texts, 5.09 s of the worker, past the 3.5 s the bound means). It counts
    TOOL_CHARS (two other texts) where the policy reads injection: 10,000 definitions and a short prompt are refused
    naming `tools`, none read, 9,999 pass the bound; with injection off (personal data still read) it counts as
    another text."""
    from aigrid.errors import InvalidRequest
    from aigrid.security.firewall.pipeline import Action, FirewallPolicy
    from aigrid.security.firewall.screen import MAX_OTHERS, TEXT_CHARS, TOOL_CHARS, check_count, weights

    def request(tools: int) -> list[ModelText]:
        return [ModelText("hi", Source.USER, ("messages", 0, "content"))] + [
            ModelText(f'{{"name": "t{i}"}}', Source.TOOL_DESCRIPTION, ("tools", i, "function")) for i in range(tools)]

    firewall.policies["pii-only"] = FirewallPolicy(injection=Action.OFF)
    assert weights(firewall.default, request(1)) == [TEXT_CHARS, TOOL_CHARS]
    assert weights(firewall.policies["pii-only"], request(1)) == [TEXT_CHARS, TEXT_CHARS]
    screen = Screen(firewall)
    firewall.release.set()
    try:
        with pytest.raises(InvalidRequest) as refused:
            await screen.check("t", request(MAX_OTHERS // 2))
        assert (refused.value.code, refused.value.param) == ("too_many_texts", "tools")
        assert "a tool's definition counts as two" in refused.value.message
        assert firewall.order == []
    finally:
        screen.close()
    assert len(check_count(firewall.default, request(MAX_OTHERS // 2 - 1))) == MAX_OTHERS // 2  # at the bound
    assert len(check_count(firewall.policies["pii-only"], request(MAX_OTHERS - 1))) == MAX_OTHERS


async def test_texts_read_apart_are_charged_less_than_texts_read_together(firewall: RecordingFirewall) -> None:
    """The fair queue charges a request by what reading it costs: TEXT_CHARS for a text read apart (about 0.15 ms at
    most, an agent's calls and turns), PART_CHARS for one read together (up to 0.9 ms). Until review RV1 (thirtieth
    session) every text was charged PART_CHARS, so an agent's request of 100 short texts (1,000 characters, read in at most
    about 15 ms) counted as more than another tenant's 100,000-character document (about 50 ms), and the document's
    tenant's next request went before the agent's."""
    def calls(tag: str) -> list[ModelText]:  # 1,000 characters in 100 texts read apart
        return [ModelText(f"{tag:<10}" if j == 0 else "read_file.", Source.ASSISTANT,
                          ("messages", j, "tool_calls", 0, "function", "name")) for j in range(100)]

    def document(tag: str) -> list[ModelText]:
        return [ModelText((tag + " " + BIG * 25)[:100_000], Source.DOCUMENT, ("documents", 0))]

    order = await read_behind_a0(firewall, (("agent", calls("g1")), ("agent", calls("g2")), ("docs", document("d1")),
                                            ("docs", document("d2"))))
    # charged 41,000 for g1 against 100,400 for d1, g2 goes next (at 2,000 a text g1 was 201,000: d2 went first)
    assert order == ["a0", "g1", "d1", "g2", "d2"]


async def test_a_many_tenant_mix_of_policies_is_read_one_request_each_a_round_cheapest_next(
        firewall: RecordingFirewall) -> None:
    """Five tenants busy at once, each with two requests of another kind under its own policy (review RV7, thirtieth
    session): every tenant's first request is read before any tenant's second (each starts at the same virtual time,
    and each read is charged at least inline_chars), and the seconds go by what the firsts were charged under each
    tenant's policy: "open" (injection and personal data off: its 1,000 texts' characters alone, at least 2,000),
    "agent" (100 texts read apart: 41,000), "docs" (one 100,000-character document: 100,400), "no-pii" (its 1,000
    user parts read apart: 401,028), "parts" (the same read together across their seams: 2,001,028). Charged by
    texts whatever the policy (before S4's weights) open and no-pii came after docs and agent."""
    from aigrid.security.firewall.pipeline import Action, FirewallPolicy

    firewall.policies["open"] = FirewallPolicy(injection=Action.OFF, pii_input=Action.OFF)
    firewall.policies["no-pii"] = FirewallPolicy(pii_input=Action.OFF)

    def parts() -> list[ModelText]:  # a system prompt and 999 one-character user parts
        return [ModelText("You are a helpful assistant.", Source.SYSTEM, ("messages", 0, "content"))] + [
            ModelText("x", Source.USER, ("messages", 1, "content", j, "text")) for j in range(999)]

    def calls() -> list[ModelText]:  # 100 texts of 10 characters, read apart
        return [ModelText("read_file.", Source.ASSISTANT, ("messages", j, "tool_calls", 0, "function", "name"))
                for j in range(100)]

    def document() -> list[ModelText]:
        return [ModelText((BIG * 25)[:100_000], Source.DOCUMENT, ("documents", 0))]

    kinds = {"parts": parts, "agent": calls, "docs": document, "open": parts, "no-pii": parts}
    order = await read_behind_a0(firewall, [(tenant, kinds[tenant]()) for tenant in kinds for _ in range(2)],
                                 tags=False)
    assert order == ["a", "parts", "agent", "docs", "open", "no-pii", "open", "agent", "docs", "no-pii", "parts"]


async def test_a_job_whose_caller_has_gone_is_not_read(firewall: RecordingFirewall) -> None:
    screen = Screen(firewall)
    try:
        first = asyncio.create_task(screen.check("a", doc("a0")))
        await wait_started(firewall)
        gone = asyncio.create_task(screen.check("b", doc("b0")))
        kept = asyncio.create_task(screen.check("c", doc("c0")))
        await asyncio.sleep(0.01)
        gone.cancel()
        await asyncio.sleep(0.01)  # the cancel reaches its job before the worker thread is free to take the next
        firewall.release.set()
        await asyncio.gather(first, kept)
        with pytest.raises(asyncio.CancelledError):
            await gone
        assert [o.split("/")[0].strip() for o in firewall.order] == ["a0", "c0"]
    finally:
        screen.close()


async def test_the_queue_tells_its_backlog_and_each_requests_wait(firewall: RecordingFirewall) -> None:
    """The worker's wait comes before routing, in no TTFT figure: the screen tells the requests waiting (not the
    one being read) at each change, and each request's wait from queued to its read starting on its own clock; a
    request dropped unread (its caller gone) has no wait, and texts read in place neither wait nor count."""
    now = [100.0]
    screen = Screen(firewall, clock=lambda: now[0])
    waiting: list[int] = []
    waits: list[float] = []
    screen.on_waiting, screen.on_wait = waiting.append, waits.append
    try:
        first = asyncio.create_task(screen.check("a", doc("a0")))
        await wait_started(firewall)  # a0 read at once: waited 0
        now[0] = 101.0
        queued = [asyncio.create_task(screen.check(t, doc(f"{t}0"))) for t in ("b", "c", "d")]
        await asyncio.sleep(0.01)
        queued[2].cancel()  # d0's caller gone: out of the queue, unread
        await asyncio.sleep(0.01)
        now[0] = 104.5  # a0 took 3.5 s: b0 and c0 waited that long
        firewall.release.set()
        await asyncio.gather(first, *queued[:2])
        assert waiting == [1, 0, 1, 2, 3, 2, 1, 0]
        assert waits == [0.0, 3.5, 3.5]
        await screen.check("e", [ModelText("hello", Source.USER, ("messages", 0, "content"))])  # read in place
        assert waiting == [1, 0, 1, 2, 3, 2, 1, 0] and waits == [0.0, 3.5, 3.5]
    finally:
        screen.close()


async def test_close_tells_the_backlog_is_gone(firewall: RecordingFirewall) -> None:
    screen = Screen(firewall)
    waiting: list[int] = []
    screen.on_waiting = waiting.append
    first = asyncio.create_task(screen.check("a", doc("a0")))
    await wait_started(firewall)
    rest = [asyncio.create_task(screen.check(t, doc(f"{t}0"))) for t in ("b", "c")]
    await asyncio.sleep(0.01)
    screen.close()
    firewall.release.set()
    await first
    for task in rest:
        with pytest.raises(asyncio.CancelledError):
            await task
    assert waiting[-1] == 0 and max(waiting) == 2


async def test_an_error_while_reading_reaches_the_caller(firewall: RecordingFirewall) -> None:
    screen = Screen(firewall)
    firewall.release.set()

    def broken(tenant: str, texts: Sequence[ModelText]) -> Screened:
        raise ValueError("the model file is damaged")

    firewall.check_texts = broken  # type: ignore[method-assign]
    try:
        with pytest.raises(ValueError, match="damaged"):
            await screen.check("a", doc("a0"))
    finally:
        screen.close()


async def test_close_cancels_the_jobs_still_waiting(firewall: RecordingFirewall) -> None:
    screen = Screen(firewall)
    first = asyncio.create_task(screen.check("a", doc("a0")))
    await wait_started(firewall)
    waiting = asyncio.create_task(screen.check("b", doc("b0")))
    await asyncio.sleep(0.01)
    screen.close()
    firewall.release.set()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert isinstance(await first, Screened)  # the one being read still answers


class Text(str):
    """A str that can be watched with a weak reference."""


async def test_nothing_read_is_kept_and_a_gone_callers_text_leaves_at_once(firewall: RecordingFirewall) -> None:
    """The first version queued on the admission queue's structure, whose expiry heap kept every job (its 4 MiB
    of text, its future) for the gateway's life: 50 documents of 1 MiB were 50 MiB held (a review's finding)."""
    import gc
    import weakref

    screen = Screen(firewall)
    firewall.release.set()
    try:
        async def read_one(i: int) -> weakref.ref[Text]:
            text = Text(f"Report {i}. The quarterly report lists every branch. " * 200)
            await screen.check("a", [ModelText(text, Source.DOCUMENT, ("documents", 0))])
            return weakref.ref(text)

        watched = [await read_one(i) for i in range(20)]
        gc.collect()
        # the last may linger in the idle worker thread's frame until the next job; none accumulates
        assert sum(w() is not None for w in watched) <= 1
        firewall.release.clear()
        firewall.started.clear()
        first = asyncio.create_task(screen.check("a", doc("a0")))
        await wait_started(firewall)
        gone = asyncio.create_task(screen.check("b", doc("b0")))
        await asyncio.sleep(0.01)
        assert "b" in screen._jobs
        gone.cancel()
        await asyncio.sleep(0.01)
        assert "b" not in screen._jobs  # dropped before its turn, not when the turn comes
        firewall.release.set()
        await first
    finally:
        screen.close()


async def test_many_short_texts_are_read_off_the_event_loop() -> None:
    """Personal data is read across a request's texts around each seam (pii.read_together), at a cost that grows with
    the texts' number, not their characters: 2,000 one-character parts of digit groups (under INLINE_CHARS in all)
    held the event loop 1.56 s, read in place. A request of more than INLINE_TEXTS texts goes to the worker thread."""
    from aigrid.security.firewall.screen import INLINE_TEXTS

    class WhereRead(Firewall):
        def __init__(self) -> None:
            super().__init__(InjectionModel.load())
            self.threads: list[str] = []

        def check_texts(self, tenant: str, texts: Sequence[ModelText]) -> Screened:
            self.threads.append(threading.current_thread().name)
            return super().check_texts(tenant, texts)

    def parts(n: int) -> list[ModelText]:
        return [ModelText("1", Source.USER, ("messages", 0, "content", j, "text")) for j in range(n)]

    firewall = WhereRead()
    screen = Screen(firewall)
    try:
        await screen.check("t", parts(INLINE_TEXTS))
        await screen.check("t", parts(INLINE_TEXTS + 1))
        await screen.check("t", parts(2_000))
    finally:
        screen.close()
    here = threading.current_thread().name
    assert firewall.threads[0] == here
    assert all(name.startswith("aigrid-firewall") for name in firewall.threads[1:]), firewall.threads


async def test_personal_datas_runs_are_worked_out_once_for_a_request_read_on_the_worker(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Until the thirty-first session the runs of texts read across their seams (pipeline._runs) were worked out on
    the event loop to weigh the request (read_across) and again on the worker thread (personal_data). Now once, and
    what the worker reads with them is what it read before: a phone number cut across the parts, redacted."""
    import aigrid.security.firewall.pipeline as pipeline
    from aigrid.security.firewall.pipeline import Action, FirewallPolicy

    counted: list[int] = []
    runs_of = pipeline._runs

    def runs(texts: Sequence[ModelText]) -> list[list[int]]:
        counted.append(len(texts))
        return runs_of(texts)

    monkeypatch.setattr(pipeline, "_runs", runs)
    firewall = Firewall(InjectionModel.load(), {"t": FirewallPolicy(pii_input=Action.REDACT)})
    parts = [ModelText(p, Source.USER, ("messages", 0, "content", j, "text"))
             for j, p in enumerate(["call me at +1 415 ", "555 0100 ", *["ok "] * 40])]
    screen = Screen(firewall)
    try:
        got = await screen.check("t", parts)
    finally:
        screen.close()
    assert counted == [len(parts)]
    assert [v.check for v in got.verdicts] == ["pii", "pii"]
    assert "415" not in got.texts[0].text and "0100" not in got.texts[1].text


async def test_a_tenants_many_small_requests_do_not_hold_back_another_tenant(firewall: RecordingFirewall) -> None:
    """Why the queue has no cap on a tenant's jobs (thirty-first session): one tenant's 300 small requests queued
    (17 short texts each: more than INLINE_TEXTS, so each goes to the worker) delay another tenant's request, sent
    after all of them, by one of them at most, as the fair order says (each is charged at least inline_chars). What
    a tenant's jobs hold (their texts) is held by its requests in flight whether queued or not: the gateway's request
    limits bound it, not this queue."""
    small = [ModelText(f"m{i} note {j}", Source.DOCUMENT, ("documents", j)) for i in range(300) for j in range(17)]
    requests = [("many", small[i * 17:(i + 1) * 17]) for i in range(300)] + [("other", doc("o0"))]
    order = await read_behind_a0(firewall, requests)
    assert len(order) == 302 and order.index("o0") <= 2, order[:5]
