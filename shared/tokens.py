"""Counting input tokens where the model's own tokenizer is not at hand (README, "Token
counts").

- ``builtin``: the built-in model's own count, exact for it: one token per
  whitespace-separated word of the instructions and of every item's text.
- ``estimate``: for upstream models. About four characters per token
  (``ceil(characters / 4)``) over the same text, plus ``ITEM_OVERHEAD`` tokens per item and
  per tool definition for the chat template's framing. It is an estimate: real tokenizers
  differ by a few tens of percent on ordinary text, and more on code or non-Latin scripts.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

BUILTIN = "builtin"
ESTIMATE = "estimate"
ITEM_OVERHEAD = 4
CHARS_PER_TOKEN = 4


def _parts_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    texts = []
    for part in content if isinstance(content, list) else []:
        if isinstance(part, dict):
            text = part.get("text", part.get("refusal"))
            if isinstance(text, str):
                texts.append(text)
    return " ".join(texts)


def item_text(item: dict[str, Any]) -> str:
    """The text of an item a model reads: message parts, a call's name and arguments, a
    call's output, a reasoning summary."""
    itype = item.get("type")
    if itype == "message":
        return _parts_text(item.get("content"))
    if itype in {"function_call", "mcp_call", "custom_tool_call"}:
        return f"{item.get('name', '')} {item.get('arguments', item.get('input', ''))}"
    if itype in {"function_call_output", "custom_tool_call_output"}:
        return _parts_text(item.get("output"))
    if itype == "reasoning":
        return _parts_text(item.get("summary"))
    return ""


def chat_messages(
    instructions: str | None, items: Iterable[dict[str, Any]]
) -> list[dict[str, str]]:
    """The items as plain chat messages (role and text), for an upstream tokenizer."""
    messages = [{"role": "system", "content": instructions}] if instructions else []
    for item in items:
        role = item.get("role") if item.get("type") == "message" else None
        if role is None:
            role = "tool" if str(item.get("type", "")).endswith("_output") else "assistant"
        messages.append(
            {"role": "system" if role == "developer" else role, "content": item_text(item)}
        )
    return messages


def words(text: str) -> int:
    return len(text.split())


def count_item(item: dict[str, Any], method: str) -> int:
    text = item_text(item)
    if method == BUILTIN:
        return words(text)
    return math.ceil(len(text) / CHARS_PER_TOKEN) + ITEM_OVERHEAD


def count_fixed(instructions: str | None, tools: Iterable[dict[str, Any]], method: str) -> int:
    """What every request carries besides its items: instructions and tool definitions."""
    if method == BUILTIN:
        return words(instructions or "")
    total = math.ceil(len(instructions or "") / CHARS_PER_TOKEN)
    for tool in tools:
        total += math.ceil(len(json.dumps(tool)) / CHARS_PER_TOKEN) + ITEM_OVERHEAD
    return total


def count(
    instructions: str | None,
    items: Iterable[dict[str, Any]],
    tools: Iterable[dict[str, Any]] = (),
    *,
    method: str,
) -> int:
    return count_fixed(instructions, tools, method) + sum(count_item(i, method) for i in items)
