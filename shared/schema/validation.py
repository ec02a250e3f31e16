"""Turn pydantic validation errors into OpenAI's error codes and messages (spec digest §1.3)."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails, PydanticCustomError

from shared.errors import InvalidRequest

M = TypeVar("M", bound=BaseModel)

_TYPE_NAMES = {
    str: "a string",
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    list: "an array",
    dict: "an object",
    type(None): "null",
}

_EXPECTED = {
    "string_type": "a string",
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "a boolean",
    "dict_type": "an object",
    "list_type": "an array",
    "model_type": "an object",
    "model_attributes_type": "an object",
    "int_from_float": "an integer",
}


def json_type_name(value: Any) -> str:
    for py_type, name in _TYPE_NAMES.items():
        if type(value) is py_type:
            return name
    return "an unsupported value"


def custom_error(code: str, message: str, param: str) -> PydanticCustomError:
    """A validation error whose OpenAI ``code`` and ``param`` are chosen by the caller."""
    return PydanticCustomError(code, message, {"param": param})


# Errors placed where their validator ran (a model inside a list does not know its index):
# ``_convert`` takes their ``param`` from the error's location.


def missing_error() -> PydanticCustomError:
    """``missing_required_parameter``, for values OpenAI counts as absent (``null``, or a text
    that is not a string)."""
    return PydanticCustomError("missing", "Field required")


def type_error(expected: str, *, at: str | None = None) -> PydanticCustomError:
    """``invalid_type`` with OpenAI's wording, for checks pydantic words otherwise (a union
    of types, a ``null`` where a key is required); ``at`` names the key of the validated
    object the error is about."""
    context = {"expected": expected} if at is None else {"expected": expected, "at": at}
    return PydanticCustomError("invalid_type", "expected {expected}", context)


def value_error(message: str, *, at: str | None = None) -> PydanticCustomError:
    """``invalid_value`` with ``message`` as OpenAI words it (no ``param`` in it); ``at``
    names the key of the validated object the error is about."""
    context = {"message": message} if at is None else {"message": message, "at": at}
    # ``_convert`` reads the message from the context: braces in a client's value quoted in
    # it are never taken for placeholders.
    return PydanticCustomError("invalid_value", "{message}", context)


_MEMBER_NAMES = {"str", "int", "float", "bool", "list", "dict"}


def param_from_loc(loc: tuple[int | str, ...]) -> str:
    """``('metadata', 'k')`` → ``metadata.k``; ``('input', 3, 'id')`` → ``input[3].id``.

    Segments pydantic adds for union members (``str``, ``list[...]``, ``function-…``) are dropped,
    and so are the tags of resq's discriminated unions, written ``<…>`` (``<message>``).
    """
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith("<") or "[" in part or "-" in part or part in _MEMBER_NAMES:
            continue
        else:
            out += f".{part}" if out else part
    return out


def _bound_error(err: ErrorDetails, param: str, above: bool) -> tuple[str, str]:
    ctx = err.get("ctx", {})
    value = err.get("input")
    bound = next(iter(v for k, v in ctx.items() if k in {"ge", "gt", "le", "lt"}), None)
    # The field's kind, from its bound: decimal settings are declared with float bounds, so
    # ``temperature: 3`` is a decimal above its maximum, as OpenAI says.
    kind = "decimal" if isinstance(bound, float) else "integer"
    if isinstance(bound, float) and bound.is_integer():
        bound = int(bound)
    direction = "above maximum" if above else "below minimum"
    op = "<=" if above else ">="
    code = f"{kind}_{'above_max' if above else 'below_min'}_value"
    message = (
        f"Invalid '{param}': {kind} {direction} value. Expected a value {op} {bound}, "
        f"but got {value} instead."
    )
    return code, message


def _convert(err: ErrorDetails) -> InvalidRequest:
    etype = err["type"]
    ctx = err.get("ctx") or {}
    param = ctx.get("param") or param_from_loc(err["loc"])
    if "param" in ctx:
        return InvalidRequest(err["msg"], param=param, code=etype)
    value = err.get("input")
    if "at" in ctx:  # a model's check about one of its keys
        param, value = f"{param}.{ctx['at']}", value.get(ctx["at"])
    if etype == "invalid_value":  # value_error(): the message is OpenAI's already
        return InvalidRequest(ctx["message"], param=param, code=etype)
    if etype == "missing":
        return InvalidRequest(
            f"Missing required parameter: '{param}'.",
            param=param,
            code="missing_required_parameter",
        )
    if etype in {"greater_than_equal", "greater_than"}:
        code, message = _bound_error(err, param, above=False)
        return InvalidRequest(message, param=param, code=code)
    if etype in {"less_than_equal", "less_than"}:
        code, message = _bound_error(err, param, above=True)
        return InvalidRequest(message, param=param, code=code)
    if etype in {"literal_error", "enum"}:
        expected = ctx.get("expected", "")
        return InvalidRequest(
            f"Invalid value: {err.get('input')!r}. Supported values are: {expected}.",
            param=param,
            code="invalid_value",
        )
    if etype == "string_too_long":
        limit = ctx.get("max_length")
        value = err.get("input")
        length = len(value) if isinstance(value, str) else "?"
        return InvalidRequest(
            f"Invalid '{param}': string too long. Expected a string with maximum length "
            f"{limit}, but got a string with length {length} instead.",
            param=param,
            code="string_above_max_length",
        )
    if etype in _EXPECTED or etype.endswith("_type"):
        expected = ctx["expected"] if etype == "invalid_type" else _EXPECTED.get(etype)
        expected = expected or "a different type"
        return InvalidRequest(
            f"Invalid type for '{param}': expected {expected}, but got "
            f"{json_type_name(value)} instead.",
            param=param,
            code="invalid_type",
        )
    return InvalidRequest(f"Invalid '{param}': {err['msg']}.", param=param, code="invalid_value")


def to_invalid_request(exc: ValidationError) -> InvalidRequest:
    """The first error of a pydantic ``ValidationError`` as an OpenAI-style ``InvalidRequest``.

    Union fields report one error per member; the first is the one a user can act on, and
    ``param_from_loc`` strips the member tags so the ``param`` is the field's own path.
    """
    errors = exc.errors(include_url=False)
    return _convert(errors[0])


def parse_body(model: type[M], body: Any) -> M:
    """Validate a JSON request body against ``model``, raising ``InvalidRequest`` with
    OpenAI's code and param."""
    if not isinstance(body, dict):
        raise InvalidRequest(
            f"Invalid type for the request body: expected an object, but got "
            f"{json_type_name(body)} instead.",
            code="invalid_type",
        )
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise to_invalid_request(exc) from None
