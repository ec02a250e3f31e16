"""Rendering a stored prompt's templates (Jinja2: a version's ``instructions``, each message's
``content``) with ``prompt.variables`` in a sandbox whose author cannot read the server, hang a
worker or fill its memory. Failures are ``InvalidRequest`` (400): ``invalid_prompt_template``
(param: where the template sits) for a syntax error, a loading tag, a removed filter, a sandbox
violation or any other render error; ``prompt_render_limit`` (same param) for a ``MAX_*`` limit;
``string_above_max_length`` for a template over ``MAX_TEMPLATE_CHARS``; and, param
``prompt.variables.<name>``, ``missing_required_parameter`` for a variable used but not given.

Jinja's sandbox stops attribute escapes but not work: a loop, a product or a width can run for
hours or ask for gigabytes. So every source of work is checked *before* the work, against one
``_Budget`` per render (a deadline, loop iterations, characters built): loops and ``~`` (the
parsed template is rewritten to send them through ``_counted`` and ``_concat``), calls,
``+ * ** %``, filters, printed values (``finalize``) and captured blocks (``concat``).
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable, Iterator, Mapping, MappingView
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache, wraps
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, UndefinedError, nodes
from jinja2.runtime import Context, LoopContext, Namespace
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError, safe_range
from jinja2.visitor import NodeTransformer

from shared.errors import InvalidRequest
from shared.prompts import check_variables as check_variables  # callers import it from here
from shared.prompts import variable_error

MAX_TEMPLATE_CHARS = 64 * 1024
MAX_OUTPUT_CHARS = 256 * 1024  # per template; also the most any one value may print as
MAX_RENDER_SECONDS = 1.0
MAX_LOOP_ITERATIONS = 100_000  # per render, all loops together (nested loops multiply)
MAX_INT_ARGUMENT = 100_000  # no call or filter takes a bigger int: ``'x'.ljust(10**9)``
MAX_INT_BITS = 16_384  # a product or power bigger than this is refused before it is computed
MAX_TEXT_BUILT = 32 * MAX_OUTPUT_CHARS  # characters of strings one render may build in all

TEMPLATE_ERROR = "invalid_prompt_template"
LIMIT_ERROR = "prompt_render_limit"

# Filters that build output from a width or a format string (``'x'|center(10**9)``) and two
# that nothing in a prompt needs and whose regexes have had ReDoS bugs.
REMOVED_FILTERS = ("center", "format", "indent", "wordwrap", "urlize", "xmlattr")
# The methods a template may call on data; anything else (``'x'.expandtabs``, ``.translate``,
# ``.format``: output sizes no guard can bound cheaply) is a sandbox violation.
SAFE_METHODS: dict[type, str] = {
    str: "capitalize casefold center count endswith find index isalnum isalpha isdigit islower "
    "isnumeric isspace istitle isupper ljust lower lstrip partition removeprefix removesuffix "
    "replace rfind rindex rjust rpartition rsplit rstrip split splitlines startswith strip "
    "swapcase title upper zfill",
    dict: "get items keys values",
    list: "count index",
    tuple: "count index",
}
# Filters that look at a value's items without turning the value into text.
_STRUCTURAL_FILTERS = (
    "attr batch count d default dictsort first groupby items last length list map max min "
    "random reject rejectattr reverse select selectattr slice sort sum unique"
)
_UNDEFINED = re.compile(r"'(\w+)' is undefined")
_Piece = str | tuple[str, dict[str, Any]]  # rendered text, or (name, part) of a part variable


class _LimitExceeded(Exception):
    """A render went over a limit; ``render`` reports it as ``prompt_render_limit``."""


@dataclass
class _Budget:
    deadline: float
    iterations: int = MAX_LOOP_ITERATIONS
    text: int = MAX_TEXT_BUILT


_BUDGET: ContextVar[_Budget] = ContextVar("prompt_render_budget")


def _spend(iterations: int = 0) -> None:
    """Charge the running render: every guard calls this, so the deadline holds to one step."""
    budget = _BUDGET.get(None)
    if budget is None:  # Jinja folding a constant while compiling: let it run at render time
        raise nodes.Impossible()
    budget.iterations -= iterations
    if budget.iterations < 0:
        raise _LimitExceeded(f"its loops ran more than {MAX_LOOP_ITERATIONS} iterations")
    if time.monotonic() > budget.deadline:
        raise _LimitExceeded(f"it took longer than {MAX_RENDER_SECONDS:g} s to render")


def _size(value: Any, limit: int = MAX_OUTPUT_CHARS) -> int:
    """About how long ``str(value)`` is, counted only until it passes ``limit``: a list of
    many references to one long string is refused without ever being turned into text."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, int):
        return value.bit_length() // 3 + 2
    if isinstance(value, Namespace):
        value = getattr(value, "_Namespace__attrs", {})
    if isinstance(value, Mapping):
        value = list(value.items())
    elif not isinstance(value, list | tuple | set | frozenset | MappingView):
        return 32  # a float, None, a generator, a macro: a short repr
    total = 2
    for item in value:
        total += _size(item, limit - total) + 2
        if total > limit:
            break
    return total


