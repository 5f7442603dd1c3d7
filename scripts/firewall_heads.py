"""What each head of the injection classifier learns from, and what its operating points are chosen on.

prompt head (what a client writes): the train splits of s-labs, neuralchemy and yanismiraoui; hand-written
harmless prompts with trigger words and role-play openings (train frames only); short turns and system
prompts from templates (scripts/firewall_short.py); revisions of the last answer and task briefs
(scripts/firewall_followups.py); ordinary questions (MMLU, GSM8K, MT-Bench except its writing and role-play
questions); and documents pasted into a prompt, clean and with attacks hidden in them.

document head (text the model reads as data, scored in windows and sentences): clean windows and sentences of
e-mails and code threads (BIPIA, train split), technical documentation and code (the standard library's
docstrings and source, train modules), prose (garak's book
passages, train split), tool outputs (AgentDojo's workspace suite) and correspondence, against the same
contexts with an instruction to the assistant hidden in them: BIPIA attacks of the train categories, the train
attacks of the prompt sets, hand-written instructions addressed to the assistant (train frames), agent actions
and composed instructions to the model (scripts/firewall_addressed.py); cut as the head reads them
(scripts/firewall_spans.py). What users type (ordinary questions, trigger-word and role-play prompts, short
turns, revisions of the last answer) is left out: a request found inside data is an
instruction to the model there (BIPIA counts "What is the capital of Brazil?" in an e-mail as an attack),
yet a forum thread or an FAQ quotes questions without talking to the model.

Validation: the validation splits of the same sources (prompts; whole documents for the document head).
"""

from __future__ import annotations

import random
from pathlib import Path

from firewall_actions import agent_actions
from firewall_addressed import addressed_instructions
from firewall_data import (
    Corpus,
    Rows,
    attacked_pairs,
    benign_windows,
    documents_with_attacks,
    embed,
    indirect_instructions,
    pseudo_documents,
    role_prompts,
    split_of,
    trigger_prompts,
)
from firewall_documents import agentdojo_clean, book_passages, stdlib_documents
from firewall_followups import followup_prompts
from firewall_letters import letters
from firewall_roleplay import roleplay_prompts
from firewall_short import short_prompts, words_of
from firewall_spans import Geometry, attacked_spans, clean_spans

SHORT_TEST = Path(__file__).resolve().parent.parent / "tests/security/short_prompts.txt"


def held_out_short() -> frozenset[str]:
    """The words of each line of the short-prompt regression test: no text with the same words (in any casing
    or punctuation) is generated as training or validation data."""
    lines = SHORT_TEST.read_text(encoding="utf-8").splitlines()  # missing: fail, never train on the held-out lines
    return frozenset(words_of(t) for t in lines if t.strip() and not t.startswith("#"))


# What a user writes around a document pasted into a prompt (split by frame).
PASTE_FRAMES = [
    "Summarise this email for me:", "Can you summarize the following message?", "TL;DR of this please:",
    "What does this email want from me?", "Translate this into German:", "Please proofread the text below.",
    "Extract the dates and amounts from this:", "Here is a thread from our forum, what is the fix?",
    "Reply to this email politely:", "Is this message a scam?", "Give me the key points:",
    "Rewrite this in plain English:", "Classify the sentiment of this review:", "Answer the question in the text.",
    "Summarize the document below in three bullet points.", "Who sent this and what do they need?",
    "Make this shorter:", "Draft a response to the following:", "What is the total amount due here?",
    "Check this code and explain the error:",
]


def pasted(split: str, docs: list[str], rng: random.Random) -> list[str]:
    """Documents as a user pastes them into a prompt: a request of the split's frames, then the document."""
    frames = [f for f in PASTE_FRAMES if split_of("paste:" + f, 15, 30) == split]
    return [f"{rng.choice(frames)}\n\n{d}" for d in docs] if frames else []


