"""The web client's close codes are the relay's: every code, its number, and which are retryable
(frames.js against protocol/frames.py), so the page cannot drift from the wire."""

from __future__ import annotations

import re

from tether.protocol.frames import RETRYABLE_CLOSES, CloseCode
from tether.relay.static import default_static_dir

STATIC = default_static_dir()
assert STATIC is not None
FRAMES_JS = (STATIC / "frames.js").read_text()


def test_every_close_code_has_the_same_number_and_a_sentence_on_the_page() -> None:
    block = re.search(r"export const CloseCode = Object\.freeze\(\{(.*?)\}\);", FRAMES_JS, re.S)
    assert block is not None
    page = {name: int(number) for name, number in re.findall(r"(\w+): (\d+),", block.group(1))}
    assert page == {code.name: int(code) for code in CloseCode}
    messages = re.search(r"export const CLOSE_MESSAGES = \{(.*?)\n\};", FRAMES_JS, re.S)
    assert messages is not None
    assert {int(n) for n in re.findall(r"^\s+(\d+): ", messages.group(1), re.M)} == {int(c) for c in CloseCode}


def test_the_page_retries_after_the_same_closes_as_the_sdk() -> None:
    retry = re.search(r"export const RETRY_CODES = new Set\(\[([\d, ]*)\]\);", FRAMES_JS)
    assert retry is not None
    assert {int(n) for n in retry.group(1).split(",")} == {int(c) for c in RETRYABLE_CLOSES}
