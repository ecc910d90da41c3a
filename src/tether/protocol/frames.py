"""The relay wire format: every frame a host, a device and the relay exchange.

This module *is* the relay protocol (ARCHITECTURE §4.2): read it top to bottom. It is sans-I/O:
frames are plain dataclasses with ``encode() -> bytes``, and :func:`decode_frame` turns one
binary WebSocket message back into a frame, raising :class:`FrameError` — and nothing else — on
anything malformed. The relay never parses channel payloads: they are end-to-end Noise
ciphertext.

Every frame is one binary WebSocket message: a 1-byte :class:`FrameType`, then the layout given
in the comment beside the type. Integers are big-endian. ``str8`` is a 1-byte length then that
many bytes of printable ASCII (ids). ``rest`` is every remaining byte of the message (UTF-8 text
for reasons and messages, opaque bytes for payloads). No trailing bytes are allowed anywhere.

A session (§4.2)::

    client                      relay
    HELLO(role, identity) ─────▶
                          ◀───── CHALLENGE(version, nonce)
    AUTH(signature[, enrollment]) ─▶        signature over AUTH_CONTEXT + role + nonce;
                                            enrollment: a host's proof of the relay's
                                            enrollment key, HMAC over ENROLL_CONTEXT + nonce + key
                          ◀───── WELCOME(max frame, id)  or  ERROR(code, message) and close

Then a host publishes ALLOWLIST and OFFERS; a device sends OPEN and gets OPENED or CLOSE; the
host gets INCOMING; both sides exchange DATA and CLOSE on the channel.

The mailbox (protocol version 2, ARCHITECTURE §8b) holds sealed blobs for a host that is away:
a host deposits a snapshot per device (MAILBOX_DEPOSIT) and takes what devices queued
(MAILBOX_TAKE → MAILBOX_ITEM…, MAILBOX_ACK); a device reads its snapshot (MAILBOX_GET →
MAILBOX_SNAPSHOT) and queues items (MAILBOX_QUEUE). Each request carries an id the sender chose
(``req``); the relay answers it with MAILBOX_OK or MAILBOX_ERROR, which leaves the connection open.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum

from tether.crypto.keys import KEY_LEN, SIGNATURE_LEN
from tether.crypto.seal import MAX_SEALED  # a sealed mailbox blob is one Noise message
from tether.errors import TetherError

#: Bumped on any incompatible change to a layout below. 2 added the mailbox frames, 3 REDIRECT; a
#: relay still admits clients of version 1 (they never send the newer frames, and are sent none).
PROTOCOL_VERSION = 3
#: The oldest version a relay may send REDIRECT to.
REDIRECT_VERSION = 3
OLDEST_PROTOCOL_VERSION = 1

#: Signed by a client to prove it holds the identity key it announced in HELLO.
AUTH_CONTEXT = b"tether-relay-auth-v1\x00"
#: MACed by a host with the relay's enrollment key (``tether relay --enroll-key``) to prove it
#: holds that key; the proof rides in AUTH, bound to the relay's nonce and the host's identity.
ENROLL_CONTEXT = b"tether-relay-enroll-v1\x00"

NONCE_LEN = 32
#: An enrollment proof is an HMAC-SHA256.
ENROLL_PROOF_LEN = 32
#: Host ids, device ids and offer ids are short printable ASCII names.
MAX_ID_LEN = 64
#: Reasons and error messages are for people; a peer cannot make the relay carry essays.
MAX_TEXT_BYTES = 1024
#: An ALLOWLIST frame carries at most this many keys (2048 × 32 B stays under a 70 kB frame);
#: longer lists are sent in several frames, the first with ``first=True``, the last with
#: ``last=True``, and the relay applies the list atomically when the last one arrives.
MAX_ALLOWLIST_CHUNK = 2048
#: Open pairing offers a host may publish at once.
MAX_OFFERS = 64
#: Hosts a device may watch at once (1024 × 65 B stays under a 70 kB frame).
MAX_WATCH = 1024
MAX_CHANNEL = 0xFFFF_FFFF
#: Items a host acknowledges in one MAILBOX_ACK.
MAX_ACK = 1024


class FrameError(TetherError):
    """A malformed relay frame. The only exception :func:`decode_frame` raises."""

    code = "frame"


class FrameType(IntEnum):
    # relay→any: type | version u16 | nonce [32]
    CHALLENGE = 0x01
    # any→relay: type | version u16 | role u8 | identity_public [32]
    HELLO = 0x02
    # any→relay: type | signature [64] | enrollment [0 or 32]
    #   signature: Ed25519 over AUTH_CONTEXT + role u8 + nonce
    #   enrollment: hosts of a relay with an enrollment key only, HMAC-SHA256(enrollment key,
    #   ENROLL_CONTEXT + nonce + identity_public); empty otherwise
    AUTH = 0x03
    # relay→any: type | max_frame_bytes u32 | id rest(ASCII)
    WELCOME = 0x04
    # relay→any: type | code u16 | message rest(UTF-8); the relay then closes the connection
    ERROR = 0x05

    # host→relay: type | flags u8 (1 = first chunk, 2 = last chunk) | count u16 | count × key [32]
    ALLOWLIST = 0x10
    # host→relay: type | count u8 | count × offer_id str8   (replaces the open offers)
    OFFERS = 0x11

    # device→relay: type | channel u32 | host_id str8 | offer_id rest(ASCII, empty = none)
    OPEN = 0x20
    # relay→device: type | channel u32
    OPENED = 0x21
    # relay→host: type | channel u32 | device identity_public [32] | offer_id rest(ASCII)
    INCOMING = 0x22

    # both ways: type | channel u32 | payload rest(opaque)
    DATA = 0x30
    # both ways: type | channel u32 | code u16 | reason rest(UTF-8)
    CLOSE = 0x31

    # device→relay: type | count u16 | count × host_id str8   (replaces the watched set)
    WATCH = 0x40
    # relay→device: type | online u8 (0 or 1) | host_id rest(ASCII)
    PRESENCE = 0x41
    # relay→device (version 3 on): type | host_id str8 | url rest(UTF-8) — a relay node of a
    # cluster says which node holds this host: reconnect there for it (a hint; the channel works)
    REDIRECT = 0x42

    # host→relay: type | req u32 | device identity_public [32] | sealed rest (empty = clear the slot)
    MAILBOX_DEPOSIT = 0x50
    # host→relay: type | req u32 — send what devices queued (a MAILBOX_ITEM each, then MAILBOX_OK
    # with their count), and each item queued later while this connection lasts (req 0)
    MAILBOX_TAKE = 0x51
    # host→relay: type | req u32 | count u16 | count × item u64 — done with: the relay forgets them
    MAILBOX_ACK = 0x52
    # device→relay: type | req u32 | host_id rest(ASCII) — answered MAILBOX_SNAPSHOT
    MAILBOX_GET = 0x58
    # device→relay: type | req u32 | host_id str8 | sealed rest — answered MAILBOX_OK(item id)
    MAILBOX_QUEUE = 0x59
    # relay→device: type | req u32 | deposited_at u64 (ms) | sealed rest (empty: nothing held)
    MAILBOX_SNAPSHOT = 0x5C
    # relay→host: type | req u32 | item u64 | device identity_public [32] | queued_at u64 (ms) | sealed rest
    MAILBOX_ITEM = 0x5D
    # relay→any: type | req u32 | value u64 (QUEUE: the item's id; TAKE: items sent; else 0)
    MAILBOX_OK = 0x5E
    # relay→any: type | req u32 | code u16 | message rest(UTF-8) — the request failed, the
    # connection stays open
    MAILBOX_ERROR = 0x5F


class Role(IntEnum):
    HOST = 1
    DEVICE = 2


class CloseCode(IntEnum):
    """Why a channel (CLOSE) or a whole connection (ERROR) ended."""

    NORMAL = 0
    PEER_GONE = 1
    NOT_ALLOWED = 2
    HOST_OFFLINE = 3
    NO_SUCH_OFFER = 4
    REVOKED = 5
    TOO_SLOW = 6
    RATE_LIMITED = 7
    PROTOCOL_ERROR = 8
    SHUTDOWN = 9
    AUTH_FAILED = 10
    AUTH_TIMEOUT = 11
    REPLACED = 12
    TOO_MANY_CHANNELS = 13
    UNSUPPORTED_VERSION = 14
    TOO_MANY_CONNECTIONS = 15
    ENROLLMENT_REQUIRED = 16
    IDLE_TIMEOUT = 17
    MAILBOX_OFF = 18
    MAILBOX_FULL = 19
    TOO_LARGE = 20
    NODE_UNREACHABLE = 21


CLOSE_MESSAGES: dict[int, str] = {
    CloseCode.NORMAL: "the channel was closed",
    CloseCode.PEER_GONE: "the other side disconnected from the relay; reconnect and try again",
    CloseCode.NOT_ALLOWED: (
        "this device is not authorised on that host (unknown or revoked); "
        "pair again with `tether pair` on the host"
    ),
    CloseCode.HOST_OFFLINE: "the host is offline; start it with `tether host` (or `tether up`) and retry",
    CloseCode.NO_SUCH_OFFER: (
        "this pairing link is no longer valid: it was already used or it expired; "
        "run `tether pair` on the host for a new one"
    ),
    CloseCode.REVOKED: "this device was revoked on the host; pair again with `tether pair` on the host",
    CloseCode.TOO_SLOW: "the receiver fell too far behind and the channel was closed; reconnect to resume",
    CloseCode.RATE_LIMITED: "too many requests to the relay; wait a moment and retry",
    CloseCode.PROTOCOL_ERROR: "the relay received a malformed frame; upgrade tether on both sides",
    CloseCode.SHUTDOWN: "the relay is shutting down; reconnect in a moment",
    CloseCode.AUTH_FAILED: "the relay could not verify this identity key; check the keys in the tether home",
    CloseCode.AUTH_TIMEOUT: "authentication with the relay took too long; check the network and retry",
    CloseCode.REPLACED: ("another connection for the same host took over (is the host running twice?)"),
    CloseCode.TOO_MANY_CHANNELS: "too many open channels on this connection; close some and retry",
    CloseCode.UNSUPPORTED_VERSION: "the relay speaks another protocol version; upgrade tether",
    CloseCode.TOO_MANY_CONNECTIONS: (
        "this identity already has as many connections to the relay as it may; close some "
        "(is a program reconnecting in a loop?)"
    ),
    CloseCode.ENROLLMENT_REQUIRED: (
        "this relay only admits enrolled hosts: pass --enroll-key FILE to `tether host`, "
        "FILE being a copy of the relay's enrollment key"
    ),
    CloseCode.IDLE_TIMEOUT: (
        "the connection sat idle with no channel open, so the relay closed it; reconnect when needed"
    ),
    CloseCode.MAILBOX_OFF: "this relay keeps no mailbox (its operator turned it off)",
    CloseCode.MAILBOX_FULL: (
        "the relay's mailbox for this host is full; wait until the host is back, then queue again"
    ),
    CloseCode.TOO_LARGE: "too large for the relay's mailbox; shorten it",
    CloseCode.NODE_UNREACHABLE: (
        "the relay node that holds the host could not be reached (the cluster's Redis, or the node, is in "
        "trouble); retry in a moment"
    ),
}


# Channel endings after which a new channel may well work; the others (not allowed, revoked,
# a bad handshake) are answers, and retrying them would only hide the message.
RETRYABLE_CLOSES = frozenset(
    {CloseCode.NORMAL, CloseCode.PEER_GONE, CloseCode.HOST_OFFLINE, CloseCode.TOO_SLOW,
     CloseCode.RATE_LIMITED, CloseCode.SHUTDOWN, CloseCode.REPLACED, CloseCode.NODE_UNREACHABLE}
)


def close_message(code: int) -> str:
    """A human sentence for a close or error code, including what to do next."""
    return CLOSE_MESSAGES.get(code, f"closed with code {code}")


# --- frames --------------------------------------------------------------------------------------

_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_TYPE_U16 = struct.Struct(">BH")
_TYPE_U32 = struct.Struct(">BI")
_TYPE_U32_U16 = struct.Struct(">BIH")
_HELLO = struct.Struct(">BHB")


@dataclass(frozen=True, slots=True)
class Challenge:
    nonce: bytes
    version: int = PROTOCOL_VERSION

    def encode(self) -> bytes:
        _check_len("nonce", self.nonce, NONCE_LEN)
        return _TYPE_U16.pack(FrameType.CHALLENGE, _check_u16(self.version)) + self.nonce


@dataclass(frozen=True, slots=True)
class Hello:
    role: Role
    identity_public: bytes
    version: int = PROTOCOL_VERSION

    def encode(self) -> bytes:
        _check_len("identity key", self.identity_public, KEY_LEN)
        return _HELLO.pack(FrameType.HELLO, _check_u16(self.version), self.role) + self.identity_public


@dataclass(frozen=True, slots=True)
class Auth:
    signature: bytes
    enrollment: bytes = field(default=b"", repr=False)

    def encode(self) -> bytes:
        _check_len("signature", self.signature, SIGNATURE_LEN)
        if self.enrollment:
            _check_len("enrollment proof", self.enrollment, ENROLL_PROOF_LEN)
        return bytes([FrameType.AUTH]) + self.signature + self.enrollment


def auth_message(role: Role, nonce: bytes) -> bytes:
    """What a client signs with its identity key to answer a CHALLENGE."""
    return AUTH_CONTEXT + bytes([role]) + nonce


def enroll_message(nonce: bytes, identity_public: bytes) -> bytes:
    """What a host MACs with the relay's enrollment key to answer a CHALLENGE."""
    return ENROLL_CONTEXT + nonce + identity_public


