"""Prompt templates (shared.prompts.render) and their variables (shared.prompts): what renders,
how image and file variables land as content parts, and the exact code and param of each 400:
sandbox escapes, loading tags, and every limit, each of which must end fast."""

from __future__ import annotations

import time
from typing import Any

import pytest

from shared.errors import InvalidRequest
from shared.prompts import check_variables
from shared.prompts.render import (
    MAX_OUTPUT_CHARS,
    MAX_TEMPLATE_CHARS,
    check_template,
    compile_template,
    render,
    render_content,
)

WHERE = "version.messages[1].content"
IMAGE = {"type": "input_image", "image_url": "https://example.com/cat.png", "detail": "low"}
FILE = {"type": "input_file", "file_id": "file-abc"}


def refused(source: str, variables: dict[str, Any] | None = None) -> InvalidRequest:
    """The 400 a render of ``source`` gives, within the time limit's margin."""
    started = time.monotonic()
    with pytest.raises(InvalidRequest) as caught:
        render(source, variables or {}, WHERE)
    assert time.monotonic() - started < 1.5
    assert caught.value.status == 400
    assert caught.value.type == "invalid_request_error"
    return caught.value


def assert_error(error: InvalidRequest, code: str, param: str, *words: str) -> None:
    assert (error.code, error.param) == (code, param), error.message
    for word in words:
        assert word in error.message


# ---- rendering -----------------------------------------------------------------------------


def test_renders_variables_loops_and_filters() -> None:
    source = "Hi {{ name|title }}: {% for t in topics %}{{ loop.index }}.{{ t }} {% endfor %}"
    variables = {"name": "ada lovelace", "topics": ["maths", "engines"]}
    assert render(source, variables, WHERE) == "Hi Ada Lovelace: 1.maths 2.engines "


def test_a_compiled_template_renders_like_its_source() -> None:
    template = compile_template("{{ a ~ 123456789 }}", WHERE)
    assert render(template, {"a": "n"}, WHERE) == "n123456789"


def test_variable_text_is_never_rendered_as_a_template() -> None:
    assert render("{{ text }}", {"text": "{{ 7 * 7 }}"}, WHERE) == "{{ 7 * 7 }}"


def test_ranges_and_big_lists_work_with_filters_that_do_not_print_them() -> None:
    source = "{{ range(3)|reverse|list }} {{ range(3)|last }} {{ xs|length }} {{ xs|first|length }}"
    variables = {"xs": ["y" * 100_000] * 10}
    assert render(source, variables, WHERE) == "[2, 1, 0] 2 10 100000"


def test_power_is_left_associative_in_jinja_so_9_9_9_is_small() -> None:
    assert render("{{ 9**9**9 }}", {}, WHERE) == str((9**9) ** 9)


# ---- content parts -------------------------------------------------------------------------


def test_an_image_lands_as_its_own_part_in_place() -> None:
    content = render_content("Describe {{ photo }} please", {"photo": IMAGE}, WHERE)
    assert content == [
        {"type": "input_text", "text": "Describe "},
        IMAGE,
        {"type": "input_text", "text": " please"},
    ]


def test_input_text_renders_inline_and_no_parts_means_a_string() -> None:
    variables = {"who": {"type": "input_text", "text": "Ada"}}
    assert render_content("Hello {{ who }}!", variables, WHERE) == "Hello Ada!"


def test_two_parts_and_empty_text_pieces_dropped() -> None:
    content = render_content(
        "{{ photo }}{{ doc }} and {{ photo }}", {"photo": IMAGE, "doc": FILE}, WHERE
    )
    assert content == [IMAGE, FILE, {"type": "input_text", "text": " and "}, IMAGE]


def test_placeholder_text_in_a_string_variable_stays_literal() -> None:
    forged = "[[part-00000000000000000000000000000000-0]]"
    content = render_content("{{ note }} {{ photo }}", {"note": forged, "photo": IMAGE}, WHERE)
    assert content == [{"type": "input_text", "text": forged + " "}, IMAGE]


