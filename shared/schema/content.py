"""The parts of input items: a message's content parts and a reasoning item's summary parts
(spec digest §3.2; ``openai.types.responses.response_input_message_content_list_param``).

Which content parts a message may hold depends on its role: an assistant message holds what
a model wrote (``output_text``, ``refusal``), any other message what a client sends
(``input_text``, ``input_image``, ``input_file``, ``input_audio``). resq reads the text of
text parts; the other keys of a part (an image's ``image_url``, ``detail`` …) are the
upstream's to judge, so they are kept as sent and not checked here.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    PrivateAttr,
    Tag,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from shared.schema.validation import missing_error, type_error, value_error

INPUT_PART_TYPES = ("input_audio", "input_file", "input_image", "input_text")
ASSISTANT_PART_TYPES = ("output_text", "refusal")


class Sent(BaseModel):
    """A client's object, checked with strict JSON types and kept as sent: unknown keys stay,
    in the client's order, because stored items and the Response's echo show them as given."""

    model_config = ConfigDict(strict=True, extra="allow")
    _sent: dict[str, Any] = PrivateAttr(default_factory=dict)

    @model_validator(mode="wrap")
    @classmethod
    def _keep_sent(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        checked = handler(data)
        checked._sent = data
        return checked

    def normalized(self) -> dict[str, Any]:
        """The object in the form resq stores: as sent, unless a model fills in defaults."""
        return dict(self._sent)


def _text(value: Any) -> Any:
    if not isinstance(value, str):  # OpenAI says "missing" for a text that is not a string
        raise missing_error()
    return value


Text = Annotated[str, BeforeValidator(_text)]


class InputText(Sent):
    type: Literal["input_text"]
    text: Text


class InputImage(Sent):
    type: Literal["input_image"]


class InputFile(Sent):
    type: Literal["input_file"]


class InputAudio(Sent):
    type: Literal["input_audio"]


class OutputText(Sent):
    type: Literal["output_text"]
    text: Text

    def normalized(self) -> dict[str, Any]:
        return {"annotations": [], **self._sent}


class Refusal(Sent):
    type: Literal["refusal"]


def _part_type(part: Any) -> str | None:
    return f"<{part['type']}>" if isinstance(part, dict) else None


def _only(allowed: tuple[str, ...]) -> BeforeValidator:
    """A content part is an object whose ``type`` is one of ``allowed``, checked before the
    union picks the part's model so that the error is OpenAI's."""
    supported = " and ".join(f"'{t}'" for t in allowed)

    def check(part: Any) -> Any:
        if not isinstance(part, dict):
            raise type_error("an object")
        if part.get("type") not in allowed:
            message = f"Invalid value: '{part.get('type')}'. Supported values are: {supported}."
            raise value_error(message, at="type")
        return part

    return BeforeValidator(check)


InputPart = Annotated[
    Annotated[InputText, Tag("<input_text>")]
    | Annotated[InputImage, Tag("<input_image>")]
    | Annotated[InputFile, Tag("<input_file>")]
    | Annotated[InputAudio, Tag("<input_audio>")],
    Discriminator(_part_type),
    _only(INPUT_PART_TYPES),
]
AssistantPart = Annotated[
    Annotated[OutputText, Tag("<output_text>")] | Annotated[Refusal, Tag("<refusal>")],
    Discriminator(_part_type),
    _only(ASSISTANT_PART_TYPES),
]


def text_part(role: str, text: str) -> dict[str, Any]:
    """The one part of a message sent as a plain string."""
    if role == "assistant":
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return {"type": "input_text", "text": text}


class SummaryText(BaseModel):
    """A part of a reasoning item's ``summary``."""

    model_config = ConfigDict(strict=True, extra="allow")
    type: Literal["summary_text"]
    text: str

    @model_validator(mode="before")
    @classmethod
    def _absent_is_null(cls, data: Any) -> Any:
        # OpenAI reports an absent type or text as the wrong value or type, not as missing.
        return {"type": None, "text": None, **data} if isinstance(data, dict) else data

    @field_validator("type", mode="before")
    @classmethod
    def _type(cls, value: Any) -> Any:
        if value != "summary_text":
            raise value_error(f"Invalid value: {value!r}. Supported values are: 'summary_text'.")
        return value

    @field_validator("text", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        if not isinstance(value, str):
            raise type_error("a string")
        return value