@dataclass(frozen=True, slots=True)
class Welcome:
    id: str
    max_frame_bytes: int

    def encode(self) -> bytes:
        return _TYPE_U32.pack(FrameType.WELCOME, _check_channel(self.max_frame_bytes)) + _ascii_id(self.id)


@dataclass(frozen=True, slots=True)
class Error:
    code: int
    message: str

    def encode(self) -> bytes:
        return _TYPE_U16.pack(FrameType.ERROR, _check_u16(self.code)) + _clip_text(self.message)


@dataclass(frozen=True, slots=True)
class Allowlist:
    keys: tuple[bytes, ...]
    first: bool = True
    last: bool = True

    def encode(self) -> bytes:
        if len(self.keys) > MAX_ALLOWLIST_CHUNK:
            raise FrameError(f"an ALLOWLIST frame carries at most {MAX_ALLOWLIST_CHUNK} keys")
        for key in self.keys:
            _check_len("identity key", key, KEY_LEN)
        flags = (1 if self.first else 0) | (2 if self.last else 0)
        return struct.pack(">BBH", FrameType.ALLOWLIST, flags, len(self.keys)) + b"".join(self.keys)


@dataclass(frozen=True, slots=True)
class Offers:
    offer_ids: tuple[str, ...]

    def encode(self) -> bytes:
        if len(self.offer_ids) > MAX_OFFERS:
            raise FrameError(f"at most {MAX_OFFERS} pairing offers can be open at once")
        return bytes([FrameType.OFFERS, len(self.offer_ids)]) + b"".join(_str8(o) for o in self.offer_ids)


