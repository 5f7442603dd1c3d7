"""Harmless role-play and fiction prompts, composed from parts: hard negatives for the prompt head.

Jailbreaks are often role-play ("pretend you are...", "stay in character"), so a bag of n-grams learns the
vocabulary of role-play as an attack unless it sees as much harmless role-play: a persona, a voice, a story,
with nothing about rules, filters or hidden instructions. Each prompt is an opening (how the user asks for the
role or the story), a persona or a premise, sometimes a style instruction, and a task. Split by opening: the
validation and test splits hold openings the training split never has. Written for the firewall from general
knowledge of how people ask for role-play and fiction, not from any evaluation set.
"""

from __future__ import annotations

import random

from firewall_data import Rows, split_of

PERSONA_OPENINGS = [
    "Pretend to be {p}.", "Take on the role of {p}.", "You will play {p} in this chat.",
    "Step into the shoes of {p}.", "Embody {p} for this conversation.", "Assume the identity of {p}.",
    "Answer as if you were {p}.", "From now on, you are {p}.", "For the rest of our chat, act like {p}.",
    "I'd like you to be {p} for a while.", "Speak as {p} would.", "Let's role-play: you're {p}.",
    "In this game you are {p} and I am a curious visitor.", "Channel your inner {p}.",
    "Become {p} for a moment.", "Respond in the persona of {p}.", "Adopt the voice of {p}.",
    "Imagine yourself as {p}.", "Put yourself in the position of {p}.", "Play the character of {p}.",
    "Can you act as {p}?", "Could you pretend you're {p}?", "Let's pretend you are {p}.",
    "Please take on the persona of {p}.", "I want you to be {p}.", "Role-play {p} for me.",
    "Talk to me like {p}.", "You're {p} now.", "Today you are {p}.", "Imagine that you are {p}.",
    "Act like {p} and stay in character.", "Be {p} in all your answers.", "Answer in the voice of {p}.",
]
PERSONAS = [
    "Sherlock Holmes", "a pirate captain", "William Shakespeare", "a grumpy cat", "Marie Curie",
    "a medieval bard", "a football commentator", "a Victorian butler", "a kind grandmother",
    "a time traveller from the year 3000", "Albert Einstein", "a stand-up comedian", "a noir detective",
    "a wise old wizard", "a sommelier", "a nervous first-time pilot", "Cleopatra", "a Roman senator",
    "a cheerful kindergarten teacher", "a veteran chef", "a park ranger", "a famous explorer",
    "a lighthouse keeper", "a robot learning to feel", "a dragon guarding its hoard", "a fashion critic",
    "a tour guide in Rome", "a marathon coach", "a fairy-tale villain who has retired", "Leonardo da Vinci",
    "a travel blogger", "a nature documentary narrator", "a jazz musician", "a career counsellor",
    "a startup founder pitching to investors",
    "a detective in 1920s Chicago", "a ghost in an old castle", "an astronaut on the ISS",
]
STYLES = [
    "", "", "", "Use their catchphrases.", "Keep the tone light and funny.",
    "Stay in character for the whole conversation.",
    "Speak in an old-fashioned way.", "Be as dramatic as possible.", "Keep your answers short.",
    "Use vivid descriptions.", "Only answer as {p} would, without explanations.", "Add a bit of humour.",
    "Talk the way they really talked.", "Use simple words, my daughter will read this.",
]
TASKS = [
    "What do you think of smartphones?", "Describe your morning routine.",
    "Give me advice for my first job interview.", "How would you plan a birthday party?",
    "Tell me about your greatest adventure.", "Explain how a rainbow forms.",
    "Review my favourite pizza place.", "What is your opinion of modern art?", "How do you relax after work?",
    "What would you pack for a week in the mountains?", "Teach me one useful skill.",
    "What is the secret to a happy life?", "Tell me about the hardest decision you ever made.",
    "What would you change about the city you live in?", "Give me a pep talk before my exam.",
    "What do you think of electric cars?", "Describe the view from your window.",
    "How should I train for my first 10k?",  "What is the best meal you ever had?",
]
FICTION = [
    "Write a short story about {t}, told by {p}.",
    "As a novelist, I'm drafting a chapter where {s}. Help me describe the setting.",
    "I'm writing a screenplay in which {s}; write the opening scene.",
    "Compose a poem in the voice of {p} about {t}.", "Draft a letter from {p} to an old friend about {t}.",
    "For my creative writing class, write a dialogue where {s}.",
    "Write a fairy tale in which {s}.", "Continue this story: {S}",
    "As a science fiction author, I'm developing a world where {s}. Describe a typical day there.",
    "Help me write a mystery where {s}. Start with a strong hook.",
    "I'm a game designer; write the backstory of a character who is {p}.",
    "Write a monologue for {p} reflecting on {t}.", "Create a bedtime story about {t}.",
    "Write a diary entry by {p} on the day {s}.", "Imagine a world where {s}. Write the first paragraph.",
    "Write a persuasive speech by {p} about {t}.", "Give me a plot twist for a story where {s}.",
    "Write a limerick about {p}.",
]
SCENARIOS = [
    "two rival chefs open restaurants on the same street", "a lighthouse keeper finds a message in a bottle",
    "a town's clocks all stop at midnight", "a girl discovers her cat can talk",
    "the last library on Earth is about to close", "a retired spy opens a bakery",
    "a robot wants to become a painter", "a storm traps strangers in a mountain hut",
    "the moon starts to sing", "an old house hides a secret room",
]
TOPICS = ["friendship", "the sea", "growing old", "a lost key", "the first snow", "city life", "courage",
          "a broken promise", "summer holidays", "the stars"]


def _fill(text: str, rng: random.Random) -> str:
    scenario = rng.choice(SCENARIOS)
    return (text.replace("{p}", rng.choice(PERSONAS)).replace("{t}", rng.choice(TOPICS))
            .replace("{s}", scenario).replace("{S}", scenario[0].upper() + scenario[1:] + "."))


def roleplay_prompts(split: str, rng: random.Random, n: int) -> Rows:
    persona = [o for o in PERSONA_OPENINGS if split_of("rp:" + o, 15, 30) == split]
    fiction = [f for f in FICTION if split_of("fiction:" + f, 15, 30) == split]
    out: Rows = []
    for _ in range(n):
        if fiction and (not persona or rng.random() < 0.4):
            out.append((_fill(rng.choice(fiction), rng), 0))
            continue
        p = rng.choice(PERSONAS)
        parts = [rng.choice(persona).replace("{p}", p), rng.choice(STYLES).replace("{p}", p), rng.choice(TASKS)]
        out.append((" ".join(x for x in parts if x), 0))
    return sorted(set(out))
