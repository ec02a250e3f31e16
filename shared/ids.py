"""Object ids, in OpenAI's prefixed style (``resp_…``, ``msg_…``)."""

from __future__ import annotations

import secrets

RESPONSE = "resp"
MESSAGE = "msg"
FUNCTION_CALL = "fc"
CALL = "call"
REASONING = "rs"
REQUEST = "req"


def new_id(prefix: str) -> str:
    """A new random id: ``<prefix>_`` followed by 48 hex characters."""
    return f"{prefix}_{secrets.token_hex(24)}"