@dataclass(frozen=True, slots=True)
class Open:
    channel: int
    host_id: str
    offer_id: str = ""

    def encode(self) -> bytes:
        return (
            _TYPE_U32.pack(FrameType.OPEN, _check_channel(self.channel))
            + _str8(self.host_id)
            + _ascii_id(self.offer_id, allow_empty=True)
        )


@dataclass(frozen=True, slots=True)
class Opened:
    channel: int

    def encode(self) -> bytes:
        return _TYPE_U32.pack(FrameType.OPENED, _check_channel(self.channel))


@dataclass(frozen=True, slots=True)
class Incoming:
    channel: int
    device_identity: bytes
    offer_id: str = ""

    def encode(self) -> bytes:
        _check_len("identity key", self.device_identity, KEY_LEN)
        return (
            _TYPE_U32.pack(FrameType.INCOMING, _check_channel(self.channel))
            + self.device_identity
            + _ascii_id(self.offer_id, allow_empty=True)
        )


@dataclass(frozen=True, slots=True)
class Data:
    channel: int
    payload: bytes = field(repr=False)

    def encode(self) -> bytes:
        return encode_data(self.channel, self.payload)


@dataclass(frozen=True, slots=True)
class Close:
    channel: int
    code: int = CloseCode.NORMAL
    reason: str = ""

    def encode(self) -> bytes:
        return _TYPE_U32_U16.pack(
            FrameType.CLOSE, _check_channel(self.channel), _check_u16(self.code)
        ) + _clip_text(self.reason)


