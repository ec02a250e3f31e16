"""``GET /openapi.json``: a valid OpenAPI 3.1 document of exactly the routes the app serves,
built from the pydantic models, with every error answer the one envelope."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from jsonschema import Draft202012Validator
from openapi_spec_validator import OpenAPIV31SpecValidator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from api import openapi
from shared.schema.requests import CreateResponseRequest
from tests.api.factory import make_client

KEY = "sk-openapi-test"
METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
# resq's own routes, marked x-resq; everything else is OpenAI's surface.
RESQ_PATHS = re.compile(
    r"^/(healthz|readyz|metrics|admin/?|openapi\.json|v1/admin/.*|v1/prompts.*|v1/webhook_endpoints/\{endpoint_id\}/deliveries.*)$"
)


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    client, _store = make_client(tmp_path, lambda _id: None, keys=KEY)
    return client.application


@pytest.fixture
def document(app: Flask) -> dict[str, Any]:
    answer = app.test_client().get("/openapi.json")  # no API key: the document is public
    assert answer.status_code == 200
    assert answer.content_type == "application/json"
    found: dict[str, Any] = answer.get_json()
    return found


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, op)
        for path, item in document["paths"].items()
        for method, op in item.items()
        if method in METHODS
    ]


def resolve(document: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        found: Any = document
        for part in node["$ref"].removeprefix("#/").split("/"):
            found = found[part]
        node = found
    return node


def schema_validator(document: dict[str, Any], name: str) -> Draft202012Validator:
    registry: Registry[Any] = Registry().with_resource(
        "urn:resq", Resource.from_contents(document, default_specification=DRAFT202012)
    )
    return Draft202012Validator({"$ref": f"urn:resq#/components/schemas/{name}"}, registry=registry)


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"] == "3.1.0"
    OpenAPIV31SpecValidator(document).validate()


def test_every_route_is_documented_and_nothing_else(app: Flask, document: dict[str, Any]) -> None:
    served = {
        (re.sub(r"<(?:[^<>:]+:)?([^<>]+)>", r"{\1}", rule.rule), method.lower())
        for rule in app.url_map.iter_rules()
        for method in rule.methods or ()
        if method not in {"HEAD", "OPTIONS"}
    }
    documented = {(path, method) for path, method, _op in operations(document)}
    assert documented == served
    undocumented = [
        (path, method) for path, method, op in operations(document) if op.get(openapi.UNDOCUMENTED)
    ]
    assert undocumented == []  # a new route needs an entry in api.openapi.OPERATIONS
    # ... and every entry names a route that exists.
    assert set(openapi.OPERATIONS) == {rule.endpoint for rule in app.url_map.iter_rules()}


def test_operation_ids_are_unique(document: dict[str, Any]) -> None:
    ids = [op["operationId"] for _path, _method, op in operations(document)]
    assert len(ids) == len(set(ids))


def test_every_error_answer_is_the_envelope(document: dict[str, Any]) -> None:
    envelope = document["components"]["schemas"]["ErrorBody"]
    assert envelope["required"] == ["error"] and envelope["additionalProperties"] is False
    detail = resolve(document, envelope["properties"]["error"])
    assert detail["required"] == ["message", "type", "param", "code"]
    assert detail["additionalProperties"] is False
    for path, method, op in operations(document):
        errors = {s: a for s, a in op["responses"].items() if s == "default" or s >= "400"}
        assert "default" in errors and "400" in errors, (path, method)
        for status, answer in errors.items():
            schema = resolve(document, answer)["content"]["application/json"]["schema"]
            if (path, status) == ("/readyz", "503"):  # the envelope plus what was checked
                assert schema == {"$ref": "#/components/schemas/NotReady"}
                continue
            assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (path, method, status)


def test_public_routes_need_no_key_and_the_rest_a_bearer_key(document: dict[str, Any]) -> None:
    assert document["security"] == [{"bearer": []}]
    public = {path for path, _method, op in operations(document) if op.get("security") == []}
    assert public == {"/healthz", "/readyz", "/metrics", "/admin", "/admin/", "/openapi.json"}
    for path, method, op in operations(document):
        assert ("401" in op["responses"]) == (path not in public), (path, method)


def test_resq_additions_are_marked(document: dict[str, Any]) -> None:
    for path, method, op in operations(document):
        assert op.get("x-resq", False) == bool(RESQ_PATHS.match(path)), (path, method)
    schemas = document["components"]["schemas"]
    assert schemas["ResponseObject"]["properties"]["truncation_details"]["x-resq"] is True
    assert schemas["TruncationDetails"]["x-resq"] is True
    assert "x-resq" not in schemas["ResponseObject"]["properties"]["output"]
    create = document["paths"]["/v1/responses"]["post"]
    assert [p["name"] for p in create["parameters"] if p.get("x-resq")] == ["Idempotency-Key"]


def test_request_bodies_are_the_request_models(document: dict[str, Any]) -> None:
    create = document["paths"]["/v1/responses"]["post"]["requestBody"]
    assert create["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/CreateResponseRequest"
    }
    schema = document["components"]["schemas"]["CreateResponseRequest"]
    fields = {f.alias or name for name, f in CreateResponseRequest.model_fields.items()}
    assert set(schema["properties"]) == fields
    assert schema["additionalProperties"] is True  # unknown top-level fields are accepted
    # What the validators of an Any-typed field accept is stated.
    assert {"type": "string"} in schema["properties"]["input"]["anyOf"]
    webhook = document["paths"]["/v1/webhook_endpoints"]["post"]["requestBody"]
    assert webhook["required"] is True
    assert resolve(document, webhook["content"]["application/json"]["schema"])["required"] == [
        "name",
        "url",
        "event_types",
    ]


def test_query_and_path_parameters(document: dict[str, Any]) -> None:
    def params(path: str, method: str) -> dict[str, dict[str, Any]]:
        return {p["name"]: p for p in document["paths"][path][method].get("parameters", [])}

    items = params("/v1/conversations/{conversation_id}/items", "get")
    assert set(items) == {"conversation_id", "after", "limit", "order"}
    assert items["limit"]["schema"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 100,
        "default": 20,
    }
    assert items["order"]["schema"]["enum"] == ["asc", "desc"]
    assert items["conversation_id"]["in"] == "path" and items["conversation_id"]["required"]
    retrieve = params("/v1/responses/{response_id}", "get")
    assert {"stream", "starting_after", "include[]"} <= set(retrieve)
    assert retrieve["include[]"]["explode"] is True
    assert "'/'" in params("/v1/models/{model}", "get")["model"]["description"]


def test_streaming_answers_describe_each_event(document: dict[str, Any]) -> None:
    create = document["paths"]["/v1/responses"]["post"]["responses"]["200"]["content"]
    assert set(create) == {"application/json", "text/event-stream"}
    event = create["text/event-stream"]["schema"]
    data = event["properties"]["data"]
    assert data["contentSchema"] == {"$ref": "#/components/schemas/StreamEvent"}
    delta = document["components"]["schemas"]["OutputTextDelta"]
    assert delta["required"][:2] == ["type", "sequence_number"]


def test_answers_fit_the_document(app: Flask, document: dict[str, Any]) -> None:
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {KEY}"
    created = client.post(
        "/v1/responses", json={"model": "resq-builtin", "input": "hi", "background": True}
    )
    schema_validator(document, "ResponseObject").validate(created.get_json())
    conversation = client.post("/v1/conversations", json={"metadata": {"k": "v"}})
    schema_validator(document, "Conversation").validate(conversation.get_json())
    refused = client.post("/v1/responses", json={"model": "resq-builtin"})
    assert refused.status_code == 400
    schema_validator(document, "ErrorBody").validate(refused.get_json())
    health = client.get("/healthz")
    schema_validator(document, "Health").validate(health.get_json())


def test_the_document_is_built_once_per_app(app: Flask, tmp_path: Path) -> None:
    first = app.test_client().get("/openapi.json").data
    cached = app.extensions[openapi.CACHE_KEY]
    assert app.test_client().get("/openapi.json").data == first == cached
    assert app.extensions[openapi.CACHE_KEY] is cached
    (tmp_path / "other").mkdir()
    other, _store = make_client(tmp_path / "other", lambda _id: None)
    assert openapi.CACHE_KEY not in other.application.extensions


def test_a_route_without_an_entry_is_marked_undocumented(tmp_path: Path) -> None:
    client, _store = make_client(tmp_path, lambda _id: None)
    client.application.add_url_rule("/v1/new_thing", "new_thing", lambda: "new")
    document = client.get("/openapi.json").get_json()
    assert document["paths"]["/v1/new_thing"]["get"][openapi.UNDOCUMENTED] is True
