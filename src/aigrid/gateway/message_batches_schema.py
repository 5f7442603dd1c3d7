"""The Message Batches API's request body (message_batches_api.py; docs/messages-api.md, "Message Batches"):
`requests`, each a `custom_id` and the `params` of a Messages request, validated as POST /v1/messages
validates them, so that a mistake is a 400 naming the request's field (`requests.3.params.max_tokens`)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from aigrid.gateway.messages_schema import MessagesRequest

CUSTOM_ID = r"^[a-zA-Z0-9_-]{1,64}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MessageBatchRequest(_Strict):
    custom_id: str = Field(pattern=CUSTOM_ID)
    params: MessagesRequest


class MessageBatchCreate(_Strict):
    requests: list[MessageBatchRequest] = Field(min_length=1)


class MessageBatchShape(_Strict):
    """The body's own fields only: its requests are checked one at a time (MessageBatchRequest), each freed once
    written, so that a large batch is never held as a second tree of validated objects beside its parsed JSON."""

    requests: list[Any] = Field(min_length=1)
