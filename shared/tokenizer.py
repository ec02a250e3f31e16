"""A request's input tokens, as ``POST /v1/responses/input_tokens`` answers them (README,
"Token counts"): the route's own tokenizer where it names one (``tokenize_url``, a vLLM-style
``/tokenize``), else the built-in model's exact count or resq's estimate (``shared.tokens``).
An upstream tokenizer that cannot answer is not an error: the estimate stands in, with a
warning, since a count is advisory and the run itself does not depend on it.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx

from shared import tokens
from shared.model_context import count_method, fit
from shared.routing import Route

log = logging.getLogger(__name__)

TOKENIZE_TIMEOUT_SECONDS = 10.0


def input_tokens(
    route: Route | None,
    *,
    model: str,
    instructions: str | None,
    items: list[dict[str, Any]],
    tools: list[dict[str, Any]],
    truncation: str | None,
) -> int:
    """The tokens of a model-ready context under ``route`` (None: no model given, so the
    estimate). With ``truncation: "auto"``, what would remain after truncation."""
    if route is not None and truncation == "auto":
        items = fit(
            items, instructions=instructions, tools=tools, route=route, truncation="auto"
        ).items
    count = None
    if route is not None and route.tokenize_url:
        count = upstream_count(route, model, instructions, items)
    if count is None:
        method = count_method(route) if route is not None else tokens.ESTIMATE
        count = tokens.count(instructions, items, tools, method=method)
    return count


def upstream_count(
    route: Route,
    model: str,
    instructions: str | None,
    items: list[dict[str, Any]],
    *,
    transport: httpx.BaseTransport | None = None,
) -> int | None:
    """Ask the route's ``tokenize_url`` (``{"model", "messages"}`` → ``{"count"}``); None (and
    a warning) if it cannot answer, so the caller falls back to the estimate. ``transport``
    stands in for the network in tests."""
    assert route.tokenize_url is not None
    key = route.api_key()
    try:
        with httpx.Client(transport=transport, timeout=TOKENIZE_TIMEOUT_SECONDS) as client:
            answer = client.post(
                route.tokenize_url,
                json={
                    "model": route.upstream_model or model,
                    "messages": tokens.chat_messages(instructions, items),
                },
                headers={"Authorization": f"Bearer {key}"} if key else None,
            )
        answer.raise_for_status()
        found = answer.json().get("count")
        if isinstance(found, int) and not isinstance(found, bool):
            return found
        log.warning("tokenizer %s answered without an integer 'count'", route.tokenize_url)
    except (httpx.HTTPError, ValueError, AttributeError) as exc:
        log.warning("tokenizer %s failed (%s); using the estimate", route.tokenize_url, exc)
    return None
