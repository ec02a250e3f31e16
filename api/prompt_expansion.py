"""``prompt`` on a request (create, input_tokens, compact): the version it names (or the
prompt's default) rendered with its variables, and the request it describes.

Precedence (README, "Prompts"): the version's model and settings fill what the request does
not set; a field the request sets wins (as OpenAI's do). The rendered ``instructions`` (a
``developer`` message) and ``messages`` become the response's instructions, as OpenAI echoes
them: a list of input items, which the model sees before the request's own input and which a
later response in a chain does not inherit. A request's own ``instructions`` replace the
version's, keeping its messages. Every failure is a 400 (404 for a prompt or version that is
not there) before anything is stored or queued.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from api.deps import Deps
from api.prompts import find_prompt, prefixed, version_number
from shared.errors import NotFound, ResqError
from shared.prompts.render import check_variables, render, render_content
from shared.schema.prompts import PromptReference, PromptVersionBody
from shared.schema.validation import parse_body
from shared.store.prompts import PromptStore

JSON = dict[str, Any]


@dataclass(frozen=True)
class Expanded:
    body: JSON  # the request with the version's settings filled in
    instructions: list[JSON]  # rendered, as input items (the Response's ``instructions``)
    prompt: JSON  # the echo: ``{"id", "version", "variables"}``
    validation: JSON | None  # the version's structured-output settings


def _message(role: str, content: str | list[JSON]) -> JSON:
    if isinstance(content, list):
        content = [_part(p) for p in content]
    return {"type": "message", "role": role, "content": content}


def _part(part: JSON) -> JSON:
    """A part variable as the Response echoes it: an image's ``detail`` defaults to ``auto``
    (the SDK's ``ResponseInputImage`` requires one)."""
    if part.get("type") == "input_image" and part.get("detail") is None:
        return {**part, "detail": "auto"}
    return part


def _reference(raw: Any) -> PromptReference:
    try:
        return parse_body(PromptReference, raw)
    except ResqError as exc:
        raise prefixed(exc, "prompt") from None


def expand(deps: Deps, body: Any, *, tenant: str) -> Expanded | None:
    """The request ``body`` describes once its ``prompt`` is applied; None without one."""
    if not isinstance(body, dict) or body.get("prompt") is None:
        return None
    ref = _reference(body["prompt"])
    store = PromptStore(deps.store)
    row = find_prompt(store, tenant, ref.id, param="prompt.id")
    number = version_number(ref.version, "prompt.version") if ref.version else row.default_version
    found = store.version(prompt_id=row.id, version=number)
    if found is None:
        raise NotFound(f"Prompt '{row.id}' has no version '{ref.version}'.", param="prompt.version")
    version = PromptVersionBody.model_validate(found.body)
    variables = check_variables(ref.variables, version.variables)
    own_instructions = body.get("instructions")
    items: list[JSON] = []
    if isinstance(own_instructions, str):
        items.append(_message("developer", own_instructions))
    elif version.instructions:
        text = render(version.instructions, variables, "prompt.instructions")
        items.append(_message("developer", text))
    for i, message in enumerate(version.messages):
        content = render_content(message.content, variables, f"prompt.messages[{i}].content")
        items.append(_message(message.role, content))
    given = {k: v for k, v in body.items() if v is not None and k != "instructions"}
    shown = {k: _part(v) if isinstance(v, dict) else v for k, v in variables.items()}
    echo = {"id": row.id, "version": str(number), "variables": shown}
    validation = version.validation.model_dump(exclude_none=True) if version.validation else None
    return Expanded(
        body={**version.settings(), **given, "prompt": echo},
        instructions=items,
        prompt=echo,
        validation=validation or None,
    )