@dataclass(frozen=True, slots=True)
class Watch:
    host_ids: tuple[str, ...]

    def encode(self) -> bytes:
        if len(self.host_ids) > MAX_WATCH:
            raise FrameError(f"a device can watch at most {MAX_WATCH} hosts")
        return _TYPE_U16.pack(FrameType.WATCH, len(self.host_ids)) + b"".join(_str8(h) for h in self.host_ids)


@dataclass(frozen=True, slots=True)
class Presence:
    host_id: str
    online: bool

    def encode(self) -> bytes:
        return bytes([FrameType.PRESENCE, 1 if self.online else 0]) + _ascii_id(self.host_id)


@dataclass(frozen=True, slots=True)
class Redirect:
    host_id: str
    url: str

    def encode(self) -> bytes:
        return bytes([FrameType.REDIRECT]) + _str8(self.host_id) + _clip_text(self.url)


@dataclass(frozen=True, slots=True)
class MailboxDeposit:
    req: int
    device_identity: bytes
    sealed: bytes = field(repr=False)

    def encode(self) -> bytes:
        _check_len("identity key", self.device_identity, KEY_LEN)
        return _TYPE_U32.pack(FrameType.MAILBOX_DEPOSIT, _check_channel(self.req)) + self.device_identity \
            + _check_sealed(self.sealed)