def test_an_image_cannot_fill_instructions() -> None:
    with pytest.raises(InvalidRequest) as caught:
        render("Look: {{ photo }}", {"photo": IMAGE}, "version.instructions")
    assert_error(caught.value, "invalid_value", "prompt.variables.photo", "input_image")


# ---- saving a template -----------------------------------------------------------------------


def test_a_syntax_error_names_the_line() -> None:
    with pytest.raises(InvalidRequest) as caught:
        check_template("ok\n{% for x in %}", "version.instructions")
    assert_error(caught.value, "invalid_prompt_template", "version.instructions", "line 2")


def test_nesting_deeper_than_the_parser_goes() -> None:
    with pytest.raises(InvalidRequest) as caught:
        check_template("{% if a %}" * 2000 + "{% endif %}" * 2000, WHERE)
    assert_error(caught.value, "invalid_prompt_template", WHERE, "RecursionError")


def test_a_template_over_the_size_limit() -> None:
    with pytest.raises(InvalidRequest) as caught:
        check_template("x" * (MAX_TEMPLATE_CHARS + 1), "version.instructions")
    assert_error(caught.value, "string_above_max_length", "version.instructions")


@pytest.mark.parametrize(
    "source",
    ["{% include 'x' %}", "{% import 'x' as y %}", "{% from 'x' import y %}", "{% extends 'x' %}"],
)
def test_loading_tags_are_refused_when_saved(source: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        check_template(source, WHERE)
    assert_error(caught.value, "invalid_prompt_template", WHERE, "not available")


@pytest.mark.parametrize("name", ["center", "indent", "wordwrap", "format"])
def test_removed_filters_are_named(name: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        check_template(f"{{{{ 'x'|{name}(10) }}}}", WHERE)
    assert_error(caught.value, "invalid_prompt_template", WHERE, f"No filter named '{name}'")


# ---- the sandbox -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ self.__dict__ }}",
        "{{ range.__globals__ }}",
        "{{ xs.append(1) }}",
        "{{ '{0.__class__}'.format(xs) }}",
        "{{ '%s' % xs }}",
        "{{ 'a\tb'.expandtabs(8) }}",
        "{{ [[1], [2]]|sum(none, []) }}",
    ],
)
def test_sandbox_violations(source: str) -> None:
    error = refused(source, {"xs": []})
    assert_error(error, "invalid_prompt_template", WHERE, "sandbox forbids")


def test_an_undefined_variable_is_a_missing_parameter() -> None:
    error = refused("Hi {{ name }}")
    assert_error(error, "missing_required_parameter", "prompt.variables.name", "'name'")


@pytest.mark.parametrize(
    ("source", "words"),
    [("{{ 1 / 0 }}", "ZeroDivisionError"), ("{{ 1 + 'a' }}", "TypeError")],
)
def test_other_errors_name_the_template(source: str, words: str) -> None:
    assert_error(refused(source), "invalid_prompt_template", WHERE, WHERE, words)


# ---- limits: each ends at once with prompt_render_limit ---------------------------------------


@pytest.mark.parametrize(
    ("source", "words"),
    [
        ("{{ range(10**9)|list }}", "integer argument"),
        ("{{ 'x'.ljust(10**9) }}", "integer argument"),
        ("{{ 'x' * 10**9 }}", "* result"),
        ("{{ [s, s] * 100000 }}", "* result"),
        ("{{ 9**(9**9) }}", "power"),
        ("{{ 2**8000 * 2**8000 * 2**8000 }}", "product"),
        ("{% for i in range(50000) %}xxxxxxxxxx{% endfor %}", "output"),
        ("{{ 'ab'.replace('', s) }}", "replace"),
        ("{{ s|replace('', s) }}", "replace"),
        ("{{ s ~ s ~ s }}", "concatenation"),
        ("{{ s + s + s }}", "+ result"),
        ("{{ [s, s, s] }}", "printed value"),
        ("{{ namespace(a=s, b=s, c=s) }}", "printed value"),
        ("{{ s|map('replace', 'y', s)|list }}", "characters of text"),
        ("{{ [s, s, s]|join }}", "join filter"),
        ("{{ range(3)|join(s) }}", "join"),
        (
            "{% set b %}{% for i in range(9) %}{{ s }}{% endfor %}{% endset %}{{ b|length }}",
            "block",
        ),
        ("{% macro d(x, n) %}{{ d(x ~ x, n - 1) if n else 0 }}{% endmacro %}{{ d('x', 40) }}", "~"),
    ],
)
def test_work_limits(source: str, words: str) -> None:
    error = refused(source, {"s": "y" * 100_000})
    assert_error(error, "prompt_render_limit", WHERE, words)


