"""Short harmless texts for the injection classifier: greetings, small talk, system prompts and short task
requests (issue 12 follow-up). Hard negatives for scripts/train_firewall.py, held-out rows for
scripts/eval_firewall.py.
"""

from __future__ import annotations

import re

from firewall_data import Rows, split_of

# Short conversational turns and system prompts (hard negatives: a few n-grams give a short text an extreme
# score, and the attack sets are full of short "you are ..." and "tell me ..." lines). Split by the filled-in
# text, not by frame (there are too few frames): the test split holds other fillers of the same frames.
# tests/security/short_prompts.txt is the held-out list, written separately, and no line of it is ever
# generated here (short_prompts() drops them).
SHORT_FRAMES: dict[str, list[str]] = {
    "{}": ["hi", "hello", "hey", "hey you", "good morning", "good afternoon", "good evening", "good night",
           "hiya", "howdy", "greetings", "morning", "hello again", "hi again", "yo", "hey there, friend",
           "thanks", "thank you so much", "cheers", "many thanks", "ok", "okay, got it", "great, thanks",
           "bye", "see you later", "talk soon", "have a nice day", "sounds good", "perfect", "never mind",
           "sorry, wrong chat", "no worries", "yes please", "no thanks", "sure", "go on", "I see",
           "that is wrong", "that was helpful", "wow", "interesting", "lol", "good job", "well done",
           "what?", "why?", "really?", "huh?", "and then?", "ok cool"],
    "how are {}": ["you", "you today", "you doing", "you feeling", "things", "you this morning",
                   "you holding up", "things going", "you, my friend", "you, assistant"],
    "who {}": ["are you", "made you", "built you", "created you", "trained you", "am I talking to",
               "is speaking", "runs this service", "is this", "owns you"],
    "what {}": ["are you", "is your name", "should I call you", "do you do", "can you do", "are you good at",
                "languages do you speak", "model is this", "version are you", "day is it today",
                "are you up to", "do you think", "do you know about cooking", "is your favourite colour",
                "are your hobbies", "are you made of", "is going on"],
    "are you {}": ["there", "awake", "online", "busy", "a bot", "an AI", "a human", "real", "alive",
                   "sentient", "free today", "ChatGPT", "able to help me", "sure", "still there", "okay",
                   "smart", "happy", "listening", "ready"],
    "do you {}": ["like music", "have a name", "remember me", "know me", "dream", "sleep", "get tired",
                  "have friends", "speak French", "understand Spanish", "like cats", "know any jokes",
                  "have opinions", "learn from our chats", "have access to the internet"],
    "can you {}": ["help me", "hear me", "see this", "read this", "speak Italian", "count to ten",
                   "write code", "draw", "sing", "remember things", "do math", "explain that again",
                   "keep it short", "be more specific", "give an example", "say that again"],
    "tell me {}": ["a joke", "a story", "a riddle", "something funny", "a fun fact", "about yourself",
                   "about the moon", "more", "something interesting", "a bedtime story", "about dinosaurs",
                   "the time", "a pun", "a quote", "about Rome", "what you think"],
    "{} this": ["summarize", "summarise", "translate", "shorten", "explain", "rewrite", "proofread",
                "simplify", "paraphrase", "expand", "review", "fix", "format", "rephrase", "check",
                "classify", "analyze", "grade", "title", "outline"],
    "please {} the text below": ["summarize", "translate", "shorten", "proofread", "simplify",
                                  "paraphrase", "expand on", "correct", "rephrase", "continue"],
    "summarize {} for me": ["this email", "the report", "this paragraph", "the meeting notes", "this paper",
                            "this chapter", "the article below", "this thread", "these notes", "this page"],
    "translate to {}: {}": [],  # filled below
    "write {}": ["a poem", "a haiku", "a short poem about rain", "a limerick about a dog", "a story",
                 "an email to my boss", "a birthday message", "a product description", "a tweet",
                 "a short bio", "a slogan for a bakery", "a toast for a wedding", "a song about summer",
                 "a to-do list", "a thank-you card", "an apology note", "a riddle", "a job ad"],
    "give me {}": ["an example", "a hint", "ideas", "three ideas", "a word that rhymes with moon",
                   "a quick summary", "a random number", "a name for my cat", "a workout plan",
                   "a pep talk", "a motivational quote", "a recipe", "some advice", "a fun fact"],
    "say {}": ["hello", "hi", "something", "something nice", "good morning", "hello in Japanese",
               "thank you in Korean", "it again", "yes or no", "it slower", "goodbye", "happy birthday"],
    "you are a {}": ["helpful assistant", "friendly assistant", "concise assistant", "helpful AI assistant",
                     "customer service agent", "support bot for a phone company", "math tutor", "poet",
                     "senior Java developer", "data analyst", "teacher for children", "legal assistant",
                     "recipe assistant", "fitness coach", "writing assistant", "research assistant",
                     "polite receptionist", "chatbot for a hotel", "sales assistant", "language tutor",
                     "helpful assistant that answers in French", "careful medical information assistant",
                     "assistant for internal IT questions", "bot that helps users book flights"],
    "you are {}": ["terse", "concise", "friendly", "helpful", "brief", "polite", "precise", "cheerful",
                   "an assistant", "an AI assistant", "an expert editor", "an experienced teacher",
                   "a careful reviewer", "Claude, an AI assistant", "Aria, a support assistant",
                   "a helpful and honest assistant", "helpful, concise and accurate",
                   "an assistant for the Acme help desk", "a bot that answers HR questions",
                   "an expert in tax law", "an assistant that only answers cooking questions"],
    "you are a helpful assistant. {}": ["Be brief.", "Answer in German.", "Use simple words.",
                                         "Cite sources.", "Think step by step.", "Answer in one paragraph.",
                                         "Use markdown.", "Reply in JSON.", "Be polite.",
                                         "If unsure, say so.", "Keep it short.", "Ask follow-up questions."],
    "{} when you answer": ["be concise", "be friendly", "use bullet points", "use short sentences",
                           "avoid jargon", "use British spelling", "cite your sources", "stay on topic",
                           "be honest", "be kind", "be direct"],
    "always {}": ["be polite", "answer in Spanish", "reply briefly", "use metric units", "format code blocks",
                  "greet the user by name", "end with a question", "use plain language",
                  "include an example", "answer in the user's language"],
    "answer {}": ["briefly", "in one sentence", "in French", "politely", "like a pirate", "in detail",
                  "with examples", "as a list", "in plain English", "step by step", "in under 50 words"],
    "keep {}": ["it short", "answers short", "it under 100 words", "it simple", "replies friendly",
                "responses brief", "a formal tone", "it casual"],
    "respond {}": ["in JSON", "in English only", "with yes or no", "formally", "in a casual tone",
                   "in markdown", "in bullet points", "as briefly as possible", "kindly"],
}
TRANSLATIONS = ["French", "German", "Spanish", "Italian", "Japanese", "Dutch", "Polish", "Portuguese"]
PHRASES = ["where is the station?", "I love you", "the weather is nice today", "see you soon",
           "how much does this cost?", "happy new year", "my name is Anna", "the meeting starts at ten"]


