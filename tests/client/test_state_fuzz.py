"""The client's saved hosts (client/hosts.json): whatever bytes the file holds, reading it gives
the hosts or a ConfigError naming the file — never another exception, never a host with
mistyped fields — and a damaged file is never overwritten (no silent loss of what it held)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.client.state import ClientState, PairedHost
from tether.crypto.encoding import b64u_decode
from tether.errors import ConfigError

FIELDS = ("host_id", "name", "relay_url", "host_static", "device_id", "scopes", "paired_at")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)

paired_hosts = st.builds(
    PairedHost,
    host_id=st.text(min_size=1, max_size=24),
    name=st.text(max_size=24),
    relay_url=st.text(max_size=40),
    host_static=st.binary(min_size=32, max_size=32),
    device_id=st.text(max_size=24),
    scopes=st.lists(st.text(max_size=10), max_size=4),
    paired_at=st.floats(allow_nan=False, allow_infinity=False) | st.integers(),
)


@contextmanager
def _state() -> Iterator[ClientState]:
    # A fresh home per example (a pytest tmp_path would be shared by all examples).
    with tempfile.TemporaryDirectory(prefix="tether-state-") as home:
        state = ClientState(Path(home))
        state.dir.mkdir(mode=0o700)
        yield state


def _other_host() -> PairedHost:
    return PairedHost("other-host", "other", "ws://127.0.0.1:1", bytes(32), "dev", ["read"], 1.0)


def _assert_well_typed(host: PairedHost) -> None:
    for name in ("host_id", "name", "relay_url", "device_id"):
        assert isinstance(getattr(host, name), str), (name, host)
    assert isinstance(host.host_static, bytes) and len(host.host_static) == 32
    assert isinstance(host.scopes, list) and all(isinstance(s, str) for s in host.scopes)
    assert isinstance(host.paired_at, int | float) and not isinstance(host.paired_at, bool)
    assert host.paired_at == host.paired_at and abs(host.paired_at) != float("inf")


def _check(state: ClientState, content: bytes) -> list[PairedHost] | None:
    """Read ``content`` as hosts.json; then save another host and check nothing was lost."""
    state.hosts_path.write_bytes(content)
    try:
        hosts = state.hosts()
    except ConfigError as exc:
        assert str(state.hosts_path) in exc.message, exc.message
        assert exc.hint
        # Saving over a damaged file would lose whatever it held: refused, the file untouched.
        with pytest.raises(ConfigError):
            state.save_host(_other_host())
        assert state.hosts_path.read_bytes() == content
        return None
    for host in hosts:
        _assert_well_typed(host)
    original = json.loads(content)
    assert set(original) == {"version", "hosts"}
    state.save_host(_other_host())
    saved = json.loads(state.hosts_path.read_bytes())
    kept = [h for h in original["hosts"] if h["host_id"] != "other-host"]
    assert [h["host_id"] for h in saved["hosts"]] == [h["host_id"] for h in kept] + ["other-host"]
    for before, after in zip(kept, saved["hosts"], strict=False):
        # Every field the file held survives the rewrite (host_static may be re-spelled, same bytes).
        for key, value in before.items():
            if key == "host_static":
                assert b64u_decode(after[key]) == b64u_decode(value)
            else:
                assert after[key] == value, key
    return hosts


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_give_a_config_error_naming_the_file(content: bytes) -> None:
    with _state() as state:
        assert _check(state, content) is None  # random bytes are never a valid hosts file


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_arbitrary_json_gives_a_config_error_naming_the_file(value: Any) -> None:
    with _state() as state:
        _check(state, json.dumps(value).encode())


@st.composite
def damaged_files(draw: st.DrawFn) -> dict[str, Any]:
    """A valid file with one thing changed: a field removed, retyped or added, at either level."""
    hosts = draw(st.lists(paired_hosts, min_size=1, max_size=3, unique_by=lambda h: h.host_id))
    data: dict[str, Any] = {"version": 1, "hosts": [h.to_json() for h in hosts]}
    entry = draw(st.sampled_from(data["hosts"]))
    where = draw(st.sampled_from(["drop", "retype", "add", "entry", "version", "hosts", "top"]))
    if where == "drop":
        del entry[draw(st.sampled_from(FIELDS))]
    elif where == "retype":
        entry[draw(st.sampled_from(FIELDS))] = draw(json_values)
    elif where == "add":
        entry[draw(st.text(max_size=10).filter(lambda k: k not in FIELDS))] = draw(json_values)
    elif where == "entry":
        data["hosts"][data["hosts"].index(entry)] = draw(json_values)
    elif where == "version":
        data["version"] = draw(json_values)
    elif where == "hosts":
        data["hosts"] = draw(json_values)
    else:
        data[draw(st.text(max_size=10).filter(lambda k: k not in data))] = draw(json_values)
    return data


@settings(max_examples=250, deadline=None)
@given(damaged_files())
def test_damaged_files_are_refused_or_read_whole(data: dict[str, Any]) -> None:
    with _state() as state:
        _check(state, json.dumps(data).encode())


@settings(max_examples=50, deadline=None)
@given(st.lists(paired_hosts, min_size=1, max_size=4, unique_by=lambda h: h.host_id))
def test_saved_hosts_round_trip(hosts: list[PairedHost]) -> None:
    with _state() as state:
        for host in hosts:
            state.save_host(host)
        assert state.hosts() == hosts
        assert _check(state, state.hosts_path.read_bytes()) == hosts
        assert state.find_host(hosts[0].host_id) == hosts[0]


def test_a_host_s_id_finds_it_even_when_another_host_is_named_like_it() -> None:
    """Found by the round trip above: a host whose name is another's id made that id ambiguous."""
    named_like_it = PairedHost("h2", "h1", "ws://r", bytes(32), "d2", [])
    by_id = PairedHost("h1", "laptop", "ws://r", bytes(32), "d1", [])
    with _state() as state:
        state.save_host(named_like_it)
        state.save_host(by_id)
        assert state.find_host("h1") == by_id
        assert state.find_host("laptop") == by_id
        assert state.find_host("h2") == named_like_it


