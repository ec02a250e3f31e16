"""Stored prompts (OpenAI's ``prompt`` parameter: ``{"id", "version", "variables"}``).

A prompt version holds Jinja2 templates (its ``instructions`` and messages' ``content``) and a
JSON Schema for the variables a request fills them with. This module checks a request's
variables; ``shared.prompts.render`` compiles and renders the templates in a sandbox.
Errors are ``InvalidRequest`` (400) with param ``prompt.variables.<name>``.
"""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, best_match

from shared.errors import InvalidRequest

# The input parts a variable may be instead of plain JSON: text renders inline, an image or a
# file becomes a content part of its own in a message.
PART_TYPES = ("input_text", "input_image", "input_file")
_SCHEMA_CODES = {  # jsonschema's keyword → OpenAI's code; any other keyword: invalid_value
    "type": "invalid_type",
    "required": "missing_required_parameter",
    "additionalProperties": "unknown_parameter",
}


def variable_error(name: str, message: str, code: str) -> InvalidRequest:
    return InvalidRequest(message, param=f"prompt.variables.{name}", code=code)


def check_variables(
    variables: dict[str, Any] | None, schema: dict[str, Any] | None
) -> dict[str, Any]:
    """A request's ``prompt.variables``, checked against the version's JSON Schema (Draft
    2020-12; any names when there is none). An object among them must be an input part."""
    variables = {} if variables is None else variables
    for name, value in variables.items():
        _check_part(name, value)
    if schema is None:
        return variables
    declared = schema.get("properties") or {}
    for name in variables:
        if name not in declared:
            message = f"Unknown prompt variable: '{name}'. The prompt does not declare it."
            raise variable_error(name, message, "unknown_parameter")
    for name in schema.get("required") or []:
        if name not in variables:
            message = f"Missing required prompt variable: '{name}'."
            raise variable_error(name, message, "missing_required_parameter")
    try:
        error = best_match(Draft202012Validator(schema).iter_errors(variables))
    except SchemaError as exc:
        message = f"The prompt's variables schema is invalid: {exc.message}"
        raise InvalidRequest(message, param="prompt", code="invalid_value") from exc
    if error is None:
        return variables
    path = list(error.absolute_path)
    param = f"prompt.variables.{path[0]}" if path else "prompt.variables"
    code = _SCHEMA_CODES.get(str(error.validator), "invalid_value")
    raise InvalidRequest(f"Invalid value for {param}: {error.message}", param=param, code=code)


def _check_part(name: str, value: Any) -> None:
    if not isinstance(value, dict):
        return
    kind = value.get("type")
    if kind not in PART_TYPES:
        supported = ", ".join(f"'{t}'" for t in PART_TYPES)
        message = f"Invalid prompt variable '{name}': an object must be an input part, "
        raise variable_error(name, f"{message}one of {supported}; not {kind!r}.", "invalid_value")
    if kind == "input_text" and not isinstance(value.get("text"), str):
        message = f"Invalid prompt variable '{name}': an input_text part's text must be a string."
        raise variable_error(name, message, "invalid_type")
