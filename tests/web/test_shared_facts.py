"""Facts the web client copies from Python stay equal to it: the close codes, which of them are
worth a retry, a sentence for each, and the one Content-Security-Policy (the relay's header: the
page itself carries none). Read from the shipped files, so a change on one side alone fails here."""

from __future__ import annotations

import re
from pathlib import Path

from tether.protocol.frames import CLOSE_MESSAGES, RETRYABLE_CLOSES, CloseCode
from tether.relay.static import CSP, default_static_dir

STATIC = default_static_dir()
assert STATIC is not None


def _js(name: str) -> str:
    return (STATIC / name).read_text()


def _object(source: str, name: str) -> str:
    match = re.search(rf"export const {name} = (?:Object\.freeze\()?\{{(.*?)\}}", source, re.S)
    assert match, f"{name} not found"
    return match.group(1)


def test_close_codes_match_python() -> None:
    body = _object(_js("frames.js"), "CloseCode")
    js = {name: int(value) for name, value in re.findall(r"^\s*([A-Z_]+): (\d+),", body, re.M)}
    assert js == {code.name: code.value for code in CloseCode}


def test_every_close_code_has_a_browser_sentence_and_the_same_retry_rule() -> None:
    source = _js("frames.js")
    sentences = {int(k) for k in re.findall(r"^\s*(\d+): \"", _object(source, "CLOSE_MESSAGES"), re.M)}
    assert sentences == {int(c) for c in CLOSE_MESSAGES} == {c.value for c in CloseCode}
    retry = re.search(r"export const RETRY_CODES = new Set\(\[([\d, ]*)\]\)", source)
    assert retry is not None
    assert {int(c) for c in retry.group(1).split(",")} == {int(c) for c in RETRYABLE_CLOSES}


def test_the_web_client_has_one_content_security_policy() -> None:
    for page in Path(STATIC).rglob("*.html"):
        assert "Content-Security-Policy" not in page.read_text(), f"{page.name} has its own CSP"
    directives = dict(d.strip().split(" ", 1) for d in CSP.split(";"))
    assert directives["script-src"] == "'self'" and "unsafe-eval" not in CSP
    assert directives["frame-ancestors"] == "'none'" and directives["connect-src"] == "'self'"
