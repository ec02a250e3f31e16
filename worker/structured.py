"""Structured outputs resq checks itself: a ``text.format`` of ``json_schema`` with
``strict: true`` (or any ``json_schema`` / ``json_object`` on a route with
``validate_json = true``) has the model's final text validated with ``jsonschema``.

An answer that fails is not shown: the run holds a validated answer's text until it passed
(``worker.run``), tells the model what was wrong and asks again, up to the route's
``json_retries``; after the last try the response fails with the first problem quoted. Holding
the text is what keeps a stream parseable: the SDK's ``responses.stream(text_format=...)``
parses every ``output_text.done`` it sees, so an invalid answer must never reach one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, best_match

from shared.routing import Route

JSON = dict[str, Any]


class OutputInvalid(Exception):
    """The model's answers kept failing validation."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Validation:
    name: str  # the format's name, for messages
    schema: JSON | None  # None: any JSON object (``json_object``)
    retries: int

    @classmethod
    def for_job(
        cls, text: JSON | None, route: Route | None, override: JSON | None = None
    ) -> Validation | None:
        """The check a job's answers get, or None when resq leaves them to the model.
        ``override``: a prompt version's ``validate_json`` / ``json_retries``, over the
        route's."""
        fmt = (text or {}).get("format") or {}
        settings = override or {}
        retries = settings.get("json_retries", route.json_retries if route is not None else 0)
        forced = settings.get("validate_json", route is not None and route.validate_json)
        if fmt.get("type") == "json_schema" and (fmt.get("strict") or forced):
            schema = fmt.get("schema")
            return cls(
                str(fmt.get("name") or "response"),
                schema if isinstance(schema, dict) else {},
                retries,
            )
        if fmt.get("type") == "json_object" and forced:
            return cls("json_object", None, retries)
        return None

    def problem(self, text: str) -> str | None:
        """The first thing wrong with ``text`` as an answer, or None when it passes."""
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            return f"the answer is not valid JSON ({exc})"
        if self.schema is None:
            return None if isinstance(value, dict) else "the answer is not a JSON object"
        try:
            error = best_match(Draft202012Validator(self.schema).iter_errors(value))
        except SchemaError as exc:  # checked at create; a stored schema should not get here
            return f"the schema itself is invalid: {exc.message}"
        if error is None:
            return None
        where = error.json_path if error.path else "the top level"
        return f"at {where}: {error.message}"

    def retry_items(self, answer: str, problem: str) -> list[JSON]:
        """What the model is shown before it is asked again: its answer and what was wrong."""
        wanted = f"the JSON schema '{self.name}'" if self.schema is not None else "a JSON object"
        return [
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": answer, "annotations": []}],
            },
            {
                "type": "message",
                "role": "user",
                "content": [
                    {
                        "type": "input_text",
                        "text": f"Your answer does not match {wanted}: {problem}. "
                        "Answer again with only JSON that matches it.",
                    }
                ],
            },
        ]

    def failure(self, attempts: int, first_problem: str) -> OutputInvalid:
        wanted = f"the JSON schema '{self.name}'" if self.schema is not None else "a JSON object"
        tries = "1 attempt" if attempts == 1 else f"{attempts} attempts"
        return OutputInvalid(
            f"The model's answer did not match {wanted} after {tries}; the first problem: "
            f"{first_problem}."
        )
