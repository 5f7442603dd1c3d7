"""The gateway's OpenAPI document, generated from the same pydantic models that validate requests, so the
schema cannot drift from the code. Served at /openapi.json; the API fuzz tests (schemathesis) read it."""

from __future__ import annotations

from typing import Any

from aigrid.gateway.batches_schema import BatchCreate
from aigrid.gateway.conversations_schema import (
    ConversationCreate,
    ConversationItemsCreate,
    ConversationUpdate,
)
from aigrid.gateway.message_batches_schema import MessageBatchCreate
from aigrid.gateway.messages_schema import CountTokensRequest, MessagesRequest
from aigrid.gateway.responses_schema import CompactRequest, ResponsesRequest
from aigrid.gateway.schemas import ChatRequest, CompletionRequest

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["message", "type", "param", "code"], "properties": {
        "message": {"type": "string"}, "type": {"type": "string"},
        "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]}}}},
}
_ANTHROPIC_ERROR = {
    "type": "object",
    "required": ["type", "error"],
    "properties": {"type": {"const": "error"}, "error": {"type": "object", "required": ["type", "message"],
                                                         "properties": {"type": {"type": "string"},
                                                                        "message": {"type": "string"}}}},
}
_HEADERS = [
    {"name": "x-aigrid-client-location", "in": "header", "required": False, "schema": {"type": "string"}},
    {"name": "x-aigrid-residency", "in": "header", "required": False, "schema": {"type": "string"}},
    {"name": "x-aigrid-policy", "in": "header", "required": False, "schema": {"type": "string"}},
    {"name": "x-aigrid-tenant", "in": "header", "required": False, "schema": {"type": "string"}},
]


_RESPONSE_ID = {"name": "response_id", "in": "path", "required": True, "schema": {"type": "string"}}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(c): {"description": "OpenAI error envelope",
                     "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
            for c in codes}


def _anthropic_errors(*codes: int) -> dict[str, Any]:
    return {str(c): {"description": "Anthropic error shape", "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/AnthropicError"}}}} for c in codes}


def _completion(ref: str, summary: str, errors: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"post": {
        "summary": summary, "parameters": _HEADERS,
        "requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": ref}}}},
        "responses": {"200": {"description": "the completion (JSON, or SSE when stream is true)"},
                      **(errors or _errors(400, 401, 403, 404, 429, 502, 503))},
    }}


_EMBEDDINGS = {
    "type": "object", "required": ["model", "input"],
    "properties": {
        "model": {"type": "string"},
        "input": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
        "encoding_format": {"type": "string", "enum": ["float", "base64"]},
        "dimensions": {"type": "integer"},
        "user": {"type": "string"},
    },
}


def _query(*names: str) -> list[dict[str, Any]]:
    return [{"name": n, "in": "query", "required": False, "schema": {"type": "string"}} for n in names]


def _body(name: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}}


def _conversations(ok: dict[str, Any]) -> dict[str, Any]:
    """The Conversations API (conversations_api.py)."""
    conv = {"name": "conversation_id", "in": "path", "required": True, "schema": {"type": "string"}}
    item = {"name": "item_id", "in": "path", "required": True, "schema": {"type": "string"}}
    read, change = {**ok, **_errors(401, 404, 503)}, {**ok, **_errors(400, 401, 404, 503)}  # 503: its store
    return {
        "/v1/conversations": {"post": {"summary": "Create a conversation", "requestBody": _body("ConversationCreate"),
                                       "responses": {**ok, **_errors(400, 401, 403, 503)}}},
        "/v1/conversations/{conversation_id}": {
            "get": {"summary": "A conversation", "parameters": [conv], "responses": read},
            "post": {"summary": "Update a conversation's metadata", "parameters": [conv],
                     "requestBody": _body("ConversationUpdate"), "responses": change},
            "delete": {"summary": "Delete a conversation", "parameters": [conv], "responses": read}},
        "/v1/conversations/{conversation_id}/items": {
            "get": {"summary": "A conversation's items (cursor list)",
                    "parameters": [conv, *_query("limit", "order", "after", "include")], "responses": change},
            "post": {"summary": "Add items to a conversation", "parameters": [conv],
                     "requestBody": _body("ConversationItemsCreate"), "responses": change}},
        "/v1/conversations/{conversation_id}/items/{item_id}": {
            "get": {"summary": "One item of a conversation", "parameters": [conv, item, *_query("include")],
                    "responses": read},
            "delete": {"summary": "Delete an item of a conversation", "parameters": [conv, item], "responses": read}},
    }


