"""[8]: Codex items that tether sessions do not ask for, made by the real Codex 0.169 with a scripted
model and checked in the session's event log (what `sessions events --json` prints):

- ``dynamicToolCall`` and its server request ``item/tool/call``: dynamic tools are declared by a
  client in ``thread/start`` (experimental ``dynamicTools``), which tether never does. Here a
  client that does — a stdio proxy (appserver_proxy.py) between the adapter and the real
  app-server that adds them — makes Codex run one: tether refuses the call, shows the item, and the
  turn goes on.
- ``functionCallOutput``: made by Codex from a client's ``turn/start`` ``toolOutput`` (with an
  empty ``input``), which tether never sends; the same proxy hands one over.
- ``imageGeneration``: Codex offers its ``image_gen`` tool only to a ChatGPT-account login on a
  model provider with ``requires_openai_auth``; here a fake login (unsigned tokens in
  ``auth.json``) on a provider that is the scripted model, which also answers the Images API
  request Codex then makes itself. Everything stays on loopback (``chatgpt_base_url`` too).
- the server requests ``attestation/generate`` and ``account/chatgptAuthTokens/refresh``, which
  tether refuses: Codex asks the first of a client that opted in (the proxy: ``requestAttestation``
  in ``initialize``) before each model request on a ChatGPT login, and the second of a client that
  logged it in with tokens it manages (the proxy: ``account/login/start`` ``chatgptAuthTokens``)
  when the model's server answers 401. (The legacy v1 approvals cannot be had from 0.169: it
  answers every v1 method, ``sendUserTurn`` too, with "unknown variant"; see docs/agents.md.)
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from tests.agents.codex.appserver_proxy import write_proxy
from tests.agents.codex.conftest import Harness
from tests.support.chatgpt_login import ACCOUNT, chatgpt_access_token, chatgpt_home, chatgpt_login, refresh_url
from tests.support.fake_responses import FakeResponses
from tests.support.images import png
from tether.agents.codex import CodexBinary
from tether.protocol.events import EventType

pytestmark = pytest.mark.slow

PAINT_TOOL = {
    "type": "function", "name": "paint_lookup", "description": "Looks a paint colour up in the catalogue.",
    "inputSchema": {"type": "object", "properties": {"colour": {"type": "string"}}, "required": ["colour"]},
}


def tool_outputs(request: dict[str, Any]) -> dict[str, Any]:
    """The function call outputs a model request carries, by call id."""
    return {i["call_id"]: i["output"] for i in request["input"] if i.get("type") == "function_call_output"}


async def test_a_dynamic_tool_call_is_refused_shown_and_the_turn_goes_on(
    harness: Harness, fake_model: FakeResponses, codex_binary: CodexBinary, tmp_path: Path,
) -> None:
    """A client declared a dynamic tool (the proxy, in thread/start); the model calls it; Codex
    shows a dynamicToolCall item and asks the client with item/tool/call, which tether refuses at
    once ("tether registers no dynamic tools"); Codex fails the item and the model goes on."""
    proxy, changed = write_proxy(tmp_path / "proxy", codex_binary.path,
                                 [{"method": "thread/start", "set": {"dynamicTools": [PAINT_TOOL]}}])
    fake_model.add({"call": {"name": "paint_lookup", "arguments": {"colour": "teal"}}},
                   {"text": "No catalogue, then."})
    session = await harness.start("look teal up", options={"binary": str(proxy)})
    done = await harness.wait(session, EventType.TURN_COMPLETED)
    assert done.data["status"] == "completed", done.data
    [sent] = [json.loads(line) for line in changed.read_text().splitlines()]
    assert sent["method"] == "thread/start" and sent["params"]["dynamicTools"] == [PAINT_TOOL]
    offered = [t.get("name") for t in fake_model.requests[0]["tools"]]
    assert "paint_lookup" in offered, offered

    [started] = await harness.items(session, EventType.ITEM_STARTED, "tool_call")
    [call] = await harness.items(session, EventType.ITEM_COMPLETED, "tool_call")
    assert call["item"] == started["item"] and call["turn"] == done.data["turn"]
    assert (call["tool"], call["server"]) == ("paint_lookup", None)
    assert json.loads(call["input"]) == {"colour": "teal"}
    assert (call["status"], call["output"]) == ("failed", "dynamic tool request failed")
    [refused] = [e.data for e in await harness.events(session) if e.type == EventType.AGENT_NOTICE
                 and e.data["source"] == "item/tool/call"]
    assert refused["level"] == "warning" and refused["turn"] == done.data["turn"]
    assert refused["message"].startswith("refused: Codex asked item/tool/call (")
    assert "tool: paint_lookup" in refused["message"] and "colour: teal" in refused["message"]
    assert refused["message"].endswith("; tether registers no dynamic tools")
    assert not [e for e in await harness.events(session) if e.type == EventType.APPROVAL_REQUESTED]  # nobody asked
    # Codex told the model the call failed, and the model's answer ended the turn.
    assert list(tool_outputs(fake_model.requests[1]).values()) == ["dynamic tool request failed"]
    [answer] = await harness.items(session, EventType.ITEM_COMPLETED, "agent_message")
    assert answer["text"] == "No catalogue, then."


async def test_a_tool_output_handed_over_is_shown_and_the_session_goes_on(
    harness: Harness, fake_model: FakeResponses, codex_binary: CodexBinary, tmp_path: Path,
) -> None:
    """A client handed a tool's output over in turn/start (the proxy: ``toolOutput`` and an empty
    ``input``); Codex makes it a functionCallOutput item, which tether shows generically ("tool
    output", with the tool and its output), and the next prompt is an ordinary turn."""
    handed = {"name": "paint_lookup", "output": "teal is #008080"}
    proxy, changed = write_proxy(tmp_path / "proxy", codex_binary.path, [
        {"method": "turn/start", "when_text": "hand the lookup over", "set": {"input": [], "toolOutput": handed}},
    ])
    fake_model.add({"text": "Teal it is."}, {"text": "Still here."})
    session = await harness.start("hand the lookup over", options={"binary": str(proxy)})
    done = await harness.wait(session, EventType.TURN_COMPLETED)
    assert done.data["status"] == "completed", done.data
    [sent] = [json.loads(line) for line in changed.read_text().splitlines()]
    assert sent["method"] == "turn/start" and sent["params"]["toolOutput"] == handed

    [started] = await harness.items(session, EventType.ITEM_STARTED, "other")
    [output] = await harness.items(session, EventType.ITEM_COMPLETED, "other")
    assert output["item"] == started["item"] and output["turn"] == done.data["turn"]
    assert (output["type"], output["title"], output["status"]) == ("functionCallOutput", "tool output", "completed")
    assert "name: paint_lookup" in output["summary"] and "output: teal is #008080" in output["summary"]
    [answer] = await harness.items(session, EventType.ITEM_COMPLETED, "agent_message")
    assert answer["text"] == "Teal it is."

    # The session goes on: the next prompt is a turn of its own, with the output in its history.
    await session.send_input("and now?")
    second = await harness.wait(session, EventType.TURN_COMPLETED, lambda d: d["turn"] != done.data["turn"])
    assert second.data["status"] == "completed", second.data
    texts = [e.data["text"] for e in await harness.events(session)
             if e.type == EventType.ITEM_COMPLETED and e.data["kind"] == "agent_message"]
    assert texts == ["Teal it is.", "Still here."]
    assert len(await harness.items(session, EventType.ITEM_COMPLETED, "other")) == 1
    later = json.dumps(fake_model.requests[-1]["input"])
    assert "and now?" in later and "teal is #008080" in later


async def test_an_image_generation_is_shown_with_its_prompt_and_file(
    harness: Harness, fake_model: FakeResponses, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With a ChatGPT login Codex offers its image_gen tool; the model calls it, Codex asks the
    provider's Images API (the scripted server) itself, saves the PNG and reports an
    imageGeneration item: tether shows it generically ("image generation", the prompt and where
    the image was saved — not the image's base64) and the turn goes on."""
    home = tmp_path / "chatgpt-home"
    access = chatgpt_login(home, fake_model.base_url)
    fake_model.image = png(48, 48, noise=True)  # as a picture's, its base64 is longer than a summary
    # Were Codex to refresh the login, it would ask the scripted server (and fail), not OpenAI.
    for name, value in refresh_url(fake_model.base_url).items():
        monkeypatch.setenv(name, value)
    fake_model.add({"call": {"name": "imagegen", "namespace": "image_gen", "arguments": {"prompt": "a teal square"}}},
                   {"text": "Here is your square."})
    session = await harness.start("draw a teal square", options={"codex_home": str(home)})
    done = await harness.wait(session, EventType.TURN_COMPLETED)
    assert done.data["status"] == "completed", done.data
    offered = [t.get("name") for t in fake_model.requests[0]["tools"]]
    assert "image_gen" in offered, offered

    [asked] = fake_model.image_requests
    assert asked["body"]["prompt"] == "a teal square"
    assert asked["headers"]["authorization"] == f"Bearer {access}"
    assert asked["headers"]["chatgpt-account-id"] == ACCOUNT
    [started] = await harness.items(session, EventType.ITEM_STARTED, "other")
    [image] = await harness.items(session, EventType.ITEM_COMPLETED, "other")
    assert image["item"] == started["item"] and image["turn"] == done.data["turn"]
    assert (image["type"], image["title"], image["status"]) == ("imageGeneration", "image generation", "completed")
    saved = next((home / "generated_images").rglob("*.png"))
    assert saved.read_bytes() == fake_model.image
    assert image["summary"] == f"a teal square; saved as {saved}"
    assert base64.b64encode(fake_model.image).decode()[:12] not in json.dumps(
        [e.data for e in await harness.events(session)])  # the picture is not text for the log
    # The model got the image back as the tool's output, and its answer ended the turn.
    [returned] = tool_outputs(fake_model.requests[1]).values()
    assert returned[0]["image_url"] == "data:image/png;base64," + base64.b64encode(fake_model.image).decode()
    [answer] = await harness.items(session, EventType.ITEM_COMPLETED, "agent_message")
    assert answer["text"] == "Here is your square."



def notices(events: list[Any], source: str) -> list[dict[str, Any]]:
    return [e.data for e in events if e.type == EventType.AGENT_NOTICE and e.data["source"] == source]


async def test_an_attestation_codex_asks_for_is_refused_and_the_turn_goes_on(
    harness: Harness, fake_model: FakeResponses, codex_binary: CodexBinary, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A client opted into attestation (the proxy: ``requestAttestation`` in initialize's
    capabilities); with a ChatGPT login Codex asks it for one (attestation/generate) before each
    model request, which tether refuses at once ("tether does not attest"). Codex then sends the
    request with its header saying the client's answer failed (``x-oai-attestation`` status 2, not
    1 for a timeout nor 0 with a token), and the turn goes on."""
    home = tmp_path / "chatgpt-home"
    chatgpt_login(home, fake_model.base_url)
    for name, value in refresh_url(fake_model.base_url).items():
        monkeypatch.setenv(name, value)
    proxy, changed = write_proxy(tmp_path / "proxy", codex_binary.path,
                                 [{"method": "initialize", "merge": {"capabilities": {"requestAttestation": True}}}])
    fake_model.add({"text": "Unattested, then."})
    session = await harness.start("say something", options={"binary": str(proxy), "codex_home": str(home)})
    done = await harness.wait(session, EventType.TURN_COMPLETED)
    assert done.data["status"] == "completed", done.data
    [sent] = [json.loads(line) for line in changed.read_text().splitlines()]
    assert sent["method"] == "initialize"
    assert sent["params"]["capabilities"] == {"experimentalApi": True, "requestAttestation": True}

    [refused] = notices(await harness.events(session), "attestation/generate")  # one model request, one ask
    assert refused["level"] == "warning" and refused["turn"] == done.data["turn"]
    assert refused["message"] == "refused: Codex asked attestation/generate (); tether does not attest"
    assert not [e for e in await harness.events(session) if e.type == EventType.APPROVAL_REQUESTED]
    [headers] = fake_model.response_headers
    assert json.loads(headers["x-oai-attestation"]) == {"v": 1, "s": 2}  # 2: the client's request failed
    [answer] = await harness.items(session, EventType.ITEM_COMPLETED, "agent_message")
    assert answer["text"] == "Unattested, then."


async def test_a_token_refresh_codex_asks_for_is_refused_and_the_turn_fails_with_codexs_message(
    harness: Harness, fake_model: FakeResponses, codex_binary: CodexBinary, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A client logged Codex in with ChatGPT tokens it manages (the proxy: ``account/login/start``
    ``chatgptAuthTokens`` right after initialize, in a CODEX_HOME without a login); the model's
    server answers that token with 401, so Codex asks the client for new tokens
    (account/chatgptAuthTokens/refresh), which tether refuses at once ("the host's credentials never
    leave it"): Codex fails the turn with its own message and asks the model nothing more. The
    session goes on: the next prompt is a turn of its own (which ends the same way)."""
    home = tmp_path / "chatgpt-home"
    chatgpt_home(home, fake_model.base_url)
    for name, value in refresh_url(fake_model.base_url).items():
        monkeypatch.setenv(name, value)
    stale = chatgpt_access_token()
    fake_model.unauthorized.add(stale)
    login = {"method": "account/login/start",
             "params": {"type": "chatgptAuthTokens", "accessToken": stale, "chatgptAccountId": ACCOUNT}}
    proxy, log = write_proxy(tmp_path / "proxy", codex_binary.path, [{"after": "initialized", "send": login}])
    fake_model.add({"text": "Never said."})
    session = await harness.start("say something", options={"binary": str(proxy), "codex_home": str(home)})
    done = await harness.wait(session, EventType.TURN_COMPLETED)
    assert done.data == {"turn": done.data["turn"], "status": "failed",
                         "error": "Codex: auth refresh request failed: code=-32601"}
    sent, answered = [json.loads(line) for line in log.read_text().splitlines()]
    assert {k: sent[k] for k in ("method", "params")} == login
    assert answered == {"id": sent["id"], "result": {"type": "chatgptAuthTokens"}}
    [headers] = fake_model.response_headers  # the one request, refused; none after the refusal
    assert headers["authorization"] == f"Bearer {stale}" and headers["chatgpt-account-id"] == ACCOUNT

    events = await harness.events(session)
    [refused] = notices(events, "account/chatgptAuthTokens/refresh")
    assert refused["level"] == "warning" and refused["turn"] == done.data["turn"]
    assert refused["message"] == ("refused: Codex asked account/chatgptAuthTokens/refresh (reason: unauthorized; "
                                  f"previousAccountId: {ACCOUNT}); the host's credentials never leave it")
    [error] = await harness.items(session, EventType.ITEM_COMPLETED, "error")
    assert (error["turn"], error["message"]) == (done.data["turn"], "Codex: auth refresh request failed: code=-32601")
    assert not await harness.items(session, EventType.ITEM_COMPLETED, "agent_message")
    assert stale not in json.dumps([e.data for e in events])

    await session.send_input("and now?")
    second = await harness.wait(session, EventType.TURN_COMPLETED, lambda d: d["turn"] != done.data["turn"])
    assert second.data["status"] == "failed", second.data
    assert len(notices(await harness.events(session), "account/chatgptAuthTokens/refresh")) == 2
    assert len(fake_model.response_headers) == 2
