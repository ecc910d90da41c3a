"""Pairing, host side (ARCHITECTURE §5): claim a one-time offer over an IKpsk2 channel.

The device runs the IKpsk2 handshake with the offer's secret as the psk, then — never in the
replayable first handshake message — sends one ``pair.complete`` request with its identity key
and name. The host consumes the offer (single use, atomically), records the device with the
offer's grant and the static key the handshake proved, and answers with the host's details.
The channel then closes: from now on the device connects with IK only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Protocol

from tether.crypto.encoding import b64u_decode
from tether.crypto.keys import Identity, derive_id
from tether.errors import TetherError
from tether.host.store import Store
from tether.protocol import schemas
from tether.protocol.e2e import HANDSHAKE_TIMEOUT, E2ETransport
from tether.protocol.frames import CloseCode
from tether.protocol.messages import ErrorBody, ProtocolError, Request, Response, decode, decode_params, encode
from tether.protocol.scopes import scope_list
from tether.relay.link import Channel


class PairingHost(Protocol):
    """What pairing needs of the host daemon."""

    name: str
    store: Store

    @property
    def identity(self) -> Identity: ...

    async def publish(self) -> None:
        """Tell the relay the new allowlist (the device just paired may connect)."""
        ...

log = logging.getLogger("tether.host.pairing")

OFFER_GONE = "this pairing link is no longer valid: it was already used or it expired"
OFFER_GONE_HINT = "run `tether pair` on the host for a new link"


class PairingError(TetherError):
    code = "pairing"


async def claim_offer(host: PairingHost, channel: Channel, *, timeout: float = HANDSHAKE_TIMEOUT) -> None:
    """Serve one pairing attempt on ``channel``; always closes it, at the latest ``timeout``
    seconds after the handshake began if the device has not finished both steps by then."""
    assert channel.offer_id is not None
    offer = await host.store.get_offer(channel.offer_id)
    if offer is None or offer.consumed or offer.expires_at <= time.time():
        await channel.close(code=CloseCode.NO_SUCH_OFFER, reason=f"{OFFER_GONE}; {OFFER_GONE_HINT}")
        return
    try:
        async with asyncio.timeout(timeout):
            transport = await E2ETransport.accept(channel, static=host.identity.static, psk=offer.secret)
            request = decode(await transport.recv())
        if not isinstance(request, Request) or request.method != "pair.complete":
            raise ProtocolError("expected a pair.complete request")
        try:
            result = await _complete(host, transport, request, offer.id)
            response = Response(id=request.id, result=result)
        except TetherError as exc:
            response = Response(id=request.id, error=ErrorBody(code=exc.code, message=exc.message, hint=exc.hint))
        await transport.send(encode(response))
    except TetherError as exc:
        log.info("pairing attempt on channel %s failed: %s", channel.id, exc.message)
    except TimeoutError:
        log.info("pairing attempt on channel %s failed: not finished within %g s", channel.id, timeout)
    finally:
        with contextlib.suppress(TetherError):
            await channel.close(reason="pairing finished")


async def _complete(
    host: PairingHost, transport: E2ETransport, request: Request, offer_id: str
) -> dict[str, object]:
    params = decode_params(request.params, schemas.PairComplete)
    try:
        identity_public = b64u_decode(params.identity_public)
        device_id = derive_id(identity_public)
    except ValueError:
        raise PairingError("the device's identity key is malformed") from None
    if transport.channel.peer_identity not in (None, identity_public):
        raise PairingError("the device's identity key does not match the one it showed the relay")
    assert transport.remote_static is not None
    device = await host.store.claim_offer(
        offer_id,
        device_id=device_id,
        name=params.name,
        identity_public=identity_public,
        static_public=transport.remote_static,
    )
    if device is None:
        raise PairingError(OFFER_GONE, hint=OFFER_GONE_HINT)
    log.info("paired device %r (%s) with scopes %s", params.name, device_id, ",".join(device.scopes))
    await host.publish()
    return {
        "host_id": host.identity.id,
        "host_name": host.name,
        "device_id": device_id,
        "scopes": scope_list(device.scopes),
        "workspace": device.workspace,
    }
