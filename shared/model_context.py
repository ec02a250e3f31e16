"""What a model sees: a response's context, assembled from the store (README,
"Conversation state").

The context is the inherited history followed by the request's own input items:

- with ``previous_response_id``: every response of the chain, oldest first, each one's
  input items then its output items (``Store.chain_items``: two queries however long the
  chain). Instructions are not inherited: only the new request's apply.
- with ``conversation``: every item of the conversation, oldest first (one query).

Before the model sees it, ``compaction`` items made by ``POST /v1/responses/compact`` are
expanded back into the summary they carry, and the context is fitted to the route's window
(``fit``): with ``truncation: "disabled"`` an oversized context is an error
(``context_length_exceeded``); with ``"auto"`` the oldest items are dropped until it fits.
Both the API (to answer 400 at once, and for ``/v1/responses/input_tokens``) and the worker
(for the run) use this module, so they agree on what fits.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from shared import tokens
from shared.errors import InvalidRequest
from shared.routing import BUILTIN, Route
from shared.store import ChainBroken, Store
from shared.store.conversations import ConversationStore

COMPACTION_PREFIX = "resq1."
# The request a compaction job ends its context with (POST /v1/responses/compact).
COMPACTION_INSTRUCTIONS = (
    "You compact conversations. Write a faithful summary of the conversation so far that "
    "lets it continue without the original: the user's goals and constraints, decisions "
    "made, facts and results established (tool outputs included), and open questions. "
    "Write only the summary."
)
COMPACTION_PROMPT = "Summarize the conversation above for compaction."
COMPACTION_HEADER = "Summary of the earlier conversation (compacted):"
# Leading items that cannot stand alone once what came before them was dropped.
_ORPHANS = {"function_call_output", "custom_tool_call_output"}


class ContextTooLong(InvalidRequest):
    code = "context_length_exceeded"

    def __init__(self, tokens_needed: int, window: int, method: str) -> None:
        how = "counted" if method == tokens.BUILTIN else "estimated"
        super().__init__(
            f"The input ({tokens_needed} tokens, {how}) does not fit the model's context "
            f"window of {window} tokens. Shorten the input, or set truncation to 'auto' to "
            "drop the oldest items.",
            param="input",
        )


def previous_not_found(response_id: str) -> InvalidRequest:
    return InvalidRequest(
        f"Previous response with id '{response_id}' not found.",
        param="previous_response_id",
        code="previous_response_not_found",
    )


def history(
    store: Store, *, previous_response_id: str | None, conversation_id: str | None
) -> list[dict[str, Any]]:
    """The items a response inherits (its own input not included)."""
    if previous_response_id is not None:
        try:
            return store.chain_items(response_id=previous_response_id)
        except ChainBroken as exc:
            if exc.missing_id == previous_response_id:
                raise previous_not_found(previous_response_id) from None
            raise InvalidRequest(
                f"Previous response with id '{previous_response_id}' cannot be continued: "
                f"the response '{exc.missing_id}' earlier in its chain was deleted.",
                param="previous_response_id",
                code="previous_response_not_found",
            ) from None
    if conversation_id is not None:
        return ConversationStore(store).all_items(conversation_id=conversation_id)
    return []


# ---- compaction -------------------------------------------------------------------------


def encode_compaction(summary: str) -> str:
    """The ``encrypted_content`` of a compaction item: resq's own opaque token. It is not
    encrypted; it only has to come back to resq, which expands it (``model_items``)."""
    payload = json.dumps({"summary": summary}, separators=(",", ":")).encode()
    return COMPACTION_PREFIX + base64.urlsafe_b64encode(payload).decode()


def decode_compaction(token: Any) -> str | None:
    """The summary in a token ``encode_compaction`` made; None for anything else."""
    if not isinstance(token, str) or not token.startswith(COMPACTION_PREFIX):
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(token[len(COMPACTION_PREFIX) :]))
    except (binascii.Error, ValueError):
        return None
    summary = payload.get("summary") if isinstance(payload, dict) else None
    return summary if isinstance(summary, str) else None


def invalid_compaction(param: str) -> InvalidRequest:
    return InvalidRequest(
        "Invalid 'encrypted_content': this compaction item was not made by this resq server "
        "(POST /v1/responses/compact).",
        param=f"{param}.encrypted_content",
        code="invalid_encrypted_content",
    )


def model_items(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The items as a model reads them.

    - ``compaction`` items become the summary they carry, as a developer message;
      ``compaction_trigger`` items are dropped.
    - MCP history becomes the function calls the model made: an ``mcp_call`` is a
      ``function_call`` and its ``function_call_output`` (the tool's output, or its error);
      a declined ``mcp_approval_request`` is a call whose output says it was declined.
      Listings, pending requests and approval answers are not shown (the tools themselves
      are passed as tool definitions; an approved request shows as the call it became).
    """
    answers = {
        i.get("approval_request_id"): i for i in items if i.get("type") == "mcp_approval_response"
    }
    out = []
    for item in items:
        itype = item.get("type")
        if itype == "compaction":
            summary = decode_compaction(item.get("encrypted_content")) or ""
            out.append(text_message("developer", f"{COMPACTION_HEADER}\n{summary}", item.get("id")))
        elif itype == "mcp_call":
            result = item.get("output")
            if item.get("error"):
                result = f"Error: {mcp_error_text(item['error'])}"
            out += _call_pair(item, result or "")
        elif itype == "mcp_approval_request":
            answer = answers.get(item.get("id"))
            if answer is not None and not answer.get("approve"):
                reason = answer.get("reason")
                declined = "The user declined this tool call" + (f": {reason}" if reason else ".")
                out += _call_pair(item, declined)
        elif itype not in HIDDEN_FROM_MODEL:
            out.append(item)
    return out