@dataclass(frozen=True, slots=True)
class MailboxTake:
    req: int

    def encode(self) -> bytes:
        return _TYPE_U32.pack(FrameType.MAILBOX_TAKE, _check_channel(self.req))


@dataclass(frozen=True, slots=True)
class MailboxAck:
    req: int
    items: tuple[int, ...]

    def encode(self) -> bytes:
        if len(self.items) > MAX_ACK:
            raise FrameError(f"a MAILBOX_ACK carries at most {MAX_ACK} items")
        return _TYPE_U32_U16.pack(FrameType.MAILBOX_ACK, _check_channel(self.req), len(self.items)) \
            + b"".join(_U64.pack(_check_u64(i)) for i in self.items)


@dataclass(frozen=True, slots=True)
class MailboxGet:
    req: int
    host_id: str

    def encode(self) -> bytes:
        return _TYPE_U32.pack(FrameType.MAILBOX_GET, _check_channel(self.req)) + _ascii_id(self.host_id)


@dataclass(frozen=True, slots=True)
class MailboxQueue:
    req: int
    host_id: str
    sealed: bytes = field(repr=False)

    def encode(self) -> bytes:
        if not self.sealed:
            raise FrameError("a queued item cannot be empty")
        return _TYPE_U32.pack(FrameType.MAILBOX_QUEUE, _check_channel(self.req)) + _str8(self.host_id) \
            + _check_sealed(self.sealed)