def _charge(size: int, what: str) -> None:
    """Refuse a string over ``MAX_OUTPUT_CHARS`` before it is built, and charge it to the
    render: strings that are each short can still fill memory when a list keeps them."""
    if size > MAX_OUTPUT_CHARS:
        raise _LimitExceeded(f"{what} would be longer than {MAX_OUTPUT_CHARS} characters")
    budget = _BUDGET.get()
    budget.text -= size
    if budget.text < 0:
        raise _LimitExceeded(f"it built more than {MAX_TEXT_BUILT} characters of text")


def _check_arguments(args: tuple[Any, ...] | list[Any], kwargs: Mapping[str, Any]) -> None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, int) and abs(value) > MAX_INT_ARGUMENT:
            raise _LimitExceeded(f"an integer argument is above {MAX_INT_ARGUMENT}")


def _check_replace(text: str, old: Any = "", new: Any = "", count: Any = -1, *_: Any) -> None:
    if isinstance(old, str) and isinstance(new, str):
        hits = text.count(old)
        if isinstance(count, int) and count >= 0:
            hits = min(hits, count)
        _charge(len(text) + hits * (len(new) - len(old)), "a replace() result")


class _Counted:
    """An iterable whose every item is charged to the render's loop budget."""

    def __init__(self, source: Any) -> None:
        self._source = source

    def __iter__(self) -> Iterator[Any]:
        for item in self._source:
            _spend(1)
            yield item

    def __len__(self) -> int:  # a TypeError for a generator makes LoopContext count instead
        return len(self._source)

    def __getitem__(self, index: Any) -> Any:  # ``range(9)|random``, ``|last``
        return self._source[index]


def _counted(iterable: Any) -> _Counted:
    return iterable if isinstance(iterable, _Counted) else _Counted(iterable)


def _concat(*values: Any) -> str:
    """``a ~ b``: refused before the joined string exists when it would be too long."""
    _spend()
    _charge(sum(_size(value) for value in values), "a ~ concatenation")
    return "".join(str(value) for value in values)


def _join(parts: Any) -> str:
    """The environment's ``concat``: the output of a macro or a ``set``/``filter`` block."""
    parts = list(parts)
    _charge(sum(map(len, parts)), "a block's output")
    return "".join(parts)


def _finalize(value: Any) -> Any:
    """Every ``{{ value }}``, before it is turned into text."""
    _spend()
    _charge(_size(value), "a printed value")
    return value


def _guard_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """A filter that checks its value's size, its int arguments and the deadline first, and
    the output of the two that can multiply their input (``join``, ``replace``)."""
    skip = 0 if getattr(func, "jinja_pass_arg", None) is None else 1  # context/environment
    structural = name in _STRUCTURAL_FILTERS.split()

    @wraps(func)  # keeps ``jinja_pass_arg``
    def guarded(*args: Any, **kwargs: Any) -> Any:
        _spend()
        value, rest = args[skip], args[skip + 1 :]
        _check_arguments(rest, kwargs)
        if not structural:  # the others turn the value into text
            _charge(_size(value), f"the value given to the {name} filter")
        if name == "join":
            value = list(value)  # a generator is measured once, then joined
            separator = rest[0] if rest else kwargs.get("d", "")
            _charge(_size(value) + _size(separator) * len(value), "a join result")
        elif name == "replace":
            _check_replace(str(value), *rest)
        elif name == "sum" and not isinstance(kwargs.get("start", (*rest, 0, 0)[1]), int | float):
            raise SecurityError("the sum filter adds numbers only")  # lists: quadratic copies
        return func(*args[:skip], value, *rest, **kwargs)

    return guarded


