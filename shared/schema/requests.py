"""Request bodies, parsed strictly (wrong JSON types are 400s, not coercions).

Unknown top-level keys are accepted and ignored (spec digest §1.1: each SDK release adds
fields, and a self-hosted server is better off tolerating them).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.schema.params import Conversation, Input, ToolChoice
from shared.schema.validation import custom_error, json_type_name, parse_body

METADATA_MAX_KEYS = 16
METADATA_MAX_KEY_LENGTH = 64
METADATA_MAX_VALUE_LENGTH = 512

Effort = Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"]
Summary = Literal["auto", "concise", "detailed"]
ServiceTier = Literal["auto", "default", "flex", "scale", "priority", "fast", "ultrafast"]
# openai 3.57's ResponseIncludable.
Includable = Literal[
    "file_search_call.results",
    "web_search_call.results",
    "web_search_call.action.sources",
    "message.input_image.image_url",
    "computer_call_output.output.image_url",
    "code_interpreter_call.outputs",
    "reasoning.encrypted_content",
    "message.output_text.logprobs",
]
# Integer settings stay within what every store and upstream can hold.
INT32_MAX = 2_147_483_647
# The longest model name the store keeps (its column width); a longer one is refused here.
MODEL_MAX_LENGTH = 256
ModelName = Annotated[str, Field(max_length=MODEL_MAX_LENGTH)]
JSON_SCHEMA_NAME = r"^[a-zA-Z0-9_-]{1,64}$"


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")


class ReasoningParam(_Strict):
    effort: Effort | None = None
    summary: Summary | None = None
    generate_summary: Summary | None = None


class TextFormat(_Strict):
    type: Literal["text", "json_object", "json_schema"]
    name: Annotated[str, Field(pattern=JSON_SCHEMA_NAME)] | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    description: str | None = None
    strict: bool | None = None

    @model_validator(mode="after")
    def _json_schema_needs_name_and_schema(self) -> TextFormat:
        if self.type == "json_schema":
            for field, value in (("name", self.name), ("schema", self.schema_)):
                if value is None:
                    raise custom_error(
                        "missing_required_parameter",
                        f"Missing required parameter: 'text.format.{field}'.",
                        f"text.format.{field}",
                    )
        return self


class TextParam(_Strict):
    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class StreamOptions(_Strict):
    include_obfuscation: bool | None = None


def validate_metadata(value: Any, param: str = "metadata") -> dict[str, str] | None:
    """OpenAI's metadata limits: ≤16 keys, keys ≤64 characters, string values ≤512."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise custom_error(
            "invalid_type",
            f"Invalid type for '{param}': expected an object, but got "
            f"{json_type_name(value)} instead.",
            param,
        )
    if len(value) > METADATA_MAX_KEYS:
        raise custom_error(
            "object_above_max_properties",
            f"Invalid '{param}': too many properties. Expected an object with at most "
            f"{METADATA_MAX_KEYS} properties, but got an object with {len(value)} properties "
            "instead.",
            param,
        )
    for key, item in value.items():
        if len(key) > METADATA_MAX_KEY_LENGTH:
            raise custom_error(
                "property_name_above_max_length",
                f"Invalid property name in '{param}': '{key}' is too long. Expected a string "
                f"with maximum length {METADATA_MAX_KEY_LENGTH}, but got a string with length "
                f"{len(key)} instead.",
                f"{param}.{key}",
            )
        if not isinstance(item, str):
            raise custom_error(
                "invalid_type",
                f"Invalid type for '{param}.{key}': expected a string, but got "
                f"{json_type_name(item)} instead.",
                f"{param}.{key}",
            )
        if len(item) > METADATA_MAX_VALUE_LENGTH:
            raise custom_error(
                "string_above_max_length",
                f"Invalid '{param}.{key}': string too long. Expected a string with maximum "
                f"length {METADATA_MAX_VALUE_LENGTH}, but got a string with length {len(item)} "
                "instead.",
                f"{param}.{key}",
            )
    return value


class CreateResponseRequest(_Strict):
    """The body of ``POST /v1/responses`` (spec digest §1.1)."""

    model: ModelName | None = None
    input: Input = None
    instructions: str | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    background: bool | None = None
    store: bool | None = None
    previous_response_id: str | None = None
    conversation: Conversation = None
    include: list[Includable] | None = None
    # Checked by ``shared.schema.tools.prepare_tools``.
    tools: list[dict[str, Any]] | None = None
    tool_choice: ToolChoice = None
    parallel_tool_calls: bool | None = None
    max_tool_calls: Annotated[int, Field(ge=1, le=INT32_MAX)] | None = None
    max_output_tokens: Annotated[int, Field(ge=16, le=INT32_MAX)] | None = None
    # Decimal settings have decimal bounds: the error codes say "decimal" whatever the JSON
    # literal looks like (shared.schema.validation).
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    presence_penalty: Annotated[float, Field(ge=-2.0, le=2.0)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2.0, le=2.0)] | None = None
    reasoning: ReasoningParam | None = None
    text: TextParam | None = None
    truncation: Literal["auto", "disabled"] | None = None
    metadata: dict[str, str] | None = None
    prompt: dict[str, Any] | None = None
    prompt_cache_key: Annotated[str, Field(max_length=64)] | None = None
    prompt_cache_retention: str | None = None
    safety_identifier: Annotated[str, Field(max_length=128)] | None = None
    service_tier: ServiceTier | None = None
    user: str | None = None

    @field_validator("metadata", mode="before")
    @classmethod
    def _metadata(cls, value: Any) -> Any:
        return validate_metadata(value)

    @model_validator(mode="after")
    def _cross_field(self) -> CreateResponseRequest:
        if self.model is None and self.prompt is None:
            raise custom_error(
                "missing_required_parameter", "Missing required parameter: 'model'.", "model"
            )
        if self.input is None and self.previous_response_id is None and self.prompt is None:
            raise custom_error(
                "missing_required_parameter", "Missing required parameter: 'input'.", "input"
            )
        if self.background and self.store is False:
            raise custom_error(
                "invalid_value",
                "Background responses must be stored: 'background': true cannot be combined "
                "with 'store': false.",
                "store",
            )
        return self


class InputTokensRequest(_Strict):
    """The body of ``POST /v1/responses/input_tokens`` (§7.2): every key optional."""

    model: ModelName | None = None
    input: Input = None
    instructions: str | None = None
    previous_response_id: str | None = None
    conversation: Conversation = None
    tools: list[dict[str, Any]] | None = None
    truncation: Literal["auto", "disabled"] | None = None


class CompactRequest(_Strict):
    """The body of ``POST /v1/responses/compact`` (§7.3)."""

    model: ModelName
    input: Input = None
    instructions: str | None = None
    previous_response_id: str | None = None
    prompt_cache_key: Annotated[str, Field(max_length=64)] | None = None


def parse_create_request(body: Any) -> CreateResponseRequest:
    """Validate a create body, raising ``InvalidRequest`` with OpenAI's code and param."""
    return parse_body(CreateResponseRequest, body)