@dataclass(frozen=True, slots=True)
class MailboxSnapshot:
    req: int
    deposited_at_ms: int
    sealed: bytes = field(repr=False)

    def encode(self) -> bytes:
        return _TYPE_U32.pack(FrameType.MAILBOX_SNAPSHOT, _check_channel(self.req)) \
            + _U64.pack(_check_u64(self.deposited_at_ms)) + _check_sealed(self.sealed)


@dataclass(frozen=True, slots=True)
class MailboxItem:
    req: int
    item: int
    device_identity: bytes
    queued_at_ms: int
    sealed: bytes = field(repr=False)

    def encode(self) -> bytes:
        _check_len("identity key", self.device_identity, KEY_LEN)
        return (
            _TYPE_U32.pack(FrameType.MAILBOX_ITEM, _check_channel(self.req)) + _U64.pack(_check_u64(self.item))
            + self.device_identity + _U64.pack(_check_u64(self.queued_at_ms)) + _check_sealed(self.sealed)
        )


@dataclass(frozen=True, slots=True)
class MailboxOk:
    req: int
    value: int = 0

    def encode(self) -> bytes:
        return _TYPE_U32.pack(FrameType.MAILBOX_OK, _check_channel(self.req)) + _U64.pack(_check_u64(self.value))


@dataclass(frozen=True, slots=True)
class MailboxError:
    req: int
    code: int
    message: str

    def encode(self) -> bytes:
        return _TYPE_U32_U16.pack(FrameType.MAILBOX_ERROR, _check_channel(self.req), _check_u16(self.code)) \
            + _clip_text(self.message)


Frame = (
    Challenge
    | Hello
    | Auth
    | Welcome
    | Error
    | Allowlist
    | Offers
    | Open
    | Opened
    | Incoming
    | Data
    | Close
    | Watch
    | Presence
    | Redirect
    | MailboxDeposit
    | MailboxTake
    | MailboxAck
    | MailboxGet
    | MailboxQueue
    | MailboxSnapshot
    | MailboxItem
    | MailboxOk
    | MailboxError
)


# --- the hot path: channel data ------------------------------------------------------------------

DATA_HEADER_LEN = 5


def encode_data(channel: int, payload: bytes | bytearray | memoryview) -> bytes:
    """A DATA frame; the payload is copied exactly once (into the result)."""
    return _TYPE_U32.pack(FrameType.DATA, _check_channel(channel)) + payload


def data_channel(frame: bytes) -> int:
    """The channel id of a DATA frame, without touching its payload."""
    if len(frame) < DATA_HEADER_LEN or frame[0] != FrameType.DATA:
        raise FrameError("not a DATA frame")
    channel: int = _U32.unpack_from(frame, 1)[0]
    return channel


def rechannel_data(frame: bytes, channel: int) -> bytes:
    """``frame`` (a DATA frame) addressed to ``channel`` instead; the payload is copied once."""
    return _TYPE_U32.pack(FrameType.DATA, channel) + memoryview(frame)[DATA_HEADER_LEN:]


# --- decoding ------------------------------------------------------------------------------------


