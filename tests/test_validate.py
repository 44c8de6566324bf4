"""The request validator on its own: properties over arbitrary JSON (hypothesis), and the
edge cases that once got past it (lone surrogates, huge numbers, trailing newlines...)."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from scout.validate import (CHAT_FIELDS, MAX_REASON_CHARS, ON_BUSY, ApiError, body_limit, check_approval,
                            check_chat, check_cwd, check_task_id, int_arg, load_json)

LIMIT = 200  # max_message_bytes for the properties: small, so both sides of it get drawn

# Text with everything in it: NUL, control characters, whitespace, lone surrogates.
anything_text = st.one_of(
    st.text(st.characters(exclude_categories=()), max_size=40),
    st.sampled_from(["", " ", "\n", "\t \n", "\x00", "a\x00", "\ud800", "ok\udfff", "x\n", "Read\n",
                     "é" * 150, "a" * (LIMIT + 1), "🙂" * 60]),
)
json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True), anything_text,
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(anything_text, inner, max_size=4)),
    max_leaves=12,
)


def plausible(name: str) -> st.SearchStrategy:
    """Values for a known field: often valid, often just wrong."""
    valid = {
        "message": st.text(min_size=1, max_size=60),
        "session_id": st.from_regex(r"[A-Za-z0-9._-]{1,20}", fullmatch=True),
        "mode": st.sampled_from(["Scout", "Plan", "Code"]),
        "cwd": st.sampled_from(["/tmp", "/", "relative"]),
        "append_system_prompt": st.text(max_size=30),
        "on_busy": st.sampled_from(ON_BUSY),
        "model": st.sampled_from(["claude-sonnet-4-5", "opus", "a/b:c[1m]"]),
        "max_turns": st.integers(min_value=-3, max_value=1003),
        "allowed_tools": st.lists(st.sampled_from(["Read", "Bash(ls:*)", "mcp__x__y", "bad\n", ""]),
                                  max_size=4),
        "disallowed_tools": st.lists(st.sampled_from(["Write", "Edit"]), max_size=3),
        "max_budget_usd": st.one_of(st.floats(min_value=-1, max_value=20_000), st.integers(-1, 20_000)),
        "stream_deltas": st.booleans(),
        "webhook_url": st.sampled_from(["http://127.0.0.1:9/hook", "ftp://x", "http://user:pw@h/"]),
    }.get(name, st.nothing())
    return st.one_of(valid, json_scalars)


chat_bodies = st.one_of(
    json_values,
    st.fixed_dictionaries({"message": plausible("message")},
                          optional={name: plausible(name) for name in CHAT_FIELDS if name != "message"}),
)


def assert_api_error(err: ApiError, statuses: tuple[int, ...] = (400, 413)) -> None:
    assert err.status in statuses, (err.status, err.code, err.message)
    body = err.body()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert isinstance(body["error"]["code"], str) and body["error"]["code"]
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    json.dumps(body)  # always serialisable


def assert_valid_chat(body: dict, req: dict) -> None:
    """What an accepted POST /chat body is, checked independently of the validator."""
    assert set(req) <= set(CHAT_FIELDS) and "message" in req
    assert all(v is not None for v in req.values())
    for name, value in req.items():
        want = CHAT_FIELDS[name]
        assert isinstance(value, want), (name, value)
        if want in (int, float):
            assert not isinstance(value, bool)
        if isinstance(value, str):
            value.encode("utf-8")  # no lone surrogates: SQLite could not store them
        if want is float:
            assert math.isfinite(value)
        assert value == body[name]  # only converted, never changed (an int becomes a float)
    # Nothing given was dropped but nulls.
    assert {k for k, v in body.items() if v is not None} == set(req)
    message = req["message"]
    assert message.strip() and "\x00" not in message
    assert len(message.encode("utf-8")) <= LIMIT
    if "max_turns" in req:
        assert 1 <= req["max_turns"] <= 1000
    if "max_budget_usd" in req:
        assert 0 < req["max_budget_usd"] <= 10_000
    if "on_busy" in req:
        assert req["on_busy"] in ON_BUSY
    if "session_id" in req:
        assert not req["session_id"].endswith("\n") and 1 <= len(req["session_id"]) <= 128
    for name in ("allowed_tools", "disallowed_tools"):
        for tool in req.get(name, []):
            assert isinstance(tool, str) and tool and "\n" not in tool
    for name in ("cwd", "mode", "append_system_prompt"):
        if name in req:
            assert "\x00" not in req[name]


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(chat_bodies)
@example({"message": "hi", "max_budget_usd": 10**400})
@example({"message": "\ud800"})
@example({"message": "ok", "session_id": "abc\n"})
@example({"message": "ok", "allowed_tools": ["Read\n"]})
@example({"message": "ok", "max_turns": True})
@example({"message": "ok", "stream_deltas": 1})
@example({"message": "ok", "max_budget_usd": float("nan")})
def test_check_chat_raises_only_api_errors_and_accepts_only_good_bodies(body):
    try:
        req = check_chat(body, LIMIT)
    except ApiError as err:
        assert_api_error(err)
        if err.status == 413:
            assert len(body["message"].encode("utf-8", "surrogatepass")) > LIMIT
        return
    assert isinstance(body, dict)
    assert_valid_chat(body, req)


@given(chat_bodies, st.sampled_from(sorted(set(CHAT_FIELDS) - {"message"})))
def test_a_null_field_counts_as_absent(body, name):
    assume(isinstance(body, dict) and name not in body)
    try:
        without = check_chat(body, LIMIT)
    except ApiError as err:
        with pytest.raises(ApiError) as again:
            check_chat({**body, name: None}, LIMIT)
        assert (again.value.status, again.value.code) == (err.status, err.code)
        return
    assert check_chat({**body, name: None}, LIMIT) == without


@given(st.dictionaries(anything_text, json_values, min_size=1, max_size=3))
def test_unknown_fields_are_always_400(extra):
    assume(not set(extra) & set(CHAT_FIELDS))
    with pytest.raises(ApiError) as err:
        check_chat({"message": "hello", **extra}, LIMIT)
    assert (err.value.status, err.value.code) == (400, "unknown_field")
    json.dumps(err.value.body())


@given(json_values)
def test_non_objects_are_400_invalid_body(body):
    assume(not isinstance(body, dict))
    with pytest.raises(ApiError) as err:
        check_chat(body, LIMIT)
    assert (err.value.status, err.value.code) == (400, "invalid_body")


@pytest.mark.parametrize("body,status,code", [
    ({}, 400, "missing_field"),
    ({"message": None}, 400, "missing_field"),
    ({"message": ""}, 400, "invalid_field"),
    ({"message": " \n\t"}, 400, "invalid_field"),
    ({"message": 5}, 400, "invalid_field"),
    ({"message": ["hi"]}, 400, "invalid_field"),
    ({"message": "a\x00b"}, 400, "invalid_field"),
    ({"message": "\ud83d"}, 400, "invalid_field"),
    ({"message": "é" * (LIMIT // 2 + 1)}, 413, "message_too_large"),  # bytes count, not characters
    ({"message": "hi", "max_turns": 0}, 400, "invalid_field"),
    ({"message": "hi", "max_turns": 2.5}, 400, "invalid_field"),
    ({"message": "hi", "max_budget_usd": 0}, 400, "invalid_field"),
    ({"message": "hi", "max_budget_usd": 10**400}, 400, "invalid_field"),
    ({"message": "hi", "stream_deltas": "yes"}, 400, "invalid_field"),
    ({"message": "hi", "on_busy": "later"}, 400, "invalid_field"),
    ({"message": "hi", "session_id": "a b"}, 400, "invalid_field"),
    ({"message": "hi", "session_id": "abc\n"}, 400, "invalid_field"),
    ({"message": "hi", "model": "x\n"}, 400, "invalid_field"),
    ({"message": "hi", "allowed_tools": ["Read", 3]}, 400, "invalid_field"),
    ({"message": "hi", "allowed_tools": ["Read"] * 101}, 400, "invalid_field"),
    ({"message": "hi", "disallowed_tools": ["\udc80"]}, 400, "invalid_field"),
    ({"message": "hi", "cwd": "/tmp/\x00"}, 400, "invalid_field"),
    ({"message": "hi", "append_system_prompt": "x" * (LIMIT + 1)}, 400, "invalid_field"),
    ({"message": "hi", "Message": "typo"}, 400, "unknown_field"),
])
def test_check_chat_cases(body, status, code):
    with pytest.raises(ApiError) as err:
        check_chat(body, LIMIT)
    assert (err.value.status, err.value.code) == (status, code), err.value.message


def test_check_chat_accepts_a_full_body_and_makes_budget_a_float():
    body = {"message": "é" * (LIMIT // 2), "session_id": "s-1.x_Y", "mode": "Plan", "cwd": "/tmp",
            "append_system_prompt": "be brief", "on_busy": "reject", "model": "claude-sonnet-4-5",
            "max_turns": 3, "allowed_tools": ["Read", "Bash(git status:*)"], "disallowed_tools": [],
            "max_budget_usd": 2, "stream_deltas": False}
    req = check_chat(body, LIMIT)
    assert req == body and isinstance(req["max_budget_usd"], float)


# -- cwd -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> dict[str, Path]:
    """root/{sub/, file.txt, in -> sub, out -> ../outside, loop -> loop}; outside/."""
    base = tmp_path_factory.mktemp("cwd").resolve()
    root, outside = base / "root", base / "outside"
    (root / "sub" / "deeper").mkdir(parents=True)
    outside.mkdir()
    (root / "file.txt").write_text("x")
    (root / "in").symlink_to(root / "sub")
    (root / "out").symlink_to(outside)
    (root / "loop").symlink_to(root / "loop")
    return {"base": base, "root": root, "outside": outside}


PARTS = ["..", ".", "sub", "deeper", "file.txt", "in", "out", "loop", "missing", "", "outside", "root"]


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(PARTS), max_size=6), st.booleans())
def test_check_cwd_never_returns_a_path_outside_the_roots(tree, parts, from_base):
    start = tree["base"] if from_base else tree["root"]
    cwd = os.path.join(str(start), *parts) if parts else str(start)
    root = str(tree["root"])
    try:
        got = check_cwd(cwd, [root])
    except ApiError as err:
        assert_api_error(err, (400, 403))
        real = os.path.realpath(cwd)
        inside = real == root or real.startswith(root + os.sep)
        assert err.status == (400 if inside else 403), (cwd, real, err.message)
        if inside:
            assert not os.path.isdir(real)
        return
    assert got == os.path.realpath(got) == os.path.realpath(cwd)
    assert got == root or got.startswith(root + os.sep)
    assert os.path.isdir(got)


@given(anything_text)
def test_check_cwd_takes_any_string(text):
    try:
        got = check_cwd(text, ["/tmp"])
    except ApiError as err:
        assert_api_error(err, (400, 403))
        return
    assert os.path.isdir(got) and (got == "/tmp" or got.startswith("/tmp/"))


@pytest.mark.parametrize("rel,status,code,words", [
    ("sub/..", None, None, None),
    ("in", None, None, None),  # a symlink that stays inside is resolved
    ("..", 403, "cwd_not_allowed", "outside the allowed roots"),
    ("sub/../../outside", 403, "cwd_not_allowed", "outside the allowed roots"),
    ("out", 403, "cwd_not_allowed", "outside"),
    ("out/../root/sub", None, None, None),  # ".." after a symlink climbs from its target, as chdir does
    ("out/../outside", 403, "cwd_not_allowed", "outside"),
    ("file.txt", 400, "invalid_cwd", "not a directory"),
    ("missing", 400, "invalid_cwd", "does not exist"),
    ("loop", 400, "invalid_cwd", None),
    ("../outside/missing", 403, "cwd_not_allowed", None),  # no hint of what exists outside
])
def test_check_cwd_cases(tree, rel, status, code, words):
    cwd = str(tree["root"] / rel)
    if status is None:
        got = check_cwd(cwd, [str(tree["root"])])
        assert got == os.path.realpath(cwd) and os.path.isdir(got)
        return
    with pytest.raises(ApiError) as err:
        check_cwd(cwd, [str(tree["root"])])
    assert (err.value.status, err.value.code) == (status, code), err.value.message
    if words:
        assert words in err.value.message


@pytest.mark.parametrize("cwd", ["", "relative/dir", "./x", "~", "/tmp/\x00", "/tmp/\ud800"])
def test_check_cwd_rejects_non_absolute_or_unusable(cwd):
    with pytest.raises(ApiError) as err:
        check_cwd(cwd, ["/"])
    assert err.value.status == 400 and err.value.code == "invalid_cwd"


def test_check_cwd_prefix_is_not_containment(tree):
    """/x/root-evil is not inside /x/root."""
    evil = tree["base"] / "root-evil"
    evil.mkdir(exist_ok=True)
    with pytest.raises(ApiError) as err:
        check_cwd(str(evil), [str(tree["root"])])
    assert err.value.status == 403


# -- the rest ------------------------------------------------------------------------

@given(json_values)
def test_check_approval_raises_only_api_errors(body):
    try:
        req = check_approval(body)
    except ApiError as err:
        assert_api_error(err, (400,))
        return
    assert req["decision"] in ("allow", "deny")
    assert set(req) <= {"decision", "reason", "tool_use_id"}
    assert all(isinstance(v, str) for v in req.values())
    assert len(req.get("reason", "")) <= MAX_REASON_CHARS


@given(st.one_of(st.binary(max_size=60), json_values.map(lambda v: json.dumps(v).encode())))
@example(b"[" * 100_000)
@example(b'{"a": NaN}')
@example(b"\xef\xbb\xbf{}")
@example(b"")
def test_load_json_raises_only_400s(raw):
    try:
        value = load_json(raw)
    except ApiError as err:
        assert_api_error(err, (400,))
        assert err.code == "invalid_json"
        return
    assert value == json.loads(raw.decode("utf-8"))  # UTF-8 only (RFC 8259)
    assert all_finite(value)  # no NaN or Infinity: they are not JSON


def all_finite(value) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(all_finite(v) for v in value)
    if isinstance(value, dict):
        return all(all_finite(v) for v in value.values())
    return True


@given(st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False,
                    allow_infinity=False), st.text()), lambda i: st.lists(i) | st.dictionaries(st.text(), i),
                    max_leaves=20))
def test_load_json_round_trips(value):
    assert load_json(json.dumps(value).encode()) == value
    raw = json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:  # a lone surrogate written raw is not UTF-8: a 400, not a crash
        with pytest.raises(ApiError):
            load_json(raw)
    else:
        assert load_json(raw) == value


@given(st.text(max_size=25), st.integers(0, 10), st.integers(10, 2**62))
@example("5_0", 1, 100)
@example(" 5", 1, 100)
@example("٣", 1, 100)
@example("1" * 5000, 0, 2**62)
def test_int_arg_takes_only_plain_numbers_in_range(text, low, high):
    try:
        n = int_arg(text, "limit", 7, low, high)
    except ApiError as err:
        assert_api_error(err, (400,))
        return
    if text == "":
        assert n == 7
    else:
        assert text.lstrip("-").isascii() and text.lstrip("-").isdigit()
        assert low <= n <= high and n == int(text)


@given(st.uuids())
def test_task_ids_are_lowercase_uuids(uuid):
    assert check_task_id(str(uuid)) == str(uuid)
    for bad in (str(uuid).upper(), str(uuid) + "\n", "/" + str(uuid), str(uuid)[:-1]):
        if bad != str(uuid):
            with pytest.raises(ApiError) as err:
                check_task_id(bad)
            assert err.value.status == 404


def test_body_limit_leaves_room_for_an_escaped_message():
    for limit in (1, 1000, 100_000):
        assert body_limit(limit) >= 6 * limit + 1024  # "\u0001" is 6 bytes for 1
        body = json.dumps({"message": "\x01" * limit, "append_system_prompt": "x" * limit}).encode()
        assert len(body) < body_limit(limit)


def test_every_error_a_request_raises_becomes_one_typed_api_error():
    from werkzeug.exceptions import MethodNotAllowed, NotFound, RequestEntityTooLarge

    from scout.server import as_api_error
    from scout.store import StoreBusy, StoreError

    mine = ApiError(409, "conflict", "busy session")
    assert as_api_error(mine) is mine
    def shape(err: Exception) -> tuple[int, str, dict[str, str]]:
        api = as_api_error(err)
        return api.status, api.code, api.headers
    assert shape(NotFound()) == (404, "not_found", {})
    assert shape(MethodNotAllowed(valid_methods=["GET", "POST"])) == (405, "method_not_allowed",
                                                                      {"Allow": "GET, POST"})
    assert shape(RequestEntityTooLarge()) == (413, "too_large", {})
    assert shape(StoreBusy("locked")) == (503, "database_busy", {"Retry-After": "2"})
    assert shape(StoreError("gone")) == (503, "database_unavailable", {})
    internal = as_api_error(KeyError("secret detail"))
    assert (internal.status, internal.code) == (500, "internal_error")
    assert "secret detail" not in internal.message  # a bug's details stay in the log
