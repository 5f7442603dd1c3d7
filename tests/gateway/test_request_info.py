"""gateway/request_info.py: the keys a request's cache warmth is found by (prefix_hash, session) and the
size of what a warm endpoint holds (prefix_tokens)."""

from __future__ import annotations

from aigrid.core.types import RequestInfo
from aigrid.gateway.request_info import build_request_info, hash_key
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
    assert ada.prefix_tokens == bob.prefix_tokens == -(-len(APP) // 4)
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
    assert info(msgs, user="u-42").prefix_tokens == -(-len(APP) // 4)
    done = build_request_info("r", CompletionRequest.model_validate({"model": "m", "prompt": "Once upon a time"}),
                              {}, {}, MODELS, 4096)
    assert done.prefix_hash == hash_key("Once upon a time") and done.session is None


def test_only_a_leading_system_prompt_is_a_cached_prefix() -> None:
    late = info([{"role": "user", "content": "Hi"}, {"role": "system", "content": APP}])
    assert late.prefix_hash == hash_key("Hi") and late.prefix_tokens is None and late.session is None
