"""The official SDKs over an in-process ASGI transport. Recent anthropic and openai SDKs ship their own fork
of httpx (httpx2) and refuse plain httpx clients; older ones use httpx. Use whichever the SDK imported."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import anthropic
import openai
from starlette.types import ASGIApp


def _http_module(sdk: ModuleType) -> Any:
    base = importlib.import_module(f"{sdk.__name__}._base_client")
    return getattr(base, "httpx2", None) or base.httpx


def _client(sdk: ModuleType, app: ASGIApp) -> Any:
    http = _http_module(sdk)
    return http.AsyncClient(transport=http.ASGITransport(app=app), base_url="http://gw")


def anthropic_client(app: ASGIApp) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url="http://gw", api_key="sk-ant-unused", max_retries=0,
                                    http_client=_client(anthropic, app))


def openai_client(app: ASGIApp) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url="http://gw/v1", api_key="unused", max_retries=0,
                              http_client=_client(openai, app))
