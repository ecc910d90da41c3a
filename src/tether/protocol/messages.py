"""The application protocol: requests, responses and notifications (ARCHITECTURE §4.4).

These JSON messages ride inside the end-to-end channel (or the host's local unix socket).
Each message is one JSON object whose ``t`` field names its kind::

    {"t": "req",  "v": 1, "id": 7, "method": "sessions.start", "params": {...}}
    {"t": "res",  "id": 7, "result": {...}}
    {"t": "res",  "id": 7, "error": {"code": "forbidden", "message": "...", "hint": "..."}}
    {"t": "note", "method": "events", "params": {...}}

``decode`` is the only parser; anything malformed raises :class:`ProtocolError`.
Method parameters are typed too: :func:`decode_params` turns a request's ``params`` into
the method's struct with a message naming the bad field.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from tether.errors import TetherError

PROTOCOL_VERSION = 1
# Largest application message accepted (a 1 MiB prompt plus JSON overhead fits); the end-to-end
# channel reassembles no more than this either.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024


class ProtocolError(TetherError):
    """A malformed application message. ``request_id`` is set when the message was a request
    whose id could be read, so the error can be answered to the right caller."""

    code = "protocol"
    request_id = 0


class ErrorBody(msgspec.Struct, forbid_unknown_fields=False):
    code: str
    message: str
    hint: str | None = None


class Request(msgspec.Struct, tag_field="t", tag="req", forbid_unknown_fields=False):
    id: int
    method: str
    params: dict[str, Any] = msgspec.field(default_factory=dict)
    v: int = PROTOCOL_VERSION


class Response(msgspec.Struct, tag_field="t", tag="res", forbid_unknown_fields=False, omit_defaults=True):
    id: int
    result: Any = None
    error: ErrorBody | None = None


class Notification(msgspec.Struct, tag_field="t", tag="note", forbid_unknown_fields=False):
    method: str
    params: dict[str, Any] = msgspec.field(default_factory=dict)


Message = Request | Response | Notification

_decoder = msgspec.json.Decoder(Message)
_encoder = msgspec.json.Encoder()


def encode(message: Message) -> bytes:
    return _encoder.encode(message)


def decode(data: bytes) -> Message:
    if len(data) > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"message of {len(data)} bytes is larger than {MAX_MESSAGE_BYTES}")
    try:
        message: Message = _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"malformed message: {exc}") from None
    if isinstance(message, Request) and message.v != PROTOCOL_VERSION:
        error = ProtocolError(
            f"protocol version {message.v} is not supported (this side speaks {PROTOCOL_VERSION})",
            hint="upgrade tether on both sides to the same version",
        )
        error.request_id = message.id
        raise error
    return message


P = TypeVar("P", bound=msgspec.Struct)


def decode_params(params: dict[str, Any], struct: type[P]) -> P:
    """Validate a request's params against the method's struct."""
    try:
        return msgspec.convert(params, struct, strict=True)
    except msgspec.ValidationError as exc:
        raise ProtocolError(f"invalid parameters: {exc}", code="invalid_params") from None


def to_builtins(value: Any) -> Any:
    return msgspec.to_builtins(value)
