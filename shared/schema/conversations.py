"""Conversations API request bodies (spec digest §7.5); ``api.conversations`` builds the
Conversation object from the store's rows."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from shared.schema.items import InputItem
from shared.schema.requests import validate_metadata
from shared.schema.validation import custom_error, json_type_name

MAX_ITEMS_PER_REQUEST = 20


def _items(value: Any, param: str = "items") -> Any:
    if value is None:
        return None
    if not isinstance(value, list):
        raise custom_error(
            "invalid_type",
            f"Invalid type for '{param}': expected an array, but got {json_type_name(value)} "
            "instead.",
            param,
        )
    if len(value) > MAX_ITEMS_PER_REQUEST:
        raise custom_error(
            "array_above_max_length",
            f"Invalid '{param}': array too long. Expected an array with maximum length "
            f"{MAX_ITEMS_PER_REQUEST}, but got an array with length {len(value)} instead.",
            param,
        )
    return value


class _Body(BaseModel):
    # Unknown keys are accepted and ignored, as on create (spec digest §1.1).
    model_config = ConfigDict(strict=True, extra="ignore")


class CreateConversation(_Body):
    items: list[InputItem] | None = None
    metadata: dict[str, str] | None = None

    _check_items = field_validator("items", mode="before")(_items)
    _check_metadata = field_validator("metadata", mode="before")(validate_metadata)


class UpdateConversation(_Body):
    metadata: dict[str, str] | None  # required, nullable

    _check_metadata = field_validator("metadata", mode="before")(validate_metadata)


class CreateItems(_Body):
    items: list[InputItem]

    _check_items = field_validator("items", mode="before")(_items)