LAYOUTS = ("{frame} {doc}", "{frame}\n{doc}", "{doc}\n\n{frame}", '{frame}\n"""\n{doc}\n"""', "{frame}\n```\n{doc}\n```")
"""How else users paste: after the request on its line, on the next line, before the request, quoted, fenced."""


def pasted_layouts(split: str, docs: list[str], rng: random.Random) -> list[str]:
    """`pasted`, in the other LAYOUTS (one per document, in turn)."""
    frames = [f for f in PASTE_FRAMES if split_of("paste:" + f, 15, 30) == split]
    return [LAYOUTS[i % len(LAYOUTS)].format(frame=rng.choice(frames), doc=d) for i, d in enumerate(docs)] \
        if frames else []


def _attacks(c: Corpus, split: str) -> list[str]:
    return [t for t, y in c.slabs[split] + c.neural_rows(split) + c.yanis[split] if y == 1]


def prompt_rows(c: Corpus, rng: random.Random) -> dict[str, Rows]:
    attacks = _attacks(c, "train")
    benign = [t for t, y in c.slabs["train"] + c.neural_rows("train") if y == 0] + [t for t, _ in c.ordinary["train"]]
    contexts = c.emails["train"] + c.code["train"] + pseudo_documents(benign, rng, 400)
    return {
        "s-labs": c.slabs["train"], "neuralchemy": c.neural_rows("train"), "yanismiraoui": c.yanis["train"],
        "trigger words": trigger_prompts("train"), "role-play": role_prompts("train", rng),
        "role-play and fiction, composed": roleplay_prompts("train", rng, 2000),
        "short turns and system prompts": short_prompts("train", held_out_short()),
        "revisions of the last answer and task briefs": followup_prompts("train", random.Random(16), 2000),
        "ordinary": rng.sample(c.ordinary["train"], min(4000, len(c.ordinary["train"]))),
        "documents, clean": benign_windows(contexts, rng, 4000),
        "documents, BIPIA attacks": documents_with_attacks(contexts, c.bipia_attacks["train"], rng, 1500, True),
        "documents, other attacks": documents_with_attacks(contexts, attacks, rng, 1500, True),
        "documents, hand-written indirect": documents_with_attacks(contexts, indirect_instructions("train"), rng,
                                                                   1500, True),
        "documents, hand-written agent actions": documents_with_attacks(contexts, agent_actions("train", rng, 2000),
                                                                        rng, 1500, True),
        # users paste code, tracebacks and documentation: the attack sets' code payloads must not make all code
        # look like an attack
        "code and documentation": [(t[:600], 0) for t in rng.sample(stdlib_documents("train"), 2000)],
    }


KIND = {"trigger words": "trigger words", "role-play": "role-play and fiction",
        "role-play and fiction, composed": "role-play and fiction",
        "revisions of the last answer and task briefs": "role-play and fiction"}
"""The issue's kind of harmless prompt each harmless validation source is of; every other source (s-labs' and
neuralchemy's harmless prompts, short turns, ordinary questions): "ordinary"."""
KIND_TARGET = {"trigger words": 0.03, "role-play and fiction": 0.05, "ordinary": 0.01}
"""The issue's false-positive target of each kind: at most 3% of harmless prompts with trigger words, 5% of
role-play and fiction, 1% of ordinary prompts."""


def kind_of(source: str) -> str:
    return KIND.get(source, "ordinary")


def prompt_validation(c: Corpus, rng: random.Random) -> Rows:
    return [row for rows in prompt_validation_sets(c, rng).values() for row in rows]