HIDDEN_FROM_MODEL = {"compaction_trigger", "mcp_list_tools", "mcp_approval_response"}


def mcp_error_text(error: Any) -> str:
    """An ``mcp_call`` error (an object in SDK 3.x, a string before) as text."""
    if isinstance(error, dict):
        content = error.get("content")
        if isinstance(content, list):
            return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        return str(error.get("message") or content or error.get("type"))
    return str(error)


def text_message(role: str, text: str, item_id: Any = None) -> dict[str, Any]:
    """A completed message with one ``input_text`` part (no id unless given)."""
    return {
        "id": item_id,
        "type": "message",
        "role": role,
        "status": "completed",
        "content": [{"type": "input_text", "text": text}],
    }


def _call_pair(item: dict[str, Any], output: str) -> list[dict[str, Any]]:
    call_id = item.get("id")
    return [
        {
            "type": "function_call",
            "call_id": call_id,
            "name": item.get("name", ""),
            "arguments": item.get("arguments", ""),
        },
        {"type": "function_call_output", "call_id": call_id, "output": output},
    ]


# ---- fitting the window -----------------------------------------------------------------


def count_method(route: Route) -> str:
    return tokens.BUILTIN if route.provider == BUILTIN else tokens.ESTIMATE


@dataclass(frozen=True)
class Fitted:
    items: list[dict[str, Any]]
    input_tokens: int
    dropped_items: int = 0
    dropped_tokens: int = 0

    def details(self) -> dict[str, int] | None:
        """What the Response records (``truncation_details``), or None if nothing dropped."""
        if not self.dropped_items:
            return None
        return {"dropped_items": self.dropped_items, "dropped_input_tokens": self.dropped_tokens}


def fit(
    items: list[dict[str, Any]],
    *,
    instructions: str | None,
    tools: list[dict[str, Any]],
    route: Route,
    truncation: str | None,
) -> Fitted:
    """Fit model-ready items into the route's context window (see the module doc)."""
    method = count_method(route)
    counts = [tokens.count_item(item, method) for item in items]
    total = tokens.count_fixed(instructions, tools, method) + sum(counts)
    window = route.context_window
    if total <= window:
        return Fitted(items, total)
    if truncation != "auto":
        raise ContextTooLong(total, window, method)
    start = 0
    while start < len(items) - 1 and (total > window or items[start].get("type") in _ORPHANS):
        total -= counts[start]
        start += 1
    if total > window:
        raise ContextTooLong(total, window, method)
    return Fitted(items[start:], total, start, sum(counts[:start]))


# ---- instructions: a string, or the input items a prompt rendered (``api.prompt_expansion``)


def instruction_items(instructions: str | list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """The items a prompt's instructions are (seen by the model before the context), or []."""
    return list(instructions) if isinstance(instructions, list) else []


def instructions_text(instructions: str | list[dict[str, Any]] | None) -> str | None:
    """The instructions as text, for counting: a string as it is, a prompt's items joined."""
    if isinstance(instructions, list):
        return "\n".join(tokens.item_text(item) for item in instructions) or None
    return instructions
