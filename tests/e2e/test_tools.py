"""The tool loop end to end (issue 8; README, "Tools"): function tools run by the client,
MCP tools run by the worker against a real MCP server process, approvals, failures,
credentials, cancel, and what the upstream receives. Real API, worker, beat, Redis and MCP
server processes; the openai SDK as the client; every Response and event parsed with the
SDK's types."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from agents import Agent, HostedMCPTool, Runner, function_tool, set_tracing_disabled
from agents.models.openai_responses import OpenAIResponsesModel
from sqlalchemy import create_engine, text

from ops.embedded_redis import free_port
from tests.compat import assert_all_spec_fields, assert_sdk_event, assert_sdk_response
from tests.e2e.durable import MiniStack, running
from tests.e2e.helpers import (
    TERMINAL,
    assert_error,
    check,
    output_text,
    raw_json,
    script,
    wait_status,
)
from tests.fakes.mcp_server import McpServerProcess
from tests.fakes.upstream import FakeUpstream

SECRET_TOKEN = "mcp-token-do-not-leak-7f3a"
SECRET_HEADER = "header-secret-do-not-leak-9c1d"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}
CLOCK = {"type": "function", "name": "get_time", "parameters": {"type": "object"}}


@pytest.fixture(scope="module")
def mcp() -> Iterator[McpServerProcess]:
    with McpServerProcess() as server:
        yield server


@pytest.fixture(scope="module")
def guarded_mcp() -> Iterator[McpServerProcess]:
    """An MCP server that answers 401 without ``Authorization: Bearer SECRET_TOKEN``."""
    with McpServerProcess(token=SECRET_TOKEN) as server:
        yield server


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream().start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture(scope="module")
def mini(tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream) -> Iterator[MiniStack]:
    root = tmp_path_factory.mktemp("tools")
    models = Path(root / "models.toml")
    models.write_text(
        f"""
[[route]]
match = "resq-*"
provider = "builtin"