def prompt_validation_sets(c: Corpus, rng: random.Random) -> dict[str, Rows]:
    """The prompt head's validation prompts by source (prompt_validation: all of them, in this order)."""
    return {
        "s-labs": c.slabs["validation"], "neuralchemy": c.neural_rows("validation"),
        "yanismiraoui": c.yanis["validation"], "trigger words": trigger_prompts("validation"),
        "role-play": role_prompts("validation", rng), "role-play and fiction, composed": roleplay_prompts(
            "validation", rng, 300),
        "short turns and system prompts": short_prompts("validation", held_out_short()),
        "revisions of the last answer and task briefs": followup_prompts("validation", random.Random(17), 300),
        "ordinary": rng.sample(c.ordinary["validation"], min(1500, len(c.ordinary["validation"])))}


def _contexts(c: Corpus, garak: Path, agentdojo: Path, split: str, rng: random.Random) -> dict[str, list[str]]:
    return {"e-mails": c.emails[split], "code threads": c.code[split], "documentation": stdlib_documents(split),
            "prose": book_passages(garak, split), "tool outputs": agentdojo_clean(agentdojo, split)}


def every_attack(contexts: list[str], attacks: list[str], rng: random.Random) -> list[tuple[str, str]]:
    """(document, attack) for each attack once, hidden at a random place of a random context (attacked_pairs draws
    attacks with replacement: 1,500 draws of the 8,119 train attacks see about 1,400 of them)."""
    return [(embed(rng.choice(contexts), attack, rng.choice(("start", "middle", "end"))), attack)
            for attack in attacks] if contexts else []


def document_rows(c: Corpus, garak: Path, agentdojo: Path, rng: random.Random, geometry: Geometry,
                  more_prose: int = 0, all_attacks: bool = False) -> dict[str, Rows]:
    """Spans of clean documents of every source, and spans of documents with an attack hidden in them, cut as
    the head reads them (scripts/firewall_spans.py). With `all_attacks` (not shipped, docs/security.md "Tried and
    not shipped"), every train attack of the prompt sets once more, each in a document of its own."""
    sources = _contexts(c, garak, agentdojo, "train", rng)
    sources["correspondence"] = letters("train", rng, 600)  # training only: a few sentences make many letters
    contexts = [t for texts in sources.values() for t in texts]
    out = {f"clean {name}": clean_spans(texts, geometry, rng, n)
           for (name, texts), n in zip(sources.items(), (1500, 1500, 3000, 1500, 1500, 3000), strict=True)}
    attacks = {
        "BIPIA attacks": c.bipia_attacks["train"], "other attacks": _attacks(c, "train"),
        "hand-written indirect": indirect_instructions("train"),
        "hand-written agent actions": agent_actions("train", rng, 3000),
        "composed instructions to the model": addressed_instructions("train", random.Random(18), 3000),
    }
    out.update({name: attacked_spans(attacked_pairs(contexts, texts, rng, 1500), geometry, rng)
                for name, texts in attacks.items()})
    if more_prose:  # a generator of its own: the other sets stay as they were
        out["clean prose, more"] = clean_spans(sources["prose"], geometry, random.Random(22), more_prose)
    if all_attacks:  # a generator of its own: the other sets stay as they were
        every = random.Random(23)
        out["other attacks, every one"] = attacked_spans(every_attack(contexts, attacks["other attacks"], every),
                                                         geometry, every)
    return out


def document_validation(c: Corpus, garak: Path, agentdojo: Path, rng: random.Random,
                        ) -> tuple[dict[str, list[str]], Rows]:
    """(clean documents by source, attacked documents) of the validation split."""
    sources = _contexts(c, garak, agentdojo, "validation", rng)
    contexts = [t for texts in sources.values() for t in texts]
    return sources, (documents_with_attacks(contexts, c.bipia_attacks["validation"], rng, 300, False)
            + documents_with_attacks(contexts, _attacks(c, "validation"), rng, 300, False)
            + documents_with_attacks(contexts, indirect_instructions("validation"), rng, 300, False)
            + documents_with_attacks(contexts, agent_actions("validation", rng, 300), rng, 300, False)
            + documents_with_attacks(contexts, addressed_instructions("validation", random.Random(19), 300),
                                     random.Random(20), 300, False))
