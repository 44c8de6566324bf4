"""The API contract: /openapi.json is valid OpenAPI 3.1, names exactly the app's routes, agrees
with the validator and the docs, and the live server keeps it (schemathesis, plus real tasks'
answers checked against its schemas)."""
from __future__ import annotations

import os
import re
import secrets
import signal
from pathlib import Path
from typing import Any, Iterator

import jsonschema
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi import checks as st_checks

from conftest import ROOT, ScoutServer, _kill_tagged, read_sse

from scout.config import Settings
from scout.modes import BUILTIN
from scout.openapi import build_spec
from scout.server import PUBLIC_ENDPOINTS, create_app
from scout.validate import CHAT_FIELDS

METHODS = {"get", "post", "put", "patch", "delete"}
JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean", list: "array"}


def spec_operations(spec: dict[str, Any]) -> set[tuple[str, str]]:
    return {(path, method.upper()) for path, item in spec["paths"].items() for method in item if method in METHODS}


def app_operations(app) -> set[tuple[str, str]]:
    out = set()
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            out.add((path, method))
    return out


@pytest.fixture
def app(tmp_path):
    app = create_app(Settings(db=str(tmp_path / "s.db"), allowed_roots=[str(tmp_path)], api_token="t"),
                     start=False)
    yield app
    app.extensions["scout"].store.close()