[[route]]
match = "upstream-fast"
provider = "openai"
base_url = "{upstream.base_url}"
"""
    )
    env = {
        "RESQ_OUTBOUND_ALLOW_LOOPBACK": "true",  # the MCP servers are on 127.0.0.1
        "RESQ_SECRET_KEY": "tools-test-secret-key",
        "RESQ_WORKER_CONCURRENCY": "20",
        "RESQ_MODELS_FILE": str(models),
        "RESQ_MCP_TIMEOUT_SECONDS": "20",
    }
    with running(root, env) as stack:
        yield stack


@pytest.fixture
def client(mini: MiniStack) -> openai.OpenAI:
    return mini.client()


def mcp_tool(server: McpServerProcess, **extra: Any) -> dict[str, Any]:
    return {"type": "mcp", "server_label": "calc", "server_url": server.url, **extra}


def call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"name": name, "arguments": arguments}


def judge(raw: dict[str, Any]) -> None:
    """The SDK's types judge every Response. The Open Responses contract knows only function
    tools and message, function call, reasoning and compaction items, so a Response with MCP
    tools or items is outside it and the SDK is its only judge."""
    if any(t["type"] == "mcp" for t in raw["tools"]) or any(
        i["type"].startswith("mcp_") for i in raw["output"]
    ):
        assert_all_spec_fields(raw)
        assert_sdk_response(raw)
    else:
        check(raw)


def create(client: openai.OpenAI, **kwargs: Any) -> dict[str, Any]:
    raw = raw_json(client.responses.with_raw_response.create(model="resq-builtin", **kwargs))
    judge(raw)
    return raw


def types_of(raw: dict[str, Any]) -> list[str]:
    return [item["type"] for item in raw["output"]]


# ---- MCP ---------------------------------------------------------------------------------


def test_mcp_lists_calls_and_loops_until_the_model_answers(
    client: openai.OpenAI, mcp: McpServerProcess
) -> None:
    raw = create(
        client,
        input=script(rounds=[[call("add", a=2, b=3)], [call("echo", text="hi")]]),
        tools=[mcp_tool(mcp, require_approval="never")],
    )
    assert raw["status"] == "completed"
    assert types_of(raw) == ["mcp_list_tools", "mcp_call", "mcp_call", "message"]
    listing, add, echo, _message = raw["output"]
    assert {t["name"] for t in listing["tools"]} == {"add", "echo", "slow", "fail", "whoami"}
    assert listing["server_label"] == "calc" and listing["error"] is None
    assert (add["name"], json.loads(add["arguments"]), add["output"]) == (
        "add",
        {"a": 2, "b": 3},
        "5",
    )
    assert (add["status"], add["error"]) == ("completed", None)
    assert (echo["name"], echo["output"]) == ("echo", "hi")
    assert output_text(raw) == "Tool results: 5; hi"
    # The model was called three times: usage adds up over the loop.
    assert raw["usage"]["output_tokens"] >= 3


def test_mcp_events_stream_in_order_and_parse(client: openai.OpenAI, mcp: McpServerProcess) -> None:
    events = [
        event.model_dump(mode="json", exclude_unset=True)
        for event in client.responses.create(
            model="resq-builtin",
            input=script(tool_calls=[call("add", a=1, b=1)]),
            tools=[mcp_tool(mcp, require_approval="never")],
            stream=True,
        )
    ]
    for event in events:
        assert_sdk_event(event)
    kinds = [e["type"] for e in events]
    expected = [
        "response.mcp_list_tools.in_progress",
        "response.mcp_list_tools.completed",
        "response.mcp_call.in_progress",
        "response.mcp_call_arguments.delta",
        "response.mcp_call_arguments.done",
        "response.mcp_call.completed",
        "response.completed",
    ]
    positions = [kinds.index(kind) for kind in expected]
    assert positions == sorted(positions), kinds
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    done = [e for e in events if e["type"] == "response.output_item.done"]
    assert [e["item"]["type"] for e in done] == ["mcp_list_tools", "mcp_call", "message"]
    call_done = kinds.index("response.mcp_call.completed")
    assert kinds[call_done + 1] == "response.output_item.done"


def test_a_continued_chain_does_not_list_again(
    client: openai.OpenAI, mcp: McpServerProcess
) -> None:
    tools = [mcp_tool(mcp, require_approval="never")]
    first = create(client, input="hello", tools=tools)
    assert types_of(first) == ["mcp_list_tools", "message"]
    second = create(
        client,
        input=script(tool_calls=[call("add", a=40, b=2)]),
        tools=tools,
        previous_response_id=first["id"],
    )
    assert types_of(second) == ["mcp_call", "message"]
    assert second["output"][0]["output"] == "42"


def test_allowed_tools_filter_the_listing(client: openai.OpenAI, mcp: McpServerProcess) -> None:
    raw = create(
        client,
        input="hello",
        tools=[mcp_tool(mcp, allowed_tools=["add", "echo"], require_approval="never")],
    )
    assert [t["name"] for t in raw["output"][0]["tools"]] == ["add", "echo"]
    by_object = create(
        client,
        input="hello",
        tools=[mcp_tool(mcp, allowed_tools={"tool_names": ["slow"]}, require_approval="never")],
    )
    assert [t["name"] for t in by_object["output"][0]["tools"]] == ["slow"]


def test_approval_round_trip(client: openai.OpenAI, mcp: McpServerProcess) -> None:
    tools = [mcp_tool(mcp)]  # require_approval defaults to "always"
    asked = create(client, input=script(tool_calls=[call("add", a=20, b=22)]), tools=tools)
    assert asked["status"] == "completed"
    assert types_of(asked) == ["mcp_list_tools", "mcp_approval_request"]
    request = asked["output"][1]
    assert request["id"].startswith("mcpr_") and request["name"] == "add"
    assert json.loads(request["arguments"]) == {"a": 20, "b": 22}

    approved = create(
        client,
        previous_response_id=asked["id"],
        input=[
            {"type": "mcp_approval_response", "approval_request_id": request["id"], "approve": True}
        ],
        tools=tools,
    )
    assert types_of(approved) == ["mcp_call", "message"]
    made = approved["output"][0]
    assert (made["approval_request_id"], made["output"]) == (request["id"], "42")
    assert output_text(approved) == "Tool results: 42"

    declined = create(
        client,
        previous_response_id=asked["id"],
        input=[
            {
                "type": "mcp_approval_response",
                "approval_request_id": request["id"],
                "approve": False,
                "reason": "not today",
            }
        ],
        tools=tools,
    )
    assert types_of(declined) == ["message"]
    assert output_text(declined) == "Tool results: The user declined this tool call: not today"

    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(
            model="resq-builtin",
            previous_response_id=asked["id"],
            input=[
                {"type": "mcp_approval_response", "approval_request_id": "mcpr_x", "approve": True}
            ],
            tools=tools,
        )
    assert_error(info.value, 400, None, "input")


def test_a_failing_tool_is_reported_to_the_model(
    client: openai.OpenAI, mcp: McpServerProcess
) -> None:
    raw = create(
        client,
        input=script(tool_calls=[call("fail", message="disk on fire")]),
        tools=[mcp_tool(mcp, require_approval="never")],
    )
    assert raw["status"] == "completed"
    failed = raw["output"][1]
    assert (failed["type"], failed["status"], failed["output"]) == ("mcp_call", "failed", None)
    assert failed["error"]["type"] == "mcp_tool_execution_error"
    assert "disk on fire" in json.dumps(failed["error"])
    assert output_text(raw).startswith("Tool results: Error:")
    assert "disk on fire" in output_text(raw)


def test_an_unreachable_server(client: openai.OpenAI) -> None:
    nowhere = {
        "type": "mcp",
        "server_label": "gone",
        "server_url": f"http://127.0.0.1:{free_port()}/mcp",
    }
    raw = create(client, input="hello", tools=[{**nowhere, "require_approval": "never"}])
    assert raw["status"] == "completed"
    listing = raw["output"][0]
    assert listing["type"] == "mcp_list_tools" and listing["error"]
    assert output_text(raw) == "You said: hello"

    # A server that goes away between the listing and the call: the call fails, the model
    # is told, and the response still completes.
    with McpServerProcess() as server:
        tool = {**nowhere, "server_url": server.url}
        asked = create(client, input=script(tool_calls=[call("add", a=1, b=2)]), tools=[tool])
    request = asked["output"][1]
    answered = create(
        client,
        previous_response_id=asked["id"],
        input=[
            {"type": "mcp_approval_response", "approval_request_id": request["id"], "approve": True}
        ],
        tools=[tool],
    )
    made = answered["output"][0]
    assert (made["type"], made["status"]) == ("mcp_call", "failed")
    assert made["error"]["type"] == "http_error"
    assert answered["status"] == "completed"
    assert output_text(answered).startswith("Tool results: Error:")


def test_credentials_are_used_but_never_returned_stored_or_logged(
    client: openai.OpenAI, guarded_mcp: McpServerProcess, mini: MiniStack
) -> None:
    tool = mcp_tool(
        guarded_mcp,
        require_approval="never",
        authorization=SECRET_TOKEN,
        headers={"X-Extra": SECRET_HEADER},
    )
    response = client.responses.create(
        model="resq-builtin",
        background=True,
        input=script(rounds=[[call("slow", seconds=1.5)], [call("add", a=1, b=1)]]),
        tools=[tool],
    )
    # While it runs, the credentials are in the store only sealed.
    engine = create_engine(mini.database_url)
    try:
        with engine.connect() as conn:
            sealed = conn.execute(
                text("SELECT tool_secrets FROM responses WHERE id = :id"), {"id": response.id}
            ).scalar_one()
        raw = wait_status(client, response.id, TERMINAL)
        with engine.connect() as conn:
            after = conn.execute(
                text("SELECT tool_secrets FROM responses WHERE id = :id"), {"id": response.id}
            ).scalar_one()
    finally:
        engine.dispose()
    assert sealed and SECRET_TOKEN not in sealed and SECRET_HEADER not in sealed
    assert after is None  # erased when the run ended
    assert raw["status"] == "completed"
    assert [i["output"] for i in raw["output"] if i["type"] == "mcp_call"] == ["slept 1.5", "2"]
    body = json.dumps(raw)
    assert SECRET_TOKEN not in body and SECRET_HEADER not in body
    assert "authorization" not in raw["tools"][0] and "headers" not in raw["tools"][0]
    for name in ("api", *mini.workers):
        log = mini.log(name)
        assert SECRET_TOKEN not in log and SECRET_HEADER not in log
    # Without the token the server refuses, and the listing says so.
    refused = create(client, input="hi", tools=[mcp_tool(guarded_mcp, require_approval="never")])
    assert "401" in refused["output"][0]["error"]


def test_cancel_during_a_slow_tool_call(client: openai.OpenAI, mcp: McpServerProcess) -> None:
    response = client.responses.create(
        model="resq-builtin",
        background=True,
        input=script(tool_calls=[call("slow", seconds=30)]),
        tools=[mcp_tool(mcp, require_approval="never")],
    )
    wait_status(client, response.id, {"in_progress"})
    time.sleep(1.5)  # the listing is done and the slow call is in flight
    started = time.monotonic()
    cancelled = client.responses.cancel(response.id)
    raw = wait_status(client, response.id, TERMINAL)
    assert time.monotonic() - started < 10
    assert cancelled.status == "cancelled" and raw["status"] == "cancelled"


def test_mcp_server_url_policy(client: openai.OpenAI) -> None:
    for url, code in (
        ("http://169.254.169.254/mcp", "url_not_allowed"),
        ("ftp://example.com/mcp", "invalid_url"),
    ):
        with pytest.raises(openai.BadRequestError) as info:
            client.responses.create(
                model="resq-builtin",
                input="x",
                tools=[{"type": "mcp", "server_label": "x", "server_url": url}],
            )
        assert_error(info.value, 400, code, "tools[0].server_url")
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(
            model="resq-builtin", input="x", tools=[{"type": "mcp", "server_url": "http://a/"}]
        )
    assert_error(info.value, 400, "missing_required_parameter", "tools[0].server_label")


# ---- function tools ------------------------------------------------------------------------


def test_a_function_call_and_its_continuation(client: openai.OpenAI) -> None:
    asked = create(
        client, input=script(tool_calls=[call("get_weather", city="Paris")]), tools=[WEATHER]
    )
    assert types_of(asked) == ["function_call"]
    fc = asked["output"][0]
    assert (fc["name"], json.loads(fc["arguments"]), fc["status"]) == (
        "get_weather",
        {"city": "Paris"},
        "completed",
    )
    answered = create(
        client,
        previous_response_id=asked["id"],
        input=[{"type": "function_call_output", "call_id": fc["call_id"], "output": "sunny"}],
        tools=[WEATHER],
    )
    assert output_text(answered) == "Tool results: sunny"

    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(
            model="resq-builtin",
            previous_response_id=asked["id"],
            input=[{"type": "function_call_output", "call_id": "call_unknown", "output": "x"}],
            tools=[WEATHER],
        )
    assert_error(info.value, 400, None, "input")
    assert "call_unknown" in info.value.message


def test_parallel_forced_none_and_capped_calls(client: openai.OpenAI) -> None:
    two = script(tool_calls=[call("get_weather", city="Paris"), call("get_time")])
    assert types_of(create(client, input=two, tools=[WEATHER, CLOCK])) == ["function_call"] * 2
    serial = create(client, input=two, tools=[WEATHER, CLOCK], parallel_tool_calls=False)
    assert [i["name"] for i in serial["output"]] == ["get_weather"]
    capped = create(client, input=two, tools=[WEATHER, CLOCK], max_tool_calls=1)
    assert [i["name"] for i in capped["output"]] == ["get_weather"]
    assert capped["max_tool_calls"] == 1
    forced = create(
        client,
        input="what time is it",
        tools=[WEATHER, CLOCK],
        tool_choice={"type": "function", "name": "get_time"},
    )
    assert [i["name"] for i in forced["output"]] == ["get_time"]
    required = create(client, input="anything", tools=[WEATHER, CLOCK], tool_choice="required")
    assert [i["name"] for i in required["output"]] == ["get_weather"]
    none = create(client, input=two, tools=[WEATHER, CLOCK], tool_choice="none")
    assert types_of(none) == ["message"]
    allowed = create(
        client,
        input="anything",
        tools=[WEATHER, CLOCK],
        tool_choice={
            "type": "allowed_tools",
            "mode": "required",
            "tools": [{"type": "function", "name": "get_time"}],
        },
    )
    assert [i["name"] for i in allowed["output"]] == ["get_time"]


def test_the_chat_style_nested_form_is_accepted(client: openai.OpenAI) -> None:
    nested = {
        "type": "function",
        "function": {"name": "get_time", "parameters": {"type": "object"}},
    }
    raw = create(client, input="hi", tools=[nested])
    assert raw["tools"] == [
        {
            "type": "function",
            "description": None,
            "parameters": {"type": "object"},
            "strict": True,
            "name": "get_time",
        }
    ]


def test_the_upstream_receives_tools_in_its_own_format(
    client: openai.OpenAI, upstream: FakeUpstream, mcp: McpServerProcess
) -> None:
    scripted = (
        'upstream: {"mode": "tool_calls", "name": "get_weather", "arguments": {"city": "Oslo"}}'
    )
    raw = raw_json(
        client.responses.with_raw_response.create(
            model="upstream-fast",
            input=scripted,
            tools=[WEATHER, mcp_tool(mcp, require_approval="never", allowed_tools=["add"])],
            tool_choice={"type": "function", "name": "get_weather"},
        )
    )
    judge(raw)
    assert types_of(raw) == ["mcp_list_tools", "function_call"]
    assert json.loads(raw["output"][1]["arguments"]) == {"city": "Oslo"}
    sent = next(
        r["body"] for r in reversed(upstream.requests) if r["path"].endswith("/chat/completions")
    )
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    names = [t["function"]["name"] for t in sent["tools"]]
    assert names == ["get_weather", "add"]
    assert all(t["type"] == "function" for t in sent["tools"])
    assert sent["tools"][1]["function"]["parameters"]["required"] == ["a", "b"]


def test_the_agents_sdk_runs_a_function_tool_and_a_hosted_mcp_tool(
    mini: MiniStack, mcp: McpServerProcess
) -> None:
    set_tracing_disabled(True)
    seen: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """Weather in a city."""
        seen.append(city)
        return f"sunny in {city}"

    async def run() -> str:
        async with openai.AsyncOpenAI(
            base_url=f"{mini.root_url}/v1", api_key="x", max_retries=0
        ) as sdk:
            agent = Agent(
                name="tools",
                instructions="use your tools",
                model=OpenAIResponsesModel(model="resq-builtin", openai_client=sdk),
                tools=[
                    get_weather,
                    HostedMCPTool(
                        tool_config={
                            "type": "mcp",
                            "server_label": "calc",
                            "server_url": mcp.url,
                            "require_approval": "never",
                        }
                    ),
                ],
            )
            rounds = [[call("add", a=2, b=3)], [call("get_weather", city="Paris")]]
            result = await Runner.run(agent, input=script(rounds=rounds, text="all done"))
            return str(result.final_output)

    assert asyncio.run(run()) == "all done"
    assert seen == ["Paris"]