class _Guards(NodeTransformer):
    """Sends a parsed template's loops and ``~`` through the budget; refuses loading tags."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = _internal_call("_counted", [node.iter], node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return _internal_call("_concat", node.nodes, node.lineno)

    def _refuse(self, node: nodes.Node) -> nodes.Node:
        tag = type(node).__name__.lower().replace("fromimport", "from ... import")
        message = f"{{% {tag} %}} is not available in prompt templates"
        raise TemplateSyntaxError(message, node.lineno)

    visit_Extends = visit_Include = visit_Import = visit_FromImport = _refuse


def _internal_call(function: str, args: list[Any], lineno: int) -> nodes.Call:
    target = nodes.ImportedName(f"{__name__}.{function}", lineno=lineno)
    return nodes.Call(target, args, [], None, None, lineno=lineno)


class _Sandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset(("+", "*", "**", "%"))

    def __init__(self) -> None:
        # autoescape stays off (the default): a prompt is not HTML.
        super().__init__(undefined=StrictUndefined, finalize=_finalize, optimized=False)
        self.concat = _join  # type: ignore[method-assign]
        self.globals["range"] = lambda *args: _Counted(safe_range(*args))  # counts its items
        del self.globals["lipsum"]  # lipsum(100000) is 50 MB of Latin
        for name in REMOVED_FILTERS:
            del self.filters[name]
        self.filters = {name: _guard_filter(name, f) for name, f in self.filters.items()}

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        for kind, allowed in SAFE_METHODS.items():
            if isinstance(obj, kind) and attr not in allowed.split():
                return False
        return super().is_safe_attribute(obj, attr, value)

    def wrap_str_format(self, value: Any) -> None:
        return None  # ``str.format`` is then an unsafe attribute like any other

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        _spend()
        if obj is _concat or obj is _counted:
            return obj(*args)
        _check_arguments(args, kwargs)
        if isinstance(obj, LoopContext) and args:  # ``loop(children)`` in a recursive loop
            args = (_counted(args[0]), *args[1:])
        if isinstance(getattr(obj, "__self__", None), str) and obj.__name__ == "replace":
            _check_replace(obj.__self__, *args)
        result = super().call(context, obj, *args, **kwargs)
        if isinstance(result, str):
            _charge(len(result), "a call's result")
        return result

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        _spend()
        if operator == "%" and isinstance(left, str):
            raise SecurityError("string formatting with % is not available in prompt templates")
        if operator == "+" and isinstance(left, str | list | tuple):
            _charge(_size(left) + _size(right), "a + result")
        elif isinstance(left, int) and isinstance(right, int):
            if operator == "**" and abs(left) > 1 and right * left.bit_length() > MAX_INT_BITS:
                raise _LimitExceeded(f"a power is above 2**{MAX_INT_BITS}")
            if operator == "*" and left.bit_length() + right.bit_length() > MAX_INT_BITS:
                raise _LimitExceeded(f"a product is above 2**{MAX_INT_BITS}")
        elif operator == "*" and isinstance(left, int) != isinstance(right, int):
            times, repeated = (left, right) if isinstance(left, int) else (right, left)
            if not isinstance(repeated, float):
                _charge(_size(repeated) * max(times, 0), "a * result")
        return super().call_binop(context, operator, left, right)


@lru_cache(maxsize=1)
def _environment() -> _Sandbox:
    return _Sandbox()


@lru_cache(maxsize=64)  # a 64 KiB template compiles to ~3 MB
def _compiled(source: str) -> Template:
    environment = _environment()
    tree = _Guards().visit(environment.parse(source))
    return environment.from_string(tree.set_environment(environment))


def compile_template(source: str, where: str) -> Template:
    """``source`` compiled in the sandbox (cached by source), or a 400 naming ``where``."""
    if len(source) > MAX_TEMPLATE_CHARS:
        message = f"The prompt template at {where} is over {MAX_TEMPLATE_CHARS} characters long."
        raise InvalidRequest(message, param=where, code="string_above_max_length")
    try:
        return _compiled(source)
    except TemplateSyntaxError as exc:
        message = f"Invalid prompt template at {where}, line {exc.lineno}: {exc.message}"
        raise InvalidRequest(message, param=where, code=TEMPLATE_ERROR) from exc
    except Exception as exc:  # a RecursionError: nesting deeper than Jinja's parser goes
        message = f"Invalid prompt template at {where}: {type(exc).__name__}: {exc}"
        raise InvalidRequest(message, param=where, code=TEMPLATE_ERROR) from exc


def check_template(source: str, where: str) -> None:
    """Check a template as a version is saved: it compiles and loads nothing."""
    compile_template(source, where)


def render(template: Template | str, variables: dict[str, Any], where: str) -> str:
    """The text of ``template`` (a version's instructions) with ``variables`` filled in."""
    pieces = _pieces(template, variables, where)
    for name, part in (piece for piece in pieces if isinstance(piece, tuple)):
        message = f"The prompt variable '{name}' is an {part['type']} part: it fits in a "
        message += f"message's content, not in {where}."
        raise variable_error(name, message, "invalid_value")
    return "".join(str(piece) for piece in pieces)


def render_content(source: Template | str, variables: dict[str, Any], where: str) -> str | list:
    """A message's content: plain text, or a list of input parts when an image or a file
    variable is used, each part in place between the text around it."""
    pieces = _pieces(source, variables, where)
    if len(pieces) == 1 and isinstance(pieces[0], str):
        return pieces[0]
    return [
        dict(piece[1]) if isinstance(piece, tuple) else {"type": "input_text", "text": piece}
        for piece in pieces
        if piece != ""
    ]


def _pieces(template: Template | str, variables: dict[str, Any], where: str) -> list[_Piece]:
    """Render with each image or file variable as a placeholder, then split the text on them.
    A placeholder holds a random token per render, so a variable's text cannot forge one."""
    token = secrets.token_hex(16)
    context: dict[str, Any] = {}
    parts: list[tuple[str, dict[str, Any]]] = []
    for name, value in variables.items():
        kind = value.get("type") if isinstance(value, dict) else None
        if kind in ("input_image", "input_file"):
            context[name] = f"[[part-{token}-{len(parts)}]]"
            parts.append((name, value))
        else:
            context[name] = value.get("text", "") if kind == "input_text" else value
    if isinstance(template, str):
        template = compile_template(template, where)
    elif template.environment is not _environment():
        raise ValueError("not a template from shared.prompts.render.compile_template")
    pieces = re.split(rf"\[\[part-{token}-(\d+)\]\]", _generate(template, context, where))
    return [piece if i % 2 == 0 else parts[int(piece)] for i, piece in enumerate(pieces)]


def _generate(template: Template, context: dict[str, Any], where: str) -> str:
    """Run ``template`` under a fresh budget, counting the output as it comes."""
    reset = _BUDGET.set(_Budget(time.monotonic() + MAX_RENDER_SECONDS))
    stream = template.generate(context)
    chunks: list[str] = []
    total = 0
    try:
        for chunk in stream:
            chunks.append(chunk)
            if (total := total + len(chunk)) > MAX_OUTPUT_CHARS:
                raise _LimitExceeded(f"its output is over {MAX_OUTPUT_CHARS} characters")
    except Exception as exc:
        raise _render_error(exc, where) from exc
    finally:
        stream.close()  # type: ignore[attr-defined]  # a generator
        _BUDGET.reset(reset)
    return "".join(chunks)


def _render_error(exc: Exception, where: str) -> InvalidRequest:
    missing = _UNDEFINED.fullmatch(str(exc)) if isinstance(exc, UndefinedError) else None
    if missing is not None:
        name = missing.group(1)
        message = f"The prompt template at {where} uses the variable '{name}', which was not given."
        return variable_error(name, message, "missing_required_parameter")
    code, said = TEMPLATE_ERROR, f"failed to render: {type(exc).__name__}: {exc}"
    if isinstance(exc, _LimitExceeded):
        code, said = LIMIT_ERROR, f"went over a limit: {exc}."
    elif isinstance(exc, RecursionError):
        code, said = LIMIT_ERROR, "went over a limit: it nests too deeply."
    elif isinstance(exc, SecurityError):
        said = f"tried something the sandbox forbids: {exc}"
    return InvalidRequest(f"The prompt template at {where} {said}", param=where, code=code)
