"""Webhook endpoint request bodies, in the shapes the openai SDK (3.x) speaks
(``openai.types.webhooks``); ``api.webhook_endpoints`` builds the objects it answers with from the
store's rows. Unknown request fields are ignored, as for responses (spec digest 3: SDKs add
fields before servers know them)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.schema.validation import custom_error, parse_body

# The events resq sends (background responses ending); /v1/webhook_event_types lists them.
EVENT_TYPES = ("response.completed", "response.failed", "response.cancelled", "response.incomplete")
MAX_NAME = 256
MAX_URL = 2048


def _check_event_types(value: list[str], param: str = "event_types") -> list[str]:
    if not value:
        raise custom_error(
            "invalid_value", f"Invalid '{param}': expected at least one event type.", param
        )
    unknown = [v for v in value if v not in EVENT_TYPES]
    if unknown:
        raise custom_error(
            "invalid_value",
            f"Invalid value: {unknown[0]!r} is not an event type this server sends. "
            f"Supported values are: {', '.join(repr(t) for t in EVENT_TYPES)}.",
            param,
        )
    return list(dict.fromkeys(value))  # in order, without repeats


class _Request(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class CreateEndpoint(_Request):
    name: str = Field(min_length=1, max_length=MAX_NAME)
    url: str = Field(min_length=1, max_length=MAX_URL)
    event_types: list[str]

    _event_types = field_validator("event_types")(_check_event_types)


class UpdateEndpoint(_Request):
    name: str | None = Field(default=None, min_length=1, max_length=MAX_NAME)
    url: str | None = Field(default=None, min_length=1, max_length=MAX_URL)
    event_types: list[str] | None = None

    @field_validator("event_types")
    @classmethod
    def _types(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else _check_event_types(value)


class RotateSecret(_Request):
    keep_old_secret_active_for_24_hours: bool = False


class TestEndpoint(_Request):
    event_type: str

    @field_validator("event_type")
    @classmethod
    def _type(cls, value: str) -> str:
        return _check_event_types([value], "event_type")[0]


parse = parse_body
