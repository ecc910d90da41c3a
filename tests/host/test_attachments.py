"""Images attached to a prompt are checked at the host's boundary: base64, size, and bytes that are
of the type they claim; an agent that takes no images refuses them before a turn starts, and the log
records what was attached, never the bytes."""

from __future__ import annotations

import base64
from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.agents.base import Agent, TurnSettings
from tether.agents.policy import AgentConfig, Policy
from tether.errors import TetherError
from tether.host.agent_session import AgentSession, AgentSessionError
from tether.host.attachments import decode_images
from tether.host.eventlog import EventLog
from tether.protocol.events import EventType
from tether.protocol.images import image_type
from tether.protocol.schemas import MAX_IMAGE_BYTES, ImageParam, SessionSend

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 32
WEBP = b"RIFF\x10\x00\x00\x00WEBPVP8 " + b"\x00" * 16


def param(name: str, mime: str, data: bytes | str) -> ImageParam:
    encoded = data if isinstance(data, str) else base64.b64encode(data).decode()
    return ImageParam(name=name, mime=mime, data=encoded)  # type: ignore[arg-type]


def test_images_of_their_claimed_type_are_taken() -> None:
    images = decode_images([param("a.png", "image/png", PNG), param("b.webp", "image/webp", WEBP)])
    assert [(i.name, i.mime, i.data) for i in images] == [("a.png", "image/png", PNG), ("b.webp", "image/webp", WEBP)]
    assert images[0].data_url() == "data:image/png;base64," + base64.b64encode(PNG).decode()


@pytest.mark.parametrize(("image", "said"), [
    (param("a.png", "image/png", "not base64!"), "not valid base64"),
    (param("a.png", "image/jpeg", PNG), "is not a image/jpeg file"),
    (param("x.webp", "image/webp", b"RIFF\x10\x00\x00\x00WAVEfmt "), "is not a image/webp file"),
    (param("evil.png", "image/png", b"#!/bin/sh\nrm -rf ~\n"), "is not a image/png file"),
    (param("big.jpg", "image/jpeg", JPEG + b"\x00" * MAX_IMAGE_BYTES), "more than"),
])
def test_bad_images_are_clear_errors(image: ImageParam, said: str) -> None:
    with pytest.raises(TetherError, match=said) as raised:
        decode_images([image])
    assert raised.value.code == "bad_params"


def test_the_wire_refuses_too_many_images_and_unknown_types() -> None:
    send = {"id": "s_1", "text": "look", "images": [{"name": "a.png", "mime": "image/png", "data": "AA=="}] * 5}
    with pytest.raises(msgspec.ValidationError, match="length <= 4"):
        msgspec.convert(send, SessionSend)
    send["images"] = [{"name": "a.svg", "mime": "image/svg+xml", "data": "AA=="}]
    with pytest.raises(msgspec.ValidationError, match="Invalid enum value"):
        msgspec.convert(send, SessionSend)


@given(st.binary(max_size=64), st.sampled_from(["image/png", "image/jpeg", "image/gif", "image/webp"]),
       st.text(max_size=40))
def test_any_image_is_taken_or_refused_cleanly(data: bytes, mime: str, junk: str) -> None:
    for image in (param("x", mime, data), param("x", mime, junk or "A")):
        try:
            [decoded] = decode_images([image])
        except TetherError as exc:
            assert exc.code == "bad_params"
        else:
            assert image_type(decoded.data) == mime


class TextOnly(Agent):
    name = "text-only"
    takes_images = False

    async def run_turn(self, turn: str, text: str) -> None:
        raise AssertionError("no turn may start")


class Seeing(Agent):
    name = "seeing"
    takes_images = True
    chosen: TurnSettings | None = None

    def choose(self, settings: TurnSettings) -> None:
        self.chosen = settings

    async def run_turn(self, turn: str, text: str) -> None:
        pass


async def test_an_agent_without_images_refuses_them_and_the_log_keeps_no_bytes(
    log: EventLog, tmp_path: Path,
) -> None:
    [png] = decode_images([param("shot.png", "image/png", PNG)])
    text_only = AgentSession(session_id="s_text", workspace=tmp_path, policy=Policy(), config=AgentConfig("x"),
                             log=log, agent_cls=TextOnly)
    with pytest.raises(AgentSessionError, match="takes no images") as raised:
        await text_only.send_input("look", settings=TurnSettings(images=(png,)))
    assert raised.value.code == "bad_params"

    seeing = AgentSession(session_id="s_seeing", workspace=tmp_path, policy=Policy(), config=AgentConfig("x"),
                          log=log, agent_cls=Seeing)
    started = await seeing.send_input("look", settings=TurnSettings(images=(png,)))
    assert started.type == EventType.TURN_STARTED
    assert started.data["images"] == [{"name": "shot.png", "mime": "image/png", "bytes": len(PNG)}]
    assert isinstance(seeing.agent, Seeing) and seeing.agent.chosen is not None
    assert seeing.agent.chosen.images == (png,)
    logged = [e for e in await log.read(0, 100)]
    assert base64.b64encode(PNG).decode() not in msgspec.json.encode([e.data for e in logged]).decode()
