"""The relay wire format: every frame round-trips, and garbage only ever raises FrameError."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.protocol.frames import (
    MAX_ACK,
    MAX_ALLOWLIST_CHUNK,
    MAX_ID_LEN,
    MAX_OFFERS,
    MAX_SEALED,
    MAX_TEXT_BYTES,
    Allowlist,
    Auth,
    Challenge,
    Close,
    CloseCode,
    Data,
    Error,
    Frame,
    FrameError,
    FrameType,
    Hello,
    Incoming,
    MailboxAck,
    MailboxDeposit,
    MailboxError,
    MailboxGet,
    MailboxItem,
    MailboxOk,
    MailboxQueue,
    MailboxSnapshot,
    MailboxTake,
    Offers,
    Open,
    Opened,
    Presence,
    Redirect,
    Role,
    Watch,
    Welcome,
    auth_message,
    close_message,
    data_channel,
    decode_frame,
    encode_data,
    rechannel_data,
)

KEY = bytes(range(32))

EXAMPLES: list[Frame] = [
    Challenge(nonce=os.urandom(32)),
    Hello(role=Role.HOST, identity_public=KEY),
    Hello(role=Role.DEVICE, identity_public=KEY, version=7),
    Auth(signature=bytes(64)),
    Welcome(id="ABCDEFGHIJKLMNOPQRST", max_frame_bytes=70_000),
    Error(code=CloseCode.AUTH_FAILED, message="nope — ça ne va pas"),
    Allowlist(keys=(KEY, bytes(32))),
    Allowlist(keys=(), first=True, last=False),
    Offers(offer_ids=("off1", "x" * MAX_ID_LEN)),
    Offers(offer_ids=()),
    Open(channel=7, host_id="HOSTID", offer_id=""),
    Open(channel=0xFFFF_FFFF, host_id="HOSTID", offer_id="offer-1"),
    Opened(channel=9),
    Incoming(channel=3, device_identity=KEY, offer_id="offer-1"),
    Incoming(channel=3, device_identity=KEY),
    Data(channel=1, payload=b""),
    Data(channel=2, payload=os.urandom(65_535)),
    Close(channel=5, code=CloseCode.REVOKED, reason="revoked by admin"),
    Close(channel=5),
    Watch(host_ids=("A", "B")),
    Watch(host_ids=()),
    Presence(host_id="HOSTID", online=True),
    Presence(host_id="HOSTID", online=False),
    Redirect(host_id="HOSTID", url="wss://node-2.example.com/relay"),
    Redirect(host_id="h", url=""),
    MailboxDeposit(req=1, device_identity=KEY, sealed=os.urandom(MAX_SEALED)),
    MailboxDeposit(req=2, device_identity=KEY, sealed=b""),
    MailboxTake(req=3),
    MailboxAck(req=4, items=(1, 2**64 - 1)),
    MailboxGet(req=5, host_id="HOSTID"),
    MailboxQueue(req=6, host_id="HOSTID", sealed=b"x" * 100),
    MailboxSnapshot(req=7, deposited_at_ms=1_765_000_000_000, sealed=b""),
    MailboxItem(req=0, item=9, device_identity=KEY, queued_at_ms=1, sealed=b"y" * 96),
    MailboxOk(req=8, value=12),
    MailboxError(req=9, code=CloseCode.MAILBOX_FULL, message="full"),
]


@pytest.mark.parametrize("frame", EXAMPLES, ids=lambda f: type(f).__name__)
def test_every_frame_round_trips(frame: Frame) -> None:
    assert decode_frame(frame.encode()) == frame


def test_every_frame_type_has_an_example() -> None:
    covered = {f.encode()[0] for f in EXAMPLES}
    assert covered == {int(t) for t in FrameType}


def test_data_layout_is_type_channel_payload() -> None:
    frame = encode_data(0x01020304, b"xyz")
    assert frame == b"\x30\x01\x02\x03\x04xyz"
    assert data_channel(frame) == 0x01020304
    moved = rechannel_data(frame, 9)
    assert moved == b"\x30\x00\x00\x00\x09xyz"
    with pytest.raises(FrameError):
        data_channel(b"\x30\x00")
    with pytest.raises(FrameError):
        data_channel(Opened(1).encode())


def test_auth_message_binds_role_and_nonce() -> None:
    nonce = bytes(32)
    assert auth_message(Role.HOST, nonce) != auth_message(Role.DEVICE, nonce)
    assert auth_message(Role.HOST, nonce).startswith(b"tether-relay-auth-v1\x00")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff",
        b"\x02\x00\x01\x01" + bytes(31),  # HELLO one byte short
        b"\x02\x00\x01\x03" + bytes(32),  # HELLO with an unknown role
        b"\x03" + bytes(65),  # AUTH with a trailing byte
        b"\x05\x00\x01\xff\xfe",  # ERROR with bad UTF-8
        b"\x05\x00\x01" + b"a" * (MAX_TEXT_BYTES + 1),
        b"\x10\x04\x00\x00",  # ALLOWLIST with an unknown flag
        b"\x10\x03" + (MAX_ALLOWLIST_CHUNK + 1).to_bytes(2, "big"),
        b"\x11" + bytes([MAX_OFFERS + 1]),
        b"\x11\x01\x00",  # OFFERS with an empty id
        b"\x11\x01\x02a ",  # OFFERS with a space in an id
        b"\x20\x00\x00\x00\x01\x41" + b"A" * MAX_ID_LEN,  # OPEN host id too long
        b"\x21\x00\x00\x00",  # OPENED short
        b"\x41\x02HOST",  # PRESENCE with a bad flag
        b"\x41\x01",  # PRESENCE without host id
        b"\x40\x00\x02\x01A",  # WATCH count larger than the list
        b"\x31\x00\x00\x00\x01\x00",  # CLOSE short
    ],
)
def test_malformed_frames_raise_frame_error(data: bytes) -> None:
    with pytest.raises(FrameError) as info:
        decode_frame(data)
    assert info.value.code == "frame"


def test_encoders_refuse_what_decoders_would_refuse() -> None:
    for bad in [
        lambda: Hello(role=Role.HOST, identity_public=b"short").encode(),
        lambda: Offers(offer_ids=("a",) * (MAX_OFFERS + 1)).encode(),
        lambda: Open(channel=1, host_id="has space").encode(),
        lambda: Open(channel=1, host_id="é").encode(),
        lambda: Opened(channel=-1).encode(),
        lambda: Close(channel=1, code=70_000).encode(),
        lambda: encode_data(2**32, b""),
        lambda: MailboxDeposit(req=1, device_identity=KEY, sealed=bytes(MAX_SEALED + 1)).encode(),
        lambda: MailboxQueue(req=1, host_id="H", sealed=b"").encode(),
        lambda: MailboxAck(req=1, items=(0,) * (MAX_ACK + 1)).encode(),
        lambda: MailboxOk(req=1, value=2**64).encode(),
    ]:
        with pytest.raises(FrameError):
            bad()


def test_long_reasons_are_clipped_on_a_character_boundary() -> None:
    frame = decode_frame(Close(channel=1, reason="é" * MAX_TEXT_BYTES).encode())
    assert isinstance(frame, Close)
    assert len(frame.reason.encode()) <= MAX_TEXT_BYTES
    assert set(frame.reason) == {"é"}


def test_close_messages_say_what_to_do() -> None:
    assert "tether pair" in close_message(CloseCode.NOT_ALLOWED)
    assert "already used or it expired" in close_message(CloseCode.NO_SUCH_OFFER)
    assert "offline" in close_message(CloseCode.HOST_OFFLINE)
    assert close_message(999) == "closed with code 999"
    assert all(code in {int(c) for c in CloseCode} for code in map(int, CloseCode))


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_decode_only_raises_frame_error(data: bytes) -> None:
    try:
        decode_frame(data)
    except FrameError:
        pass


@settings(max_examples=2000, deadline=None)
@given(st.sampled_from([int(t) for t in FrameType]), st.binary(max_size=200))
def test_fuzz_typed_garbage_only_raises_frame_error(kind: int, body: bytes) -> None:
    try:
        frame = decode_frame(bytes([kind]) + body)
    except FrameError:
        return
    # Whatever decodes must re-encode to exactly the same bytes: one meaning per message.
    assert frame.encode() == bytes([kind]) + body


ids = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=MAX_ID_LEN)
opt_ids = st.one_of(st.just(""), ids)
u32 = st.integers(0, 2**32 - 1)
u16 = st.integers(0, 2**16 - 1)
u64 = st.integers(0, 2**64 - 1)
keys = st.binary(min_size=32, max_size=32)
text = st.text(max_size=200)

frames: st.SearchStrategy[Frame] = st.one_of(
    st.builds(Challenge, nonce=st.binary(min_size=32, max_size=32), version=u16),
    st.builds(Hello, role=st.sampled_from(Role), identity_public=keys, version=u16),
    st.builds(Auth, signature=st.binary(min_size=64, max_size=64)),
    st.builds(Welcome, id=ids, max_frame_bytes=u32),
    st.builds(Error, code=u16, message=text),
    st.builds(
        Allowlist,
        keys=st.lists(keys, max_size=20).map(tuple),
        first=st.booleans(),
        last=st.booleans(),
    ),
    st.builds(Offers, offer_ids=st.lists(ids, max_size=MAX_OFFERS).map(tuple)),
    st.builds(Open, channel=u32, host_id=ids, offer_id=opt_ids),
    st.builds(Opened, channel=u32),
    st.builds(Incoming, channel=u32, device_identity=keys, offer_id=opt_ids),
    st.builds(Data, channel=u32, payload=st.binary(max_size=2000)),
    st.builds(Close, channel=u32, code=u16, reason=text),
    st.builds(Watch, host_ids=st.lists(ids, max_size=20).map(tuple)),
    st.builds(Presence, host_id=ids, online=st.booleans()),
    st.builds(Redirect, host_id=ids, url=text),
    st.builds(MailboxDeposit, req=u32, device_identity=keys, sealed=st.binary(max_size=300)),
    st.builds(MailboxTake, req=u32),
    st.builds(MailboxAck, req=u32, items=st.lists(u64, max_size=20).map(tuple)),
    st.builds(MailboxGet, req=u32, host_id=ids),
    st.builds(MailboxQueue, req=u32, host_id=ids, sealed=st.binary(min_size=1, max_size=300)),
    st.builds(MailboxSnapshot, req=u32, deposited_at_ms=u64, sealed=st.binary(max_size=300)),
    st.builds(MailboxItem, req=u32, item=u64, device_identity=keys, queued_at_ms=u64, sealed=st.binary(max_size=300)),
    st.builds(MailboxOk, req=u32, value=u64),
    st.builds(MailboxError, req=u32, code=u16, message=text),
)


@settings(max_examples=2000, deadline=None)
@given(frames)
def test_generated_frames_round_trip(frame: Frame) -> None:
    encoded = frame.encode()
    assert decode_frame(encoded) == frame
