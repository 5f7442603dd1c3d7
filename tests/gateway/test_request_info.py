"""gateway/request_info.py: the keys a request's cache warmth is found by (prefix_hash, session), the
size of what a warm endpoint holds (prefix_tokens), and the prompt's token estimate (prompt_tokens)."""

from __future__ import annotations

import orjson

from aigrid.agents.prompt_size import prompt_chars
from aigrid.core.types import RequestInfo
from aigrid.gateway.request_info import (
    CHARS_PER_TOKEN,
    TEMPLATE_TOKENS_PER_MESSAGE,
    build_request_info,
    chat_prompt_tokens,
    hash_key,
    prompt_units,
    turn_prompt_tokens,
)
from aigrid.gateway.schemas import ChatRequest, CompletionRequest

MODELS = frozenset({"m"})
APP = "You are the support assistant of Example Bank. Answer from the policy below.\n" + "Policy... " * 200


def info(messages: list[dict[str, object]], headers: dict[str, str] | None = None, **body: object) -> RequestInfo:
    req = ChatRequest.model_validate({"model": "m", "messages": messages, **body})
    return build_request_info("r", req, headers or {}, {}, MODELS, 4096)


def test_an_apps_system_prompt_is_the_shared_prefix_and_the_conversation_a_second_key() -> None:
    ada = info([{"role": "system", "content": APP}, {"role": "user", "content": "Where is my card?"}])
    bob = info([{"role": "system", "content": APP}, {"role": "user", "content": "Close my account."}])
    assert ada.prefix_hash == bob.prefix_hash == hash_key(APP)  # every user of the app: one cached prefix
    assert ada.prefix_tokens == bob.prefix_tokens == -(-prompt_units(APP) // 4)
    assert ada.session is not None and bob.session is not None and ada.session != bob.session
    later = info([{"role": "system", "content": APP}, {"role": "user", "content": "Where is my card?"},
                  {"role": "assistant", "content": "In the post."}, {"role": "user", "content": "When?"}])
    assert (later.prefix_hash, later.session) == (ada.prefix_hash, ada.session)  # its history is cached too
    parts = info([{"role": "system", "content": [{"type": "text", "text": APP}]},
                  {"role": "user", "content": "Where is my card?"}])
    assert (parts.prefix_hash, parts.prefix_tokens) == (ada.prefix_hash, ada.prefix_tokens)


def test_without_a_system_prompt_the_first_user_turn_names_the_conversation() -> None:
    one = info([{"role": "user", "content": "Tell me a story."}])
    two = info([{"role": "user", "content": "Tell me a story."}, {"role": "assistant", "content": "Once..."},
                {"role": "user", "content": "Go on."}])
    assert one.prefix_hash == two.prefix_hash == hash_key("Tell me a story.")
    assert one.session is None and one.prefix_tokens is None  # its owner holds the history: a share of it


def test_the_clients_session_wins_over_the_conversation_key() -> None:
    msgs: list[dict[str, object]] = [{"role": "system", "content": APP}, {"role": "user", "content": "Hi"}]
    assert info(msgs, {"x-aigrid-session": "abc"}).session == "s:abc"
    assert info(msgs, user="u-42").session == "s:u-42"
    assert info(msgs, user="u-42").prefix_tokens == -(-prompt_units(APP) // 4)
    done = build_request_info("r", CompletionRequest.model_validate({"model": "m", "prompt": "Once upon a time"}),
                              {}, {}, MODELS, 4096)
    assert done.prefix_hash == hash_key("Once upon a time") and done.session is None


def test_only_a_leading_system_prompt_is_a_cached_prefix() -> None:
    late = info([{"role": "user", "content": "Hi"}, {"role": "system", "content": APP}])
    assert late.prefix_hash == hash_key("Hi") and late.prefix_tokens is None and late.session is None


def history_of_calls(calls: int, size: int) -> list[dict[str, object]]:
    """An agent's history: one short request, then `calls` tool calls whose arguments are `size` characters each
    (a file the agent wrote) and their one-word results."""
    messages: list[dict[str, object]] = [{"role": "user", "content": "Fix the failing test."}]
    for i in range(calls):
        arguments = '{"text": "' + "a" * (size - 12) + '"}'  # a letter a quarter token (prompt_units)
        messages += [{"role": "assistant", "content": None, "tool_calls": [{"id": f"call_{i}", "type": "function",
                      "function": {"name": "write_file", "arguments": arguments}}]},
                     {"role": "tool", "tool_call_id": f"call_{i}", "content": "ok"}]
    return messages


def test_an_agents_history_of_tool_calls_is_estimated_near_its_size() -> None:
    """The estimate read each message's content only: 30 calls of 2,000 characters of arguments (15,000 tokens at
    4 characters a token) were estimated at 531 tokens, what admission and the quota reserved and a hang-up charged."""
    messages = history_of_calls(30, 2000)
    arguments = 30 * 2000 // CHARS_PER_TOKEN
    estimate = info(messages).prompt_tokens
    assert arguments <= estimate <= arguments * 1.05 + TEMPLATE_TOKENS_PER_MESSAGE * (len(messages) + 2)


def test_a_replayed_refusal_and_reasoning_are_estimated() -> None:
    """An assistant's refusal (its engine reads it as the turn's content: engine_body.for_engine) and its reasoning
    (reasoning models' templates render it) reach the model: both are counted, as the context check counts them."""
    ask = {"role": "user", "content": "Hi"}
    plain = info([ask, {"role": "assistant", "content": "Hello"}, ask]).prompt_tokens
    refused = info([ask, {"role": "assistant", "refusal": "No. " * 1000}, ask]).prompt_tokens
    reasoned = info([ask, {"role": "assistant", "content": "Hello", "reasoning_content": "Hmm. " * 800}, ask]).prompt_tokens
    assert refused >= plain + 1000 - 2 and reasoned >= plain + 1000
    parts = info([ask, {"role": "assistant", "content": [{"type": "refusal", "refusal": "No. " * 1000}]}, ask])
    assert parts.prompt_tokens == refused


def test_a_request_and_a_tool_loops_later_turn_are_estimated_alike() -> None:
    """One way of counting (agents.prompt_size): a request's estimate and a loop turn's of the same messages agree,
    whatever each message carries (the turn's read no refusal nor reasoning, the request's no tool call)."""
    messages = [{"role": "system", "content": [{"type": "text", "text": "Be brief. " * 20}]},
                *history_of_calls(3, 500),
                {"role": "assistant", "refusal": "I cannot. " * 30},
                {"role": "user", "content": "Go on."},
                {"role": "assistant", "content": "Done.", "reasoning_content": "Think. " * 40, "reasoning": "R" * 90},
                {"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": '{"a": 1}'}},
                {"role": "function", "name": "f", "content": "1"},
                {"role": "assistant", "content": None, "tool_calls": [{"id": "c", "type": "function", "index": 0,
                                                                       "function": {"name": "g", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "c", "content": "2"}]
    request = info(messages).prompt_tokens
    assert request == turn_prompt_tokens({"model": "m", "messages": messages})
    calls = 3 * (500 + len("write_file") + len("call_0")) + 3 * len("ok")  # a call: its id, name and arguments
    legacy = len('{"name":"f","arguments":"{\\"a\\": 1}"}')  # other forms: their JSON
    other = len('{"id":"c","type":"function","index":0,"function":{"name":"g","arguments":"{}"}}')
    chars = 200 + len("Fix the failing test.") + calls + 300 + 6 + 5 + 280 + 90 + legacy + len("1") + other + len("2")
    assert prompt_chars({"messages": messages}) == chars  # exact: the tokens below are chars // 4
    assert request == chat_prompt_tokens(prompt_chars({"messages": messages}, prompt_units), len(messages))


def test_the_tools_a_request_offers_are_estimated_as_a_loop_turns_are() -> None:
    """A request's own tools (templates print their definitions into the system turn) were left out of its estimate,
    though a loop's later turn and the token-count routes counted them."""
    tool = {"type": "function", "function": {"name": "get_weather", "description": "The weather in a city. " * 40,
                                             "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
    messages: list[dict[str, object]] = [{"role": "user", "content": "Weather in Paris?"}]
    offered = info(messages, tools=[tool, tool]).prompt_tokens
    assert offered == turn_prompt_tokens({"messages": messages, "tools": [tool, tool]})
    assert offered >= info(messages).prompt_tokens + 2 * len(orjson.dumps(tool)) // CHARS_PER_TOKEN


def test_a_request_and_a_loop_turn_are_counted_by_one_implementation() -> None:
    """One count of a chat prompt (agents.prompt_size.prompt_chars) for a body as JSON (a tool loop's turn) and as the
    gateway validated it (a request's estimate): until the twenty-ninth session the request's estimate kept its own
    loop over the messages and tools beside prompt_chars'. A body holding all at once: tools offered, tool calls (an
    OpenAI call and a call of another form), a legacy function call, replayed reasoning, a refusal (a field and a
    part), text parts."""
    tool = {"type": "function", "function": {"name": "lookup", "description": "Find a record. " * 10,
                                             "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}
    messages: list[dict[str, object]] = [
        {"role": "system", "content": [{"type": "text", "text": "Be brief. " * 12}]},
        *history_of_calls(2, 300),
        {"role": "assistant", "content": "Thinking done.", "reasoning_content": "Hmm. " * 30, "reasoning": "R" * 40,
         "tool_calls": [{"id": "c9", "type": "function", "index": 0, "function": {"name": "lookup", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c9", "content": "none"},
        {"role": "assistant", "refusal": "I cannot. " * 20},
        {"role": "assistant", "content": [{"type": "refusal", "refusal": "No. " * 15}]},
        {"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": '{"a": 1}'}},
        {"role": "function", "name": "f", "content": "1"},
        {"role": "user", "content": "Go on."}]
    body = {"model": "m", "messages": messages, "tools": [tool, tool]}
    validated = ChatRequest.model_validate(body)
    chars = prompt_chars(body)
    assert prompt_chars(validated) == chars  # the request's count is the loop turn's, by the same function
    units = prompt_chars(body, prompt_units)
    assert prompt_chars(validated, prompt_units) == units
    assert info(messages, tools=[tool, tool]).prompt_tokens == turn_prompt_tokens(body) == chat_prompt_tokens(
        units, len(messages))
    # the tools offered counted once each, as their JSON
    assert chars == prompt_chars({"messages": messages}) + 2 * len(orjson.dumps(tool))
    assert units == prompt_chars({"messages": messages}, prompt_units) + 2 * prompt_units(orjson.dumps(tool))


MEASURED = {  # a text, and what SmolLM2's tokenizer reads of it, without a template (llama-server /tokenize,
    # 7 Dec 2026; the ratio per class, templated: scripts/measure_token_estimate.py)
    "emoji": ("".join(chr(0x1F300 + i * 7919 % 0x7FF) for i in range(1500)), 4496),
    "CJK": ("".join(chr(0x4E00 + i * 7919 % 0x51FF) for i in range(1500)), 4008),
    "math symbols": ("".join(chr(0x2200 + i * 7919 % 0xFF) for i in range(1500)), 3738),
    "digits": ("".join(str(i * 7919 % 10) for i in range(1500)), 1500),
    "punctuation": ("".join("!@#$%^&*(){}[]<>?/|~`"[i * 7919 % 21] for i in range(1500)), 1215),
    "letters": ("".join("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"[i * 7919 % 52] for i in range(1500)), 1182),
}


def test_a_crafted_text_is_not_estimated_far_below_what_a_tokenizer_reads() -> None:
    """Brief TOKEST (ATK9): at 4 characters a token, 1,500 emoji were estimated 375 tokens where SmolLM2 reads 4,499
    (12x), rare CJK 11x, digits 4x, punctuation 3x; what a tenant's tokens per minute admits, and what its request's
    first-byte deadline is predicted from. Each is now estimated at no less than two thirds of what the tokenizer reads,
    and an English text at no more than 1.5 times it."""
    for name, (text, real) in MEASURED.items():
        estimate = info([{"role": "user", "content": text}]).prompt_tokens
        assert estimate >= real / 1.5, name
    english = "The committee reviewed the proposal and agreed to publish the results next month. " * 20
    estimate = info([{"role": "user", "content": english}]).prompt_tokens
    assert estimate <= 1.5 * len(english) / 4.5  # English reads about 4.5 characters a token (SmolLM2)