def test_nested_loops_stop_at_the_iteration_budget() -> None:
    source = "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}"
    assert_error(refused(source), "prompt_render_limit", WHERE, "iterations")


def test_loops_over_variables_and_literals_count_too() -> None:
    source = "{% for a in s %}{% for b in s %}{% for c in s %}{% endfor %}{% endfor %}{% endfor %}"
    assert_error(refused(source, {"s": "x" * 5000}), "prompt_render_limit", WHERE, "iterations")


def test_a_recursive_loop_without_end_is_a_limit() -> None:
    source = "{% for x in xs recursive %}{{ loop(xs) }}{% endfor %}"
    error = refused(source, {"xs": list(range(50))})
    assert_error(error, "prompt_render_limit", WHERE, "nests too deeply")


def test_a_recursive_loop_counts_its_children() -> None:
    source = "{% for x in xs recursive %}{{ loop(x.c) if x.c is defined }}{% endfor %}"
    # 2 items at the top, 2 * 60000 below them: only the children go over the budget
    error = refused(source, {"xs": [{"c": list(range(60_000))}] * 2})
    assert_error(error, "prompt_render_limit", WHERE, "iterations")


def test_exponential_macro_calls_stop_at_the_deadline() -> None:
    source = (
        "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(60) }}"
    )
    assert_error(refused(source), "prompt_render_limit", WHERE, "longer than")


def test_output_up_to_the_limit_renders() -> None:
    text = render("{{ s }}{{ s }}", {"s": "y" * (MAX_OUTPUT_CHARS // 2)}, WHERE)
    assert len(text) == MAX_OUTPUT_CHARS


# ---- variables -------------------------------------------------------------------------------

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "tone": {"enum": ["formal", "casual"]},
        "photo": {"type": "object"},
    },
    "required": ["name"],
}


def test_valid_variables_are_returned() -> None:
    variables = {"name": "Ada", "tone": "casual", "photo": IMAGE}
    assert check_variables(variables, SCHEMA) == variables
    assert check_variables(None, None) == {}
    assert check_variables({"anything": [1, {"type": "input_text", "text": "t"}]}, None)


@pytest.mark.parametrize(
    ("variables", "code", "param"),
    [
        ({"name": "Ada", "mood": "x"}, "unknown_parameter", "prompt.variables.mood"),
        ({"tone": "formal"}, "missing_required_parameter", "prompt.variables.name"),
        ({"name": 7}, "invalid_type", "prompt.variables.name"),
        ({"name": "Ada", "tone": "rude"}, "invalid_value", "prompt.variables.tone"),
    ],
)
def test_schema_errors(variables: dict[str, Any], code: str, param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        check_variables(variables, SCHEMA)
    assert_error(caught.value, code, param)


def test_jsonschema_message_is_quoted() -> None:
    with pytest.raises(InvalidRequest) as caught:
        check_variables({"name": 7}, SCHEMA)
    assert (
        caught.value.message == "Invalid value for prompt.variables.name: 7 is not of type 'string'"
    )


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ({"type": "input_audio"}, "invalid_value"),
        ({"url": "x"}, "invalid_value"),
        ({"type": "input_text"}, "invalid_type"),
    ],
)
def test_an_object_must_be_an_input_part(value: dict[str, Any], code: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        check_variables({"v": value}, None)
    assert_error(caught.value, code, "prompt.variables.v")