def test_each_damage_is_named() -> None:
    with _state() as state:
        valid = {"version": 1, "hosts": [_other_host().to_json()]}
        cases: list[tuple[bytes, str]] = [
            (b"\xff\xfe not text", "is not readable JSON"),
            (b'{"version": 1, "hosts": [', "is not readable JSON"),
            (b"[" * 100_000, "is damaged"),  # deeper than the JSON parser goes
            (json.dumps({**valid, "version": 2}).encode(), "has version 2, which this tether does not know"),
            (json.dumps({**valid, "version": True}).encode(), "is damaged"),
            (json.dumps({"hosts": valid["hosts"]}).encode(), "is damaged"),
            (json.dumps({**valid, "extra": 1}).encode(), "is damaged"),
            (json.dumps({"version": 1, "hosts": [{**valid["hosts"][0], "host_static": "AAAA"}]}).encode(),
             "is damaged"),
            (json.dumps({"version": 1, "hosts": [{**valid["hosts"][0], "scopes": "read"}]}).encode(), "is damaged"),
            (json.dumps({"version": 1, "hosts": [{**valid["hosts"][0], "paired_at": float("nan")}]}).encode(),
             "is damaged"),
            (json.dumps({"version": 1, "hosts": [list(valid["hosts"][0].items())]}).encode(), "is damaged"),
        ]
        for content, message in cases:
            state.hosts_path.write_bytes(content)
            with pytest.raises(ConfigError) as info:
                state.hosts()
            assert info.value.message.startswith(str(state.hosts_path)), info.value.message
            assert message in info.value.message, (content[:60], info.value.message)
        # A file the process cannot read at all.
        state.hosts_path.unlink()
        state.hosts_path.mkdir()
        with pytest.raises(ConfigError, match="is not readable"):
            state.hosts()


def test_a_missing_file_is_no_hosts() -> None:
    with _state() as state:
        assert state.hosts() == []
        state.save_host(_other_host())
        assert state.hosts() == [_other_host()]
        assert os.stat(state.hosts_path).st_mode & 0o777 == 0o600