def decode_frame(data: bytes) -> Frame:
    """Parse one binary WebSocket message. Raises :class:`FrameError` on anything malformed."""
    if not data:
        raise FrameError("empty frame")
    r = _Reader(data)
    kind = r.u8()
    try:
        ftype = FrameType(kind)
    except ValueError:
        raise FrameError(f"unknown frame type 0x{kind:02x}") from None
    frame: Frame
    match ftype:
        case FrameType.DATA:
            return Data(r.u32(), r.rest())
        case FrameType.CHALLENGE:
            version = r.u16()
            frame = Challenge(nonce=r.take(NONCE_LEN), version=version)
        case FrameType.HELLO:
            version = r.u16()
            role_byte = r.u8()
            try:
                role = Role(role_byte)
            except ValueError:
                raise FrameError(f"unknown role {role_byte}") from None
            frame = Hello(role=role, identity_public=r.take(KEY_LEN), version=version)
        case FrameType.AUTH:
            signature = r.take(SIGNATURE_LEN)
            enrollment = r.rest()
            if len(enrollment) not in (0, ENROLL_PROOF_LEN):
                raise FrameError(f"an enrollment proof is {ENROLL_PROOF_LEN} bytes")
            frame = Auth(signature, enrollment)
        case FrameType.WELCOME:
            max_frame = r.u32()
            frame = Welcome(max_frame_bytes=max_frame, id=r.rest_id())
        case FrameType.ERROR:
            code = r.u16()
            frame = Error(code=code, message=r.rest_text())
        case FrameType.ALLOWLIST:
            flags = r.u8()
            if flags & ~3:
                raise FrameError("unknown ALLOWLIST flags")
            count = r.u16()
            if count > MAX_ALLOWLIST_CHUNK:
                raise FrameError(f"an ALLOWLIST frame carries at most {MAX_ALLOWLIST_CHUNK} keys")
            keys = tuple(r.take(KEY_LEN) for _ in range(count))
            frame = Allowlist(keys=keys, first=bool(flags & 1), last=bool(flags & 2))
        case FrameType.OFFERS:
            count = r.u8()
            if count > MAX_OFFERS:
                raise FrameError(f"at most {MAX_OFFERS} pairing offers can be open at once")
            frame = Offers(tuple(r.str8() for _ in range(count)))
        case FrameType.OPEN:
            channel = r.u32()
            host_id = r.str8()
            frame = Open(channel=channel, host_id=host_id, offer_id=r.rest_id(allow_empty=True))
        case FrameType.OPENED:
            frame = Opened(r.u32())
        case FrameType.INCOMING:
            channel = r.u32()
            key = r.take(KEY_LEN)
            frame = Incoming(channel=channel, device_identity=key, offer_id=r.rest_id(allow_empty=True))
        case FrameType.CLOSE:
            channel = r.u32()
            code = r.u16()
            frame = Close(channel=channel, code=code, reason=r.rest_text())
        case FrameType.WATCH:
            count = r.u16()
            if count > MAX_WATCH:
                raise FrameError(f"a device can watch at most {MAX_WATCH} hosts")
            frame = Watch(tuple(r.str8() for _ in range(count)))
        case FrameType.PRESENCE:
            online = r.u8()
            if online > 1:
                raise FrameError("PRESENCE online flag must be 0 or 1")
            frame = Presence(online=bool(online), host_id=r.rest_id())
        case FrameType.REDIRECT:
            frame = Redirect(r.str8(), r.rest_text())
        case FrameType.MAILBOX_DEPOSIT:
            req = r.u32()
            frame = MailboxDeposit(req, r.take(KEY_LEN), r.sealed())
        case FrameType.MAILBOX_TAKE:
            frame = MailboxTake(r.u32())
        case FrameType.MAILBOX_ACK:
            req = r.u32()
            count = r.u16()
            if count > MAX_ACK:
                raise FrameError(f"a MAILBOX_ACK carries at most {MAX_ACK} items")
            frame = MailboxAck(req, tuple(r.u64() for _ in range(count)))
        case FrameType.MAILBOX_GET:
            req = r.u32()
            frame = MailboxGet(req, r.rest_id())
        case FrameType.MAILBOX_QUEUE:
            req = r.u32()
            host_id = r.str8()
            sealed = r.sealed()
            if not sealed:
                raise FrameError("a queued item cannot be empty")
            frame = MailboxQueue(req, host_id, sealed)
        case FrameType.MAILBOX_SNAPSHOT:
            req = r.u32()
            at = r.u64()
            frame = MailboxSnapshot(req, at, r.sealed())
        case FrameType.MAILBOX_ITEM:
            req = r.u32()
            item = r.u64()
            key = r.take(KEY_LEN)
            at = r.u64()
            frame = MailboxItem(req, item, key, at, r.sealed())
        case FrameType.MAILBOX_OK:
            req = r.u32()
            frame = MailboxOk(req, r.u64())
        case FrameType.MAILBOX_ERROR:
            req = r.u32()
            code = r.u16()
            frame = MailboxError(req, code, r.rest_text())
    r.end()
    return frame