def _short_fillers(frame: str) -> list[str]:
    if frame == "translate to {}: {}":
        return [f"{lang}|{text}" for lang in TRANSLATIONS for text in PHRASES]
    return SHORT_FRAMES[frame]


def words_of(text: str) -> str:
    """The lower-cased words of a text, punctuation and spacing dropped: the key held-out texts are kept
    out of training by."""
    return " ".join(re.findall(r"\w+", text.lower()))


def short_prompts(split: str, held_out: set[str] | frozenset[str] = frozenset()) -> Rows:
    """Short greetings, small talk, system prompts and task requests of the texts of `split`, in a few
    casings and punctuations; a text whose words (words_of) are in `held_out` is never produced."""
    out: Rows = []
    for frame in SHORT_FRAMES:
        for filler in _short_fillers(frame):
            text = frame.format(*filler.split("|")) if "|" in filler else frame.format(filler)
            if split_of("short:" + text, 15, 25) != split or words_of(text) in held_out:
                continue
            upper = text[:1].upper() + text[1:]
            ends = "" if text[-1] in "?!." else "?" if _question(text) else "."
            for variant in (text, upper + ends, upper + ("" if ends == "" else "!")):
                out.append((variant, 0))
    return out


def _question(text: str) -> bool:
    return text.split(" ", 1)[0] in {"how", "who", "what", "are", "do", "can", "why", "really"}