def _batches(ok: dict[str, Any]) -> dict[str, Any]:
    """The Files and Batch APIs (files_api.py, batches_api.py)."""
    fid = {"name": "file_id", "in": "path", "required": True, "schema": {"type": "string"}}
    bid = {"name": "batch_id", "in": "path", "required": True, "schema": {"type": "string"}}
    upload = {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["file", "purpose"],
        "properties": {"file": {"type": "string", "format": "binary"}, "purpose": {"type": "string", "enum": ["batch"]},
                       "expires_after[anchor]": {"type": "string"}, "expires_after[seconds]": {"type": "integer"}}}}}}
    content = {"200": {"description": "the file's bytes", "content": {"application/octet-stream": {
        "schema": {"type": "string", "format": "binary"}}}}}
    return {
        "/v1/files": {
            "post": {"summary": "Upload a file (purpose batch)", "requestBody": upload,
                     "responses": {**ok, **_errors(400, 401, 413)}},
            "get": {"summary": "The tenant's files (cursor list)", "parameters": _query("purpose", "limit", "order", "after"),
                    "responses": {**ok, **_errors(400, 401)}}},
        "/v1/files/{file_id}": {
            "get": {"summary": "A file", "parameters": [fid], "responses": {**ok, **_errors(401, 404)}},
            "delete": {"summary": "Delete a file", "parameters": [fid], "responses": {**ok, **_errors(400, 401, 404)}}},
        "/v1/files/{file_id}/content": {
            "get": {"summary": "A file's content", "parameters": [fid], "responses": {**content, **_errors(401, 404)}}},
        "/v1/batches": {
            "post": {"summary": "Create a batch (runs at urgency batch)", "parameters": _HEADERS,
                     "requestBody": _body("BatchCreate"), "responses": {**ok, **_errors(400, 401, 404)}},
            "get": {"summary": "The tenant's batches (cursor list)", "parameters": _query("after", "limit"),
                    "responses": {**ok, **_errors(400, 401)}}},
        "/v1/batches/{batch_id}": {
            "get": {"summary": "A batch", "parameters": [bid], "responses": {**ok, **_errors(401, 404)}}},
        "/v1/batches/{batch_id}/cancel": {
            "post": {"summary": "Cancel a batch", "parameters": [bid], "responses": {**ok, **_errors(400, 401, 404)}}},
    }


def _message_batches(ok: dict[str, Any]) -> dict[str, Any]:
    """Anthropic's Message Batches API (message_batches_api.py): Anthropic's error shape."""
    mid = {"name": "message_batch_id", "in": "path", "required": True, "schema": {"type": "string"}}
    read = {**ok, **_anthropic_errors(400, 401, 404)}
    jsonl = {"200": {"description": "one result per request (JSONL)", "content": {"application/x-jsonl": {
        "schema": {"type": "string"}}}}}
    return {
        "/v1/messages/batches": {
            "post": {"summary": "Create a message batch (runs at urgency batch)", "parameters": _HEADERS,
                     "requestBody": _body("MessageBatchCreate"),
                     "responses": {**ok, **_anthropic_errors(400, 401, 413)}},
            "get": {"summary": "The tenant's message batches", "parameters": _query("after_id", "before_id", "limit"),
                    "responses": {**ok, **_anthropic_errors(400, 401)}}},
        "/v1/messages/batches/{message_batch_id}": {
            "get": {"summary": "A message batch", "parameters": [mid], "responses": read},
            "delete": {"summary": "Delete an ended message batch", "parameters": [mid], "responses": read}},
        "/v1/messages/batches/{message_batch_id}/cancel": {
            "post": {"summary": "Cancel a message batch", "parameters": [mid], "responses": read}},
        "/v1/messages/batches/{message_batch_id}/results": {
            "get": {"summary": "An ended message batch's results", "parameters": [mid],
                    "responses": {**jsonl, **_anthropic_errors(400, 401, 404)}}},
    }