def test_spec_is_valid_openapi_31():
    spec = build_spec(["Scout", "Plan"], 1000, auth=True)
    assert spec["openapi"].startswith("3.1")
    schemathesis.openapi.from_dict(spec).validate()  # against the OpenAPI 3.1 meta-schema
    for schema in spec["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(schema)


def test_spec_names_exactly_the_apps_routes(app):
    """Adding a route without documenting it (or the reverse) fails here."""
    with app.test_request_context():
        spec = app.view_functions["openapi.document"]().get_json()
    assert spec_operations(spec) == app_operations(app)


def test_every_operation_documents_its_errors_with_the_error_schema():
    spec = build_spec(["Scout"], 1000, auth=True)
    for path, item in spec["paths"].items():
        for method, op in item.items():
            responses = op["responses"]
            assert "405" in responses, (method, path)
            public = op.get("security") == []
            assert ("401" in responses) != public, (method, path)
            for code, resp in responses.items():
                if code.startswith(("4", "5")) and not (path == "/health" and code == "503"):
                    assert resp["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
            assert not any(code.startswith("5") and code != "503" for code in responses), (method, path)


def test_public_endpoints_are_the_documented_public_ones(app):
    spec = build_spec(["Scout"], 1000, auth=True)
    public_paths = {path for path, item in spec["paths"].items() for op in item.values() if op.get("security") == []}
    assert public_paths == {"/health", "/openapi.json"}
    endpoints = {rule.endpoint for rule in app.url_map.iter_rules()
                 if re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule) in public_paths}
    assert endpoints == PUBLIC_ENDPOINTS


def test_spec_follows_the_servers_settings():
    spec = build_spec(["Scout", "Custom"], 1234, auth=False)
    chat = spec["components"]["schemas"]["ChatRequest"]["properties"]
    assert chat["mode"]["enum"] == ["Scout", "Custom", None]
    assert chat["append_system_prompt"]["maxLength"] == 1234
    assert "security" not in spec  # no token: nothing to send
    assert "security" in build_spec(["Scout"], 1234, auth=True)


def test_chat_request_schema_matches_the_validator():
    chat = build_spec(["Scout"], 1000)["components"]["schemas"]["ChatRequest"]
    assert chat["additionalProperties"] is False and chat["required"] == ["message"]
    assert set(chat["properties"]) == set(CHAT_FIELDS)
    for name, want in CHAT_FIELDS.items():
        types = chat["properties"][name]["type"]
        types = [types] if isinstance(types, str) else types
        assert JSON_TYPES[want] in types, name
        assert ("null" in types) == (name != "message"), name  # null means absent, but not for message


def test_docs_describe_every_operation():
    """docs/api-brief.md names every path and method of the spec (ids spelled any way)."""
    docs = (ROOT / "docs" / "api-brief.md").read_text()
    norm = lambda text: re.sub(r"\{[^}]*\}", "{}", text)  # noqa: E731
    documented = set(re.findall(r"`(GET|POST|PUT|PATCH|DELETE) (/[^ `?]*)", docs))
    documented = {(norm(path), method) for method, path in documented}
    missing = {(norm(path), method) for path, method in spec_operations(build_spec())} - documented
    assert not missing, f"not in docs/api-brief.md: {sorted(missing)}"
    for words in ("text/event-stream", '{"error": {"code"', "Retry-After", "Allow", "415", "413", "429",
                  "SCOUT_CORS_ORIGINS", "SCOUT_ALLOWED_ROOTS", "SCOUT_WORKER_ENV"):
        assert words in docs, words


# -- the live server -----------------------------------------------------------------

@pytest.fixture(scope="module")
def live(model, tmp_path_factory) -> Iterator[ScoutServer]:
    """One server for the module: a token, one worker, at most two pending tasks, so the
    tasks schemathesis starts stay few and cheap."""
    tmp = tmp_path_factory.mktemp("contract")
    home = tmp / "home"
    home.mkdir()
    (tmp / "work").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCOUT_", "ANTHROPIC_", "CLAUDE"))}
    env.update(model.env(str(home)))
    token = TOKEN
    env.update({"SCOUT_DB": str(tmp / "data" / "scout.db"), "SCOUT_ALLOWED_ROOTS": str(tmp / "work"),
                "SCOUT_MAX_WORKERS": "1", "SCOUT_MAX_PENDING": "2", "SCOUT_MAX_MESSAGE_BYTES": "2000",
                "SCOUT_STOP_GRACE": "1", "SCOUT_TASK_TIMEOUT": "30", "SCOUT_LOG_LEVEL": "WARNING",
                "SCOUT_API_TOKEN": token, "PYTHONPATH": str(ROOT)})
    server = ScoutServer(env=env, workdir=tmp, token=token).start()
    yield server
    for task in server.get("/tasks", params={"limit": 1000}).json()["tasks"]:
        server.delete(f"/tasks/{task['task_id']}")
    server.stop(signal.SIGTERM)
    _kill_tagged(tmp)


# The document the live server serves (test_openapi_json_is_public_and_describes_this_server
# checks they are equal), built here so pytest can collect one test per operation.
LIVE_SPEC = build_spec(list(BUILTIN), 2000, auth=True)
TOKEN = secrets.token_hex(16)
# Schemathesis sends the token itself, so it can also leave it out (and expect a 401).
schema = schemathesis.openapi.from_dict(
    LIVE_SPEC, config=schemathesis.Config.from_dict({"auth": {"openapi": {"bearerAuth": {"bearer": TOKEN}}}}))

# "No 5xx, no answer that breaks the schema": status codes, content types, headers and
# bodies as documented; invalid data rejected; a request without the token refused.
CHECKS = [st_checks.status_code_conformance, st_checks.content_type_conformance,
          st_checks.response_headers_conformance, st_checks.response_schema_conformance,
          st_checks.negative_data_rejection, st_checks.unsupported_method]


@schema.parametrize()
@settings(max_examples=15, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_live_server_keeps_the_contract(case, live):
    from schemathesis.checks import not_a_server_error
    # Made-up ids: the SSE stream answers 404 at once (real streams: test_real_answers_...).
    response = case.call(base_url=live.url, timeout=30)
    case.validate_response(response, checks=[not_a_server_error, *CHECKS])
    assert response.status_code < 500, response.text[:500]
    if response.status_code >= 400:
        assert response.headers.get("content-type") == ["application/json"], response.headers
        assert set(response.json()) == {"error"}


def test_schemathesis_reaches_every_operation():
    ops = [result.ok() for result in schema.get_all_operations()]
    assert {(op.path, op.method.upper()) for op in ops} == spec_operations(LIVE_SPEC)


def test_openapi_json_is_public_and_describes_this_server(live):
    resp = requests.get(live.url + "/openapi.json", timeout=30)  # no token
    assert resp.status_code == 200 and resp.headers["Content-Type"] == "application/json"
    spec = resp.json()
    assert spec == LIVE_SPEC
    schemathesis.openapi.from_dict(spec).validate()
    assert requests.get(live.url + "/openapi.json", headers={"Authorization": "Bearer wrong"},
                        timeout=30).status_code == 200
    assert_error = requests.post(live.url + "/openapi.json", headers=live.headers(), timeout=30)
    assert assert_error.status_code == 405 and assert_error.json()["error"]["code"] == "method_not_allowed"


def test_without_the_token_every_protected_operation_is_401(live):
    for result in schemathesis.openapi.from_dict(LIVE_SPEC).get_all_operations():
        op = result.ok()
        path = op.path.replace("{task_id}", "00000000-0000-4000-8000-000000000000").replace("{session_id}", "s")
        resp = requests.request(op.method.upper(), live.url + path, timeout=30, json={"message": "x"}
                                if op.method.upper() == "POST" else None)
        expected = 200 if op.path in ("/health", "/openapi.json") else 401
        assert resp.status_code == expected, (op.method, op.path, resp.status_code)


def validator(spec: dict[str, Any], name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator({"$ref": f"#/components/schemas/{name}", "components": spec["components"]})


def test_real_answers_match_the_schemas(live):
    """Answers schemathesis cannot reach with made-up ids, from real tasks and sessions."""
    spec = requests.get(live.url + "/openapi.json").json()
    # The contract test's own POST /chat cases may still fill the small queue: clear it.
    for status in ("pending", "running", "waiting"):
        for task in live.get(f"/tasks?status={status}&limit=1000").json()["tasks"]:
            live.post(f"/chat/{task['task_id']}/stop")
    task_id = live.chat("BASH: echo contract", session_id="contract-1", cwd=str(Path(live.workdir) / "work"))
    live.wait(task_id)
    with live.get(f"/chat/{task_id}/stream", stream=True) as stream:
        assert stream.status_code == 200 and stream.headers["Content-Type"].startswith("text/event-stream")
        events = list(read_sse(stream))
    for event in events[:-1]:
        validator(spec, "Event").validate({k: v for k, v in event["data"].items() if k != "task_id"})
    assert events[-1]["event"] == "end"
    checks = [
        (f"/chat/{task_id}/status", "TaskDetail"), (f"/chat/{task_id}/status?events=false", "TaskDetail"),
        ("/tasks", "TaskList"), ("/sessions", "SessionList"), ("/sessions/contract-1", "SessionDetail"),
        ("/modes", "ModeList"), ("/health", "Health"), ("/config", "Config"),
    ]
    for path, name in checks:
        resp = live.get(path)
        assert resp.status_code == 200, (path, resp.text)
        validator(spec, name).validate(resp.json())
    validator(spec, "StopResult").validate(live.post(f"/chat/{task_id}/stop").json())
    validator(spec, "Error").validate(live.post(f"/chat/{task_id}/approve", json={"decision": "allow"}).json())
    live.wait(live.chat("hello", session_id="contract-1"))  # so deleting the first task leaves the session
    validator(spec, "TaskDeleted").validate(live.delete(f"/tasks/{task_id}").json())
    validator(spec, "SessionDeleted").validate(live.delete("/sessions/contract-1").json())
    # And a schema that is wrong for them would be noticed.
    with pytest.raises(jsonschema.ValidationError):
        validator(spec, "TaskList").validate(live.get("/modes").json())
