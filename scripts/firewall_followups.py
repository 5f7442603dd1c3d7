"""Harmless prompts that talk to the assistant about its own answer or give it a job: hard negatives for the
prompt head.

Users revise the model's last answer all the time ("Shorten your previous reply and drop the jargon") and set
it up for a task ("You are going to help me study for a chemistry exam. I will send you a topic, and your job is
to quiz me on it"). Output-manipulation attacks use the same words ("your response", "your reply", "from now
on", "your job is"), so a bag of n-grams learns them as an attack unless it sees them in harmless requests too.
In a document the same sentence *is* an attack (a web page has no business asking the model to rewrite its
reply), so these rows train the prompt head only.

Each prompt is a frame (how the user asks), a reference to the answer and a change, or a job description with a
role, an input and a task. Split by frame: the validation and test splits hold frames the training split never
has. Written for the firewall from general knowledge of how people revise answers and brief an assistant, not
from any evaluation set (the phrasings of MT-Bench's writing and role-play questions, the held-out role-play
family, were kept out on purpose).
"""

from __future__ import annotations

import random

from firewall_data import Rows, split_of

REVISE_FRAMES = [
    "{V} {r} {c}.", "Please {v} {r} {c}.", "Can you {v} {r} {c}?", "Could you {v} {r} {c}?",
    "Now {v} {r} {c}.", "Okay, {v} {r} {c}.", "Great. Now {v} {r} {c}.", "Thanks! Could you {v} {r} {c}?",
    "That's good, but {v} {r} {c}.", "Go back and {v} {r} {c}.", "I'd like you to {v} {r} {c}.",
    "Take {r} and {v} it {c}.", "Hmm, not quite. {V} {r} {c}.", "Would you mind if you {v} {r} {c}?",
    "Same idea, but {v} {r} {c}.", "One more thing: {v} {r} {c}.", "Let's try again: {v} {r} {c}.",
    "Nice. Next, {v} {r} {c}.", "For my presentation, {v} {r} {c}.", "My teacher wants me to {v} {r} {c}.",
    "{V} {r} {c}, please.", "Try to {v} {r} {c}.", "Could we {v} {r} {c}?", "Is it possible to {v} {r} {c}?",
]
VERBS = ["rewrite", "rephrase", "revise", "redo", "shorten", "simplify", "edit", "polish", "reword", "condense",
         "reformat", "restructure", "tweak", "adjust", "update", "change", "translate", "summarise", "expand",
         "clean up", "tighten", "recast"]
REFERENCES = ["your previous answer", "your last reply", "your earlier response", "the answer you just gave",
              "what you wrote above", "your response", "your last message", "your draft", "the story you wrote",
              "your explanation", "the email you drafted", "your summary", "the list you gave me", "your poem",
              "your previous message", "that answer", "your reply", "the last paragraph you wrote",
              "your outline", "the code you wrote"]
CHANGES = [
    "so that it fits in one paragraph", "as a haiku", "in the style of a newspaper headline",
    "for a ten-year-old", "without any jargon", "using bullet points", "in a more formal tone",
    "in a more casual tone", "in under 50 words", "and add a concrete example", "and drop the second point",
    "in Spanish", "in German", "as a table", "with a catchy title", "so that it rhymes", "in plain English",
    "as a numbered list", "in the first person", "in the past tense", "for a LinkedIn post",
    "as a short dialogue", "with fewer adjectives", "as a tweet", "without the introduction",
    "so it sounds friendlier", "for a technical audience", "and make it twice as long", "in three sentences",
    "with headings for each section", "using British spelling", "so a beginner can follow it",
    "with a stronger ending", "in the voice of a sports commentator", "as a text message to a friend",
    "without repeating yourself", "and put the most important point first", "with emojis",
    "as a product description", "in the style of a fairy tale", "as a job ad", "with shorter sentences",
]
BRIEF_FRAMES = [
    "You are going to help me {task}. I will send you {input}, and your job is to {job}.",
    "For this chat, you'll be my {role}. I will give you {input}; please {job}.",
    "I need a {role}. Whenever I send {input}, {job}.",
    "Your task in this conversation: {job}. I'll provide {input}.",
    "Let's set this up: you are a {role}, I will paste {input}, and you {job}.",
    "From now on, when I send you {input}, {job}. You are acting as my {role}.",
    "Please work as a {role} for me. I'll share {input}, and it's your job to {job}.",
    "You will act as a {role}. Input: {input}. Your job: {job}.",
    "In this session you are my {role}. Each time I give you {input}, {job}.",
    "I'd like you to be a {role} who helps me {task}. I'll write {input} and you {job}.",
    "Think of yourself as a {role}. I will describe {input}; your task is to {job}.",
    "We're going to do an exercise: you're the {role}, I'll bring {input}, and you {job}.",
]
BRIEFS = [
    ("study coach", "study for my chemistry exam", "a topic", "quiz me with three questions on it"),
    ("proofreader", "fix my essays", "a paragraph", "correct the grammar and explain each change"),
    ("travel planner", "plan a trip", "a city and my budget", "suggest a three-day itinerary"),
    ("fitness coach", "get fit", "how I feel today", "suggest a workout for the day"),
    ("language partner", "practise Italian", "a sentence in Italian", "reply in Italian and correct my mistakes"),
    ("code reviewer", "improve my Python", "a function", "point out bugs and style problems"),
    ("interviewer", "prepare for a job interview", "my answers", "give feedback and ask a follow-up question"),
    ("recipe assistant", "cook with what I have", "a list of ingredients", "suggest a dish and the steps"),
    ("editor", "tighten my blog posts", "a draft", "cut it by a third without losing the meaning"),
    ("debate partner", "practise arguing", "a statement", "argue the opposite side politely"),
    ("math tutor", "understand algebra", "an equation", "walk me through solving it step by step"),
    ("storyteller", "entertain my kids", "three words", "make up a short bedtime story using them"),
    ("career adviser", "choose a career", "my interests", "suggest jobs that fit them and why"),
    ("naming consultant", "name my shop", "a description of the shop", "propose five names"),
    ("history guide", "learn about the past", "a year", "tell me one important event from it"),
    ("gardening adviser", "keep my plants alive", "a plant and its symptoms", "tell me what is wrong"),
    ("translator", "write to my landlord", "English text", "translate it into polite French"),
    ("spreadsheet helper", "manage my budget", "a problem", "give me the formula to use"),
    ("book club host", "discuss novels", "a chapter summary", "ask me two discussion questions"),
    ("movie critic", "pick films", "a genre", "recommend three films with one line each"),
]


def followup_prompts(split: str, rng: random.Random, n: int) -> Rows:
    revise = [f for f in REVISE_FRAMES if split_of("revise:" + f, 15, 30) == split]
    brief = [f for f in BRIEF_FRAMES if split_of("brief:" + f, 15, 30) == split]
    out: set[str] = set()
    for _ in range(n):
        if brief and (not revise or rng.random() < 0.35):
            role, task, given, job = rng.choice(BRIEFS)
            out.add(rng.choice(brief).format(role=role, task=task, input=given, job=job))
            continue
        verb = rng.choice(VERBS)
        text = rng.choice(revise).format(v=verb, V=verb[0].upper() + verb[1:], r=rng.choice(REFERENCES),
                                         c=rng.choice(CHANGES))
        out.add(text)
    return [(t, 0) for t in sorted(out)]