class _Reader:
    """A cursor over one frame; every short read is a FrameError."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise FrameError("frame too short")
        chunk = bytes(self.data[self.pos : end])
        self.pos = end
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        value: int = _U16.unpack(self.take(2))[0]
        return value

    def u32(self) -> int:
        value: int = _U32.unpack(self.take(4))[0]
        return value

    def u64(self) -> int:
        value: int = _U64.unpack(self.take(8))[0]
        return value

    def sealed(self) -> bytes:
        raw = self.rest()
        if len(raw) > MAX_SEALED:
            raise FrameError(f"a sealed blob is at most {MAX_SEALED} bytes")
        return raw

    def rest(self) -> bytes:
        chunk = bytes(self.data[self.pos :])
        self.pos = len(self.data)
        return chunk

    def rest_text(self) -> str:
        raw = self.rest()
        if len(raw) > MAX_TEXT_BYTES:
            raise FrameError(f"text longer than {MAX_TEXT_BYTES} bytes")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise FrameError("text is not valid UTF-8") from None

    def rest_id(self, *, allow_empty: bool = False) -> str:
        return _parse_id(self.rest(), allow_empty=allow_empty)

    def str8(self) -> str:
        return _parse_id(self.take(self.u8()))

    def end(self) -> None:
        if self.pos != len(self.data):
            raise FrameError("trailing bytes after frame")


def _parse_id(raw: bytes, *, allow_empty: bool = False) -> str:
    if not raw and not allow_empty:
        raise FrameError("empty id")
    if len(raw) > MAX_ID_LEN:
        raise FrameError(f"id longer than {MAX_ID_LEN} bytes")
    if any(b < 0x21 or b > 0x7E for b in raw):
        raise FrameError("ids must be printable ASCII")
    return raw.decode("ascii")


def is_valid_id(value: str, *, allow_empty: bool = False) -> bool:
    """True when ``value`` can travel as a host, device or offer id."""
    try:
        _ascii_id(value, allow_empty=allow_empty)
    except FrameError:
        return False
    return True


# --- encoding helpers ----------------------------------------------------------------------------


def _ascii_id(value: str, *, allow_empty: bool = False) -> bytes:
    try:
        raw = value.encode("ascii")
    except UnicodeEncodeError:
        raise FrameError("ids must be printable ASCII") from None
    return _parse_id(raw, allow_empty=allow_empty).encode("ascii")


def _str8(value: str) -> bytes:
    raw = _ascii_id(value)
    return bytes([len(raw)]) + raw


def _clip_text(text: str) -> bytes:
    """UTF-8 of ``text``, cut at a character boundary to MAX_TEXT_BYTES."""
    raw = text.encode("utf-8")
    if len(raw) <= MAX_TEXT_BYTES:
        return raw
    return raw[:MAX_TEXT_BYTES].decode("utf-8", errors="ignore").encode("utf-8")


def _check_len(what: str, value: bytes, n: int) -> None:
    if len(value) != n:
        raise FrameError(f"{what} must be {n} bytes, not {len(value)}")


def _check_channel(channel: int) -> int:
    if not 0 <= channel <= MAX_CHANNEL:
        raise FrameError(f"channel id {channel} does not fit in 32 bits")
    return channel


def _check_u64(value: int) -> int:
    if not 0 <= value <= 0xFFFF_FFFF_FFFF_FFFF:
        raise FrameError(f"{value} does not fit in 64 bits")
    return value


def _check_sealed(sealed: bytes) -> bytes:
    if len(sealed) > MAX_SEALED:
        raise FrameError(f"a sealed blob is at most {MAX_SEALED} bytes, not {len(sealed)}")
    return sealed


def _check_u16(value: int) -> int:
    if not 0 <= value <= 0xFFFF:
        raise FrameError(f"{value} does not fit in 16 bits")
    return value