def openapi_document(version: str) -> dict[str, Any]:
    schemas: dict[str, Any] = {"Error": _ERROR, "AnthropicError": _ANTHROPIC_ERROR, "EmbeddingRequest": _EMBEDDINGS}
    for model in (ChatRequest, CompletionRequest, MessagesRequest, CountTokensRequest, ResponsesRequest,
                  CompactRequest, ConversationCreate, ConversationUpdate, ConversationItemsCreate, BatchCreate, MessageBatchCreate):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    ok = {"200": {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "aigrid gateway", "version": version,
                 "description": "OpenAI-compatible inference grid gateway"},
        "paths": {
            "/v1/chat/completions": _completion("#/components/schemas/ChatRequest", "Chat completion, routed"),
            "/v1/completions": _completion("#/components/schemas/CompletionRequest", "Text completion, routed"),
            "/v1/embeddings": {"post": {
                "summary": "Embeddings (all-MiniLM-L6-v2), computed by the gateway", "parameters": _HEADERS,
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/EmbeddingRequest"}}}},
                "responses": {**ok, **_errors(400, 401, 403, 429, 503)}}},
            "/v1/messages": _completion("#/components/schemas/MessagesRequest", "Anthropic Messages, routed",
                                        _anthropic_errors(400, 401, 403, 404, 413, 429, 500, 529)),
            "/v1/messages/count_tokens": _completion("#/components/schemas/CountTokensRequest",
                                                     "Anthropic token count (the router's estimate)",
                                                     _anthropic_errors(400, 401, 403, 404)),
            "/v1/responses": _completion("#/components/schemas/ResponsesRequest", "OpenAI Responses, routed"),
            "/v1/responses/compact": _completion("#/components/schemas/CompactRequest",
                                                 "OpenAI Responses compaction: the user messages and one compaction "
                                                 "item (the rest of the conversation summarised, sealed)"),
            "/v1/responses/input_tokens": _completion("#/components/schemas/ResponsesRequest",
                                                      "OpenAI Responses input token count (the router's estimate)",
                                                      _errors(400, 401, 403, 404, 503)),
            "/v1/responses/{response_id}": {
                "get": {"summary": "A stored response, or a background one's current state",
                        "parameters": [_RESPONSE_ID], "responses": {**ok, **_errors(400, 401, 404, 503)}},
                "delete": {"summary": "Delete a stored response", "parameters": [_RESPONSE_ID],
                           "responses": {**ok, **_errors(401, 404, 503)}}},
            "/v1/responses/{response_id}/cancel": {
                "post": {"summary": "Cancel a background response", "parameters": [_RESPONSE_ID],
                         "responses": {**ok, **_errors(400, 401, 404, 503)}}},
            "/v1/responses/{response_id}/input_items": {
                "get": {"summary": "A stored response's input items (cursor list)", "parameters": [
                    _RESPONSE_ID,
                    {"name": "limit", "in": "query", "required": False, "schema": {"type": "string"}},
                    {"name": "order", "in": "query", "required": False, "schema": {"type": "string"}},
                    {"name": "after", "in": "query", "required": False, "schema": {"type": "string"}}],
                        "responses": {**ok, **_errors(400, 401, 404, 503)}}},
            "/v1/models": {"get": {"summary": "Models on this grid (those the caller's key may use)",
                                   "responses": {**ok, **_errors(401)}}},
            "/v1/models/{model_id}": {"get": {"summary": "One model (OpenAI's and Anthropic's models.retrieve)",
                                              "parameters": [{"name": "model_id", "in": "path", "required": True,
                                                              "schema": {"type": "string"}}],
                                              "responses": {**ok, **_errors(401, 404)}}},
            "/v1/grid": {"get": {"summary": "Live state of every endpoint", "responses": ok}},
            "/v1/decisions": {"get": {"summary": "Recent decisions", "parameters": [
                {"name": "limit", "in": "query", "required": False, "schema": {"type": "string"}}],
                # 429: counted in requests per minute (a heavy read, since the thirty-seventh session)
                "responses": {**ok, **_errors(400, 401, 429, 503)}}},
            "/v1/decisions/{decision_id}": {"get": {"summary": "One decision", "parameters": [
                {"name": "decision_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {**ok, **_errors(401, 404, 503)}}},
            "/healthz": {"get": {"summary": "Health", "responses": {**ok, "503": {"description": "no healthy endpoint"}}}},
            "/livez": {"get": {"summary": "Liveness (the process serves)", "responses": ok}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {
                "200": {"description": "OK", "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
            "/openapi.json": {"get": {"summary": "This document", "responses": ok}},
            **_conversations(ok),
            **_batches(ok),
            **_message_batches(ok),
        },
        "components": {"schemas": schemas},
    }
