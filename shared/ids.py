"""Object ids, in OpenAI's prefixed style (``resp_…``, ``msg_…``)."""

from __future__ import annotations

import secrets

RESPONSE = "resp"
MESSAGE = "msg"
FUNCTION_CALL = "fc"
CALL = "call"
REASONING = "rs"
REQUEST = "req"
EVENT = "evt"  # a webhook event (the payload's id)
WEBHOOK_DELIVERY = "wh"  # the webhook-id header: one event to one endpoint
WEBHOOK_ENDPOINT = "whep"


def new_id(prefix: str) -> str:
    """A new random id: ``<prefix>_`` followed by 48 hex characters."""
    return f"{prefix}_{secrets.token_hex(24)}"


CONVERSATION = "conv"
COMPACTION = "cmp"
PROMPT = "pmpt"
MCP_CALL = "mcp"
MCP_LIST_TOOLS = "mcpl"
MCP_APPROVAL_REQUEST = "mcpr"
