"""Claude Code's stream-json protocol without a process: parsing the messages it writes (as seen
from Claude Code 2.1.332), the line decoder's framing, and a fuzz of both — a bad line is a
StreamError that says what is wrong, never another exception."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.agents.claude import stream
from tether.agents.claude.adapter import command_outcome
from tether.agents.claude.stream import LineDecoder, StreamError, parse_line

# Lines as Claude Code 2.1.332 wrote them (trimmed of fields tether does not read).
CAN_USE_TOOL = {
    "type": "control_request", "request_id": "8a50e317",
    "request": {"subtype": "can_use_tool", "tool_name": "Bash", "display_name": "Bash",
                "input": {"command": "echo from-claude-$((40+2))", "description": "greet"},
                "description": "greet", "matched_ask_rule": {"source": "flagSettings", "tool_name": "Bash"},
                "tool_use_id": "toolu_1"},
}
TOOL_RESULT_OK = {
    "type": "user", "message": {"role": "user", "content": [
        {"tool_use_id": "toolu_1", "type": "tool_result", "content": "from-claude-42", "is_error": False}]},
    "parent_tool_use_id": None, "session_id": "s",
    "tool_use_result": {"stdout": "from-claude-42", "stderr": "", "interrupted": False},
    "tool_result_meta": [{"id": "toolu_1", "permission_decision": {"decision": "accept", "source": "user_temporary"}}],
}
TOOL_RESULT_DENIED = {
    "type": "user", "message": {"role": "user", "content": [
        {"type": "tool_result", "content": "denied by tether", "is_error": True, "tool_use_id": "toolu_2"}]},
    "tool_use_result": "Error: denied by tether",
    "tool_result_meta": [{"id": "toolu_2", "non_execution_kind": "permission-rule",
                          "permission_decision": {"decision": "reject", "source": "user_reject"}}],
}
TOOL_RESULT_FAILED = {
    "type": "user", "message": {"role": "user", "content": [
        {"type": "tool_result", "content": "Exit code 3\nboom", "is_error": True, "tool_use_id": "toolu_3"}]},
    "tool_result_meta": [{"id": "toolu_3", "permission_decision": {"decision": "accept"}}],
}


def line(obj: Any) -> bytes:
    return json.dumps(obj).encode() + b"\n"


def test_a_permission_question() -> None:
    message = parse_line(json.dumps(CAN_USE_TOOL))
    assert isinstance(message, stream.ControlRequest)
    assert message.request_id == "8a50e317" and message.subtype == "can_use_tool"
    assert message.request["input"]["command"] == "echo from-claude-$((40+2))"


def test_tool_results_say_whether_the_tool_ran() -> None:
    ok = parse_line(json.dumps(TOOL_RESULT_OK))
    assert isinstance(ok, stream.User)
    [result] = ok.results
    assert (result.tool_use_id, result.content, result.is_error, result.rejected) == (
        "toolu_1", "from-claude-42", False, False)
    assert command_outcome(result) == (0, "from-claude-42")

    denied = parse_line(json.dumps(TOOL_RESULT_DENIED))
    assert isinstance(denied, stream.User) and denied.results[0].rejected
    assert command_outcome(denied.results[0]) == (None, "")

    failed = parse_line(json.dumps(TOOL_RESULT_FAILED))
    assert isinstance(failed, stream.User) and not failed.results[0].rejected
    assert command_outcome(failed.results[0]) == (3, "boom")


def test_other_messages() -> None:
    assistant = parse_line(json.dumps({"type": "assistant", "message": {
        "id": "msg_1", "content": [{"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {}}]}}))
    assert isinstance(assistant, stream.Assistant) and assistant.content[0]["name"] == "Bash"
    event = parse_line(json.dumps({"type": "stream_event", "event": {
        "type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}}}))
    assert isinstance(event, stream.StreamEvent) and event.kind == "content_block_delta"
    result = parse_line(json.dumps({"type": "result", "subtype": "error_during_execution", "is_error": True,
                                    "errors": ["Sandbox required but unavailable"]}))
    assert isinstance(result, stream.Result) and result.message == "Sandbox required but unavailable"
    assert (result.tokens, result.cost_usd) == (None, None)
    priced = parse_line(json.dumps({"type": "result", "subtype": "success", "is_error": False, "result": "ok",
                                    "total_cost_usd": 0.0125, "usage": {
                                        "input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 3,
                                        "service_tier": "standard", "server_tool_use": {"web_search_requests": 0}}}))
    assert isinstance(priced, stream.Result) and (priced.tokens, priced.cost_usd) == (18, 0.0125)
    cancel = parse_line(json.dumps({"type": "control_cancel_request", "request_id": "r1"}))
    assert cancel == stream.ControlCancel("r1")
    answer = parse_line(json.dumps({"type": "control_response", "response": {
        "subtype": "success", "request_id": "tether-1", "response": {"still_queued": []}}}))
    assert answer == stream.ControlResponse("tether-1", True, {"still_queued": []})
    refused = parse_line(json.dumps({"type": "control_response", "response": {
        "subtype": "error", "request_id": "tether-2", "error": "no"}}))
    assert refused == stream.ControlResponse("tether-2", False, error="no")
    # Message types of newer Claude Codes are passed over, not errors.
    assert isinstance(parse_line('{"type": "rate_limit_event", "x": 1}'), stream.Other)


@pytest.mark.parametrize(("text", "says"), [
    ("not json", "not JSON"),
    ("[1, 2]", "must be a JSON object, not list"),
    ('{"no": "type"}', 'no "type"'),
    ('{"type": "control_request", "request_id": "r"}', "no 'request' object"),
    ('{"type": "control_request", "request_id": 5, "request": {"subtype": "x"}}', "no 'request_id' string"),
    ('{"type": "assistant", "message": {"content": "text"}}', "not a list of blocks"),
    ('{"type": "user", "message": {"content": [{"type": "tool_result"}]}}', "no tool_use_id"),
    ('{"type": "control_response", "response": {"subtype": "success"}}', "no 'request_id' string"),
    ('{"type": "result"}', "no 'subtype' string"),
])
def test_malformed_lines_are_clear_errors(text: str, says: str) -> None:
    with pytest.raises(StreamError, match=says.replace("(", r"\(")) as raised:
        parse_line(text)
    assert raised.value.code == "claude_stream"


def test_the_decoder_frames_lines_across_chunks() -> None:
    decoder = LineDecoder()
    data = line(CAN_USE_TOOL) + b"\n" + line({"type": "control_cancel_request", "request_id": "8a50e317"})
    got: list[Any] = []
    for i in range(0, len(data), 7):
        got += decoder.feed(data[i:i + 7])
    assert [type(m).__name__ for m in got] == ["ControlRequest", "ControlCancel"]
    assert decoder.end() == []


def test_a_bad_line_does_not_hide_the_next_one() -> None:
    decoder = LineDecoder()
    got = decoder.feed(b"garbage\n\xff\xfe\n" + line({"type": "control_cancel_request", "request_id": "r"}))
    assert isinstance(got[0], StreamError) and "not JSON" in got[0].message
    assert isinstance(got[1], StreamError) and "not UTF-8" in got[1].message
    assert got[2] == stream.ControlCancel("r")


def test_an_overlong_line_is_one_error_and_is_skipped() -> None:
    decoder = LineDecoder(max_line=64)
    got = decoder.feed(b"x" * 50)
    got += decoder.feed(b"y" * 50)
    got += decoder.feed(b"z" * 50 + b"\n" + line({"type": "control_cancel_request", "request_id": "r"}))
    assert [type(m).__name__ for m in got] == ["StreamError", "ControlCancel"]
    assert "longer than 64 bytes" in str(got[0])


def test_a_last_line_without_newline_is_read_at_the_end() -> None:
    decoder = LineDecoder()
    assert decoder.feed(json.dumps({"type": "control_cancel_request", "request_id": "r"}).encode()) == []
    assert decoder.end() == [stream.ControlCancel("r")]


def test_what_we_send_is_one_line_each() -> None:
    for message in (stream.user_message("hi\nthere"), stream.control_request("tether-1", "interrupt"),
                    stream.control_success("r", stream.allow({"command": "ls"})),
                    stream.control_success("r", stream.deny("no")), stream.control_error("r", "no")):
        data = stream.encode(message)
        assert data.endswith(b"\n") and data.count(b"\n") == 1
        assert json.loads(data) == message
    assert stream.control_success("r", stream.deny("no"))["response"] == {
        "subtype": "success", "request_id": "r", "response": {"behavior": "deny", "message": "no"}}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
# Objects shaped like real messages, with any values in their fields.
message_like = st.fixed_dictionaries(
    {"type": st.sampled_from(["system", "stream_event", "assistant", "user", "result", "control_request",
                              "control_cancel_request", "control_response", "other"])},
    optional={"request_id": json_values, "request": json_values, "response": json_values, "message": json_values,
              "event": json_values, "subtype": json_values, "errors": json_values, "result": json_values,
              "tool_result_meta": json_values, "tool_use_result": json_values},
)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_parse_line_raises_only_stream_errors(data: bytes) -> None:
    try:
        parse_line(data)
    except StreamError as exc:
        assert exc.message


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_bytes_never_crash_the_decoder(data: bytes) -> None:
    decoder = LineDecoder(max_line=128)
    for item in decoder.feed(data) + decoder.end():
        assert isinstance(item, StreamError) or item is not None
        if isinstance(item, StreamError):
            assert item.message


@settings(max_examples=400, deadline=None)
@given(message_like)
def test_fuzz_message_shapes_parse_or_give_a_clear_error(obj: dict[str, Any]) -> None:
    try:
        message = stream.parse_message(obj)
    except StreamError as exc:
        assert exc.message.startswith("a ")
        return
    if isinstance(message, stream.User):
        for result in message.results:
            command_outcome(result)  # never raises on what the parser accepted
    if isinstance(message, stream.Result):
        assert message.message


@settings(max_examples=200, deadline=None)
@given(st.lists(message_like, max_size=5), st.integers(min_value=1, max_value=40))
def test_fuzz_chunking_does_not_change_what_is_decoded(objs: list[dict[str, Any]], size: int) -> None:
    data = b"".join(line(o) for o in objs)
    whole = LineDecoder().feed(data)
    decoder = LineDecoder()
    chunked: list[Any] = []
    for i in range(0, len(data), size):
        chunked += decoder.feed(data[i:i + size])
    assert [repr(m) for m in chunked] == [repr(m) for m in whole]
