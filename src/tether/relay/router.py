"""Who may reach whom through the relay, and what each side is sent: the routing core, without
sockets (sans-I/O, ARCHITECTURE §4.2).

The asyncio shell (``server.py``) tells the router what happened — a connection authenticated
(:meth:`Router.connect`), a frame read from it (:meth:`Router.receive`), a connection gone
(:meth:`Router.disconnect`) — and then carries out what the router put in its outbox: bytes to
queue for a connection (:class:`Send`), connections to close (:class:`Fail`), requests for the
mailbox (:class:`ToMailbox`) and allowlists to keep for while a host is away
(:class:`AllowlistPublished`). DATA frames, the hot path, do not go through the outbox:
:meth:`Router.forward` returns where one goes.

Each connection is a :class:`Peer` (hosts a :class:`HostPeer`) that carries the shell's own
object for it (``link``); the router never looks inside it. A peer the router fails is
disconnected at once, so the router's state never points at a connection that is going away,
whenever the shell gets round to closing its socket.

What the router enforces: a host's allowlist and pairing offers (a device neither on the list nor
holding a live offer learns nothing of the host: the answer to its OPEN is an offline host's),
channel limits per connection, per device key and per offer, OPENs per minute per connection,
connections per device key, and which frames each role may send.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Generic, TypeVar

from tether.protocol.frames import (
    Allowlist,
    Close,
    CloseCode,
    Incoming,
    MailboxAck,
    MailboxDeposit,
    MailboxGet,
    MailboxQueue,
    MailboxTake,
    Offers,
    Open,
    Opened,
    Presence,
    Role,
    Watch,
    close_message,
    data_channel,
    rechannel_data,
)
from tether.relay.limits import RelayLimits, TokenBucket
from tether.relay.mailbox import DeviceRequest, HostRequest

L = TypeVar("L")
_K = TypeVar("_K")

log = logging.getLogger("tether.relay")

# Host-side channel ids freed recently are not handed out again, so a frame the host sent on a
# channel the relay just closed can never land on a newer channel.
RECENTLY_CLOSED = 4096
# The one answer to an OPEN the relay will not route, whatever the reason, so that a device the
# host does not know cannot tell whether it is online (issue [6] item 12).
UNREACHABLE = (
    "this device is not authorised on that host (unknown or revoked), or the host is offline: pair "
    "again with `tether pair` on the host, or start it with `tether host` (or `tether up`)"
)
UNREACHABLE_OFFER = (
    "this pairing link is no longer valid (already used or expired), or the host is offline: run "
    "`tether pair` on the host for a new link, or start the host"
)

_NO_WATCH: frozenset[str] = frozenset()


class Peer(Generic[L]):
    """One authenticated connection as the router sees it (a device; hosts are :class:`HostPeer`).

    Idle connections are the common case (ARCHITECTURE §9): ``__slots__``, and the OPEN bucket is
    made at the first OPEN.
    """

    __slots__ = ("channels", "gone", "id", "key", "link", "opens", "remote", "role", "watching")

    def __init__(self, link: L, role: Role, key: bytes, id: str) -> None:
        self.link = link
        self.role = role
        self.key = key
        self.id = id
        self.channels: dict[int, Route[L]] = {}
        self.opens: TokenBucket | None = None
        self.watching: AbstractSet[str] = _NO_WATCH
        self.gone = False
        # a device's channels to hosts on other relay nodes: channel → node ("" until placed)
        self.remote: dict[int, str] | None = None

    @property
    def label(self) -> str:
        return f"{self.role.name.lower()} {self.id}"


class ProxyPeer(Peer[L]):
    """A device connected to another relay node, as this node sees it: its connection was
    admitted and counted there, its frames come through the cluster's bus."""

    __slots__ = ()


class HostPeer(Peer[L]):
    """A host's connection: also its allowlist, pairing offers and channel id allocation."""

    __slots__ = (
        "allowlist",
        "next_channel",
        "offer_channels",
        "offers",
        "pending_allowlist",
        "recently_closed",
        "recently_closed_set",
    )

    def __init__(self, link: L, role: Role, key: bytes, id: str) -> None:
        super().__init__(link, role, key, id)
        self.allowlist: set[bytes] = set()
        self.pending_allowlist: set[bytes] | None = None
        self.offers: set[str] = set()
        # channels open per offer id, by devices not on the allowlist (max_channels_per_offer)
        self.offer_channels: dict[str, int] = {}
        self.next_channel = 1
        self.recently_closed: deque[int] = deque()
        self.recently_closed_set: set[int] = set()

    def allocate_channel(self, preferred: int) -> int:
        # Reusing the device's own id lets the relay forward DATA frames without rewriting them.
        if self._free(preferred):
            return preferred
        while not self._free(self.next_channel):
            self.next_channel = (self.next_channel + 1) & 0xFFFF_FFFF
        chosen = self.next_channel
        self.next_channel = (self.next_channel + 1) & 0xFFFF_FFFF
        return chosen

    def _free(self, channel: int) -> bool:
        return channel not in self.channels and channel not in self.recently_closed_set

    def forget_channel(self, channel: int) -> None:
        self.recently_closed.append(channel)
        self.recently_closed_set.add(channel)
        if len(self.recently_closed) > RECENTLY_CLOSED:
            self.recently_closed_set.discard(self.recently_closed.popleft())


@dataclass(eq=False, slots=True)
class Route(Generic[L]):
    """One channel: a device's channel id and the host-side channel id it maps to."""

    device: Peer[L]
    device_channel: int
    host: HostPeer[L]
    host_channel: int
    offer_id: str
    # admitted through a pairing offer, not the allowlist (counted per offer)
    via_offer: bool = False
    closed: bool = False

    def other(self, peer: Peer[L]) -> tuple[Peer[L], int]:
        if peer is self.device:
            return self.host, self.host_channel
        return self.device, self.device_channel


@dataclass(frozen=True, slots=True)
class Send(Generic[L]):
    """Queue ``frame`` for ``peer``; ``channel`` is the receiver's channel a DATA frame counts
    against, -1 for control frames."""

    peer: Peer[L]
    frame: bytes
    channel: int = -1


@dataclass(frozen=True, slots=True)
class Fail(Generic[L]):
    """Close ``peer``'s connection with ERROR(code, message); the router has already let it go."""

    peer: Peer[L]
    code: CloseCode
    message: str


@dataclass(frozen=True, slots=True)
class ToMailbox(Generic[L]):
    """A mailbox request, for the shell's mailbox to answer (the role may send it)."""

    peer: Peer[L]
    frame: HostRequest | DeviceRequest


@dataclass(frozen=True, slots=True)
class AllowlistPublished(Generic[L]):
    """A host published a whole allowlist (kept by the mailbox for while the host is away)."""

    host: HostPeer[L]
    keys: frozenset[bytes]


@dataclass(frozen=True, slots=True)
class OpenElsewhere(Generic[L]):
    """A device opens a channel to a host that is not connected here: find its node and place the
    channel there (:meth:`Router.placed`), or refuse it (:meth:`Router.unplaced`)."""

    device: Peer[L]
    frame: Open


@dataclass(frozen=True, slots=True)
class ToNode(Generic[L]):
    """A frame a device sent on its channel to a host on ``node`` (a CLOSE), for that node."""

    device: Peer[L]
    node: str
    frame: bytes


@dataclass(frozen=True, slots=True)
class LeftNodes(Generic[L]):
    """A device whose connection ended held channels to hosts on these nodes."""

    device: Peer[L]
    nodes: frozenset[str]


@dataclass(frozen=True, slots=True)
class WatchElsewhere(Generic[L]):
    """A device watches hosts that are not connected here: whether each is online for it, and on
    which node, is the cluster's to find out and say (PRESENCE)."""

    device: Peer[L]
    host_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Reconsider:
    """A host this node's devices watch left this node: online elsewhere, or offline?"""

    host_id: str


Action = (
    Send[L] | Fail[L] | ToMailbox[L] | AllowlistPublished[L] | OpenElsewhere[L] | ToNode[L] | LeftNodes[L]
    | WatchElsewhere[L] | Reconsider
)


class Router(Generic[L]):
    """The relay's routing state and rules; see the module's docstring."""

    def __init__(self, limits: RelayLimits, clock: Callable[[], float] = time.monotonic, *,
                 elsewhere: bool = False) -> None:
        self.limits = limits
        self.clock = clock
        #: One node of a cluster: a host not connected here may be connected to another node.
        self.elsewhere = elsewhere
        self.hosts: dict[str, HostPeer[L]] = {}
        self.peers: set[Peer[L]] = set()
        self.watchers: dict[str, set[Peer[L]]] = {}
        # authenticated connections per device identity key (max_connections_per_device)
        self.device_connections: dict[bytes, int] = {}
        # channels open per device identity key, over all its connections (max_channels_per_device)
        self.device_channels: dict[bytes, int] = {}
        self.outbox: list[Action[L]] = []

    def take(self) -> list[Action[L]]:
        """What the shell has to do, in order; the outbox starts empty again."""
        actions, self.outbox = self.outbox, []
        return actions

    # --- admission ---

    def admit_device(self, key: bytes) -> str | None:
        """Count one more connection of a device key that proved itself; the refusal if it holds
        its limit already. Counted only once the key is proven: nobody can lock a device out by
        claiming its key. Undo with :meth:`release_device` if the connection never registers."""
        held = self.device_connections.get(key, 0)
        cap = self.limits.max_connections_per_device
        if cap and held >= cap:
            return (
                f"this device already has {held} connections to the relay, its limit; "
                "close some (is a program reconnecting in a loop?)"
            )
        self.device_connections[key] = held + 1
        return None

    def release_device(self, key: bytes) -> None:
        _uncount(self.device_connections, key)

    def connect(self, link: L, role: Role, key: bytes, id: str, *, proxy: bool = False) -> Peer[L]:
        """An authenticated connection (a device's already counted by :meth:`admit_device`), or
        with ``proxy`` a device connected to another node (counted there)."""
        if role is not Role.HOST:
            peer = ProxyPeer(link, role, key, id) if proxy else Peer(link, role, key, id)
            self.peers.add(peer)
            return peer
        host = HostPeer(link, role, key, id)
        self.peers.add(host)
        old = self.hosts.get(id)
        self.hosts[id] = host
        if old is not None:
            # Same identity key, proven again: the new connection inherits the published state so
            # devices see no gap in admission.
            host.allowlist = old.allowlist
            host.offers = old.offers
            self.fail(
                old, CloseCode.REPLACED, "another connection for this host id took over; is the host running twice?"
            )
        else:
            self._announce(host, online=True)
        return host

    def disconnect(self, peer: Peer[L]) -> None:
        """The connection is gone (or going): close its channels, forget it. Idempotent."""
        if peer.gone:
            return
        peer.gone = True
        self.peers.discard(peer)
        gone = "the host disconnected" if peer.role is Role.HOST else "the device disconnected"
        for route in list(peer.channels.values()):
            self.close_route(route, CloseCode.PEER_GONE, gone, initiator=peer)
        if isinstance(peer, HostPeer):
            if self.hosts.get(peer.id) is peer:
                del self.hosts[peer.id]
                if self.elsewhere and self.watchers.get(peer.id):
                    # it may be connecting to another node this very moment: the cluster says
                    self.outbox.append(Reconsider(peer.id))
                else:
                    self._announce(peer, online=False)
            return
        if not isinstance(peer, ProxyPeer):
            self.release_device(peer.key)
        self._unwatch(peer, peer.watching)
        peer.watching = _NO_WATCH
        remote, peer.remote = peer.remote, None
        if remote:
            for _ in remote:
                _uncount(self.device_channels, peer.key)
            nodes = frozenset(node for node in remote.values() if node)
            if nodes:
                self.outbox.append(LeftNodes(peer, nodes))

    def fail(self, peer: Peer[L], code: CloseCode, message: str) -> None:
        """Let ``peer`` go now and have the shell close its connection with ERROR(code, message)."""
        if peer.gone:
            return
        self.disconnect(peer)
        self.outbox.append(Fail(peer, code, message))

    # --- frames ---

    def forward(self, peer: Peer[L], message: bytes) -> tuple[Peer[L], bytes, int] | None:
        """Where a DATA frame from ``peer`` goes: (receiver, the frame on its channel id, that
        channel), or None when its channel was closed while the frame was in flight."""
        channel = data_channel(message)
        route = peer.channels.get(channel)
        if route is None:
            return None
        if peer is route.device:
            target: Peer[L] = route.host
            target_channel = route.host_channel
        else:
            target, target_channel = route.device, route.device_channel
        frame = message if target_channel == channel else rechannel_data(message, target_channel)
        return target, frame, target_channel

    def receive(self, peer: Peer[L], frame: object) -> None:
        """A decoded frame other than DATA from an authenticated connection."""
        if peer.gone:
            return
        host = peer if isinstance(peer, HostPeer) else None
        match frame:
            case Close(channel=channel, code=code, reason=reason):
                route = peer.channels.get(channel)
                if route is not None:
                    self.close_route(route, code, reason, initiator=peer)
                elif peer.remote and channel in peer.remote:
                    node = peer.remote.pop(channel)
                    _uncount(self.device_channels, peer.key)
                    if node:
                        self.outbox.append(ToNode(peer, node, frame.encode()))
            case Allowlist() if host is not None:
                self._on_allowlist(host, frame)
            case Offers(offer_ids=offer_ids) if host is not None:
                if len(offer_ids) > self.limits.max_offers:
                    self.fail(
                        peer,
                        CloseCode.PROTOCOL_ERROR,
                        f"at most {self.limits.max_offers} pairing offers can be open at once",
                    )
                    return
                host.offers = set(offer_ids)
            case Open() if host is None:
                self._on_open(peer, frame)
            case Watch(host_ids=host_ids) if host is None:
                self._on_watch(peer, host_ids)
            case MailboxDeposit() | MailboxTake() | MailboxAck() if host is not None:
                self.outbox.append(ToMailbox(peer, frame))
            case MailboxGet() | MailboxQueue() if host is None:
                self.outbox.append(ToMailbox(peer, frame))
            case _:
                name = type(frame).__name__.upper()
                self.fail(
                    peer,
                    CloseCode.PROTOCOL_ERROR,
                    f"a {peer.role.name.lower()} may not send {name} frames after authentication",
                )

    def _send(self, peer: Peer[L], frame: bytes) -> None:
        self.outbox.append(Send(peer, frame))

    def _on_allowlist(self, host: HostPeer[L], frame: Allowlist) -> None:
        if frame.first:
            host.pending_allowlist = set()
        pending = host.pending_allowlist
        if pending is None:
            self.fail(host, CloseCode.PROTOCOL_ERROR, "ALLOWLIST continuation without a first chunk")
            return
        pending.update(frame.keys)
        if len(pending) > self.limits.max_allowlist:
            self.fail(
                host,
                CloseCode.PROTOCOL_ERROR,
                f"the allowlist has more than {self.limits.max_allowlist} keys, this relay's limit",
            )
            return
        if not frame.last:
            return
        host.pending_allowlist = None
        old = host.allowlist
        host.allowlist = pending
        self.outbox.append(AllowlistPublished(host, frozenset(pending)))
        revoked = old - pending
        if revoked:
            for route in list(host.channels.values()):
                if route.device.key in revoked:
                    self.close_route(route, CloseCode.REVOKED, close_message(CloseCode.REVOKED))
        # Presence is visible only to allowlisted devices, so it changes with the allowlist.
        for watcher in list(self.watchers.get(host.id, ())):
            was, now = watcher.key in old, watcher.key in pending
            if was != now:
                self._send(watcher, Presence(host.id, online=now).encode())

    def _on_open(self, device: Peer[L], frame: Open) -> None:
        channel = frame.channel
        remote = device.remote
        if channel in device.channels or (remote is not None and channel in remote):
            self.fail(device, CloseCode.PROTOCOL_ERROR, f"channel {channel} is already open on this connection")
            return

        def refuse(code: CloseCode, reason: str | None = None) -> None:
            self._send(device, Close(channel, code, reason or close_message(code)).encode())

        lim = self.limits
        if device.opens is None:
            per_minute = lim.opens_per_minute
            device.opens = TokenBucket(per_minute / 60.0, per_minute, self.clock)
        if not device.opens.try_take():
            refuse(CloseCode.RATE_LIMITED)
            return
        if len(device.channels) + len(remote or ()) >= lim.max_channels_per_connection:
            refuse(CloseCode.TOO_MANY_CHANNELS)
            return
        held = self.device_channels.get(device.key, 0)
        if lim.max_channels_per_device and held >= lim.max_channels_per_device:
            refuse(
                CloseCode.TOO_MANY_CHANNELS,
                f"this device has {held} channels open through the relay, its limit; close some and retry",
            )
            return
        host = self.hosts.get(frame.host_id)
        if host is None and self.elsewhere and not isinstance(device, ProxyPeer):
            # Perhaps on another node; that node's router applies the host's rules. A proxy's
            # OPEN is never sent on: the host left the node its device was told of.
            if remote is None:
                remote = device.remote = {}
            remote[channel] = ""
            self.device_channels[device.key] = held + 1
            self.outbox.append(OpenElsewhere(device, frame))
            return
        via_offer = host is not None and device.key not in host.allowlist
        # A device the host does not know learns nothing about it: whether it is connected, not
        # allowed, or the offer is gone, the answer is the one an offline host gets.
        if host is None or (via_offer and (not frame.offer_id or frame.offer_id not in host.offers)):
            refuse(CloseCode.HOST_OFFLINE, UNREACHABLE_OFFER if frame.offer_id else UNREACHABLE)
            return
        if via_offer and host.offer_channels.get(frame.offer_id, 0) >= lim.max_channels_per_offer:
            refuse(CloseCode.TOO_MANY_CHANNELS, "this pairing link already has channels open; close them and retry")
            return
        if len(host.channels) >= lim.max_channels_per_connection:
            refuse(CloseCode.TOO_MANY_CHANNELS, "the host has too many open channels; retry later")
            return
        host_channel = host.allocate_channel(channel)
        route = Route(device, channel, host, host_channel, frame.offer_id, via_offer)
        device.channels[channel] = route
        host.channels[host_channel] = route
        self.device_channels[device.key] = held + 1
        if via_offer:
            host.offer_channels[frame.offer_id] = host.offer_channels.get(frame.offer_id, 0) + 1
        log.debug("channel %s ↔ %s opened", device.label, host.label)
        self._send(device, Opened(channel).encode())
        self._send(host, Incoming(host_channel, device.key, frame.offer_id).encode())

    def _on_watch(self, device: Peer[L], host_ids: tuple[str, ...]) -> None:
        if len(host_ids) > self.limits.max_watch:
            self.fail(device, CloseCode.PROTOCOL_ERROR, f"a device can watch at most {self.limits.max_watch} hosts")
            return
        wanted = set(host_ids)
        self._unwatch(device, device.watching - wanted)
        device.watching = wanted
        elsewhere: list[str] = []
        for host_id in host_ids:
            self.watchers.setdefault(host_id, set()).add(device)
            host = self.hosts.get(host_id)
            if host is None and self.elsewhere and not isinstance(device, ProxyPeer):
                elsewhere.append(host_id)  # perhaps on another node: the cluster answers
                continue
            online = host is not None and device.key in host.allowlist
            self._send(device, Presence(host_id, online=online).encode())
        if elsewhere:
            self.outbox.append(WatchElsewhere(device, tuple(elsewhere)))

    def _unwatch(self, device: Peer[L], host_ids: AbstractSet[str]) -> None:
        for host_id in host_ids:
            watchers = self.watchers.get(host_id)
            if watchers is not None:
                watchers.discard(device)
                if not watchers:
                    del self.watchers[host_id]

    def census(self) -> dict[str, int]:
        """What an operator watches (``/metrics``): connections by role, and channels by where
        their ends are (both here; device here and host on another node; the reverse)."""
        hosts = len(self.hosts)
        devices = proxies = local = to_node = from_node = 0
        for peer in self.peers:
            if isinstance(peer, ProxyPeer):
                proxies += 1
                from_node += len(peer.channels)
            elif not isinstance(peer, HostPeer):
                devices += 1
                local += len(peer.channels)
                to_node += len(peer.remote or ())
        return {"hosts": hosts, "devices": devices, "remote_devices": proxies, "channels_local": local,
                "channels_to_other_nodes": to_node, "channels_from_other_nodes": from_node}

    # --- channels to hosts on other nodes (the device's side) ---

    def placed(self, device: Peer[L], channel: int, node: str) -> bool:
        """The host of an :class:`OpenElsewhere` is on ``node``: False when the channel is no
        longer waiting for that (the device closed it, or is gone), so nothing is to be sent."""
        remote = device.remote
        if device.gone or remote is None or remote.get(channel) != "":
            return False
        remote[channel] = node
        return True

    def unplaced(self, device: Peer[L], channel: int, code: CloseCode, reason: str) -> None:
        """The channel of an :class:`OpenElsewhere` could not be placed, or its node is gone:
        the device hears CLOSE(code, reason)."""
        if self.closed_elsewhere(device, channel):
            self._send(device, Close(channel, code, reason).encode())

    def closed_elsewhere(self, device: Peer[L], channel: int) -> bool:
        """The node holding the device's channel closed it (its CLOSE goes to the device as the
        node sent it); False if the channel was not open."""
        remote = device.remote
        if device.gone or remote is None or channel not in remote:
            return False
        del remote[channel]
        _uncount(self.device_channels, device.key)
        return True

    def node_lost(self, node: str, code: CloseCode, reason: str) -> None:
        """``node`` is gone or cannot be reached: every device's channel to a host there closes.
        (Devices connected there are proxies here, which the cluster disconnects.)"""
        for peer in list(self.peers):
            if peer.remote:
                for channel, where in list(peer.remote.items()):
                    if where == node:
                        self.unplaced(peer, channel, code, reason)

    # --- channels and presence ---

    def close_route(self, route: Route[L], code: int, reason: str, *, initiator: Peer[L] | None = None) -> None:
        """End a channel; every side but ``initiator`` gets CLOSE(code, reason) at once."""
        if route.closed:
            return
        route.closed = True
        if route.device.channels.get(route.device_channel) is route:
            del route.device.channels[route.device_channel]
        if route.host.channels.get(route.host_channel) is route:
            del route.host.channels[route.host_channel]
            route.host.forget_channel(route.host_channel)
        _uncount(self.device_channels, route.device.key)
        if route.via_offer:
            _uncount(route.host.offer_channels, route.offer_id)
        for side, channel in ((route.device, route.device_channel), (route.host, route.host_channel)):
            if side is not initiator:
                self._send(side, Close(channel, code, reason).encode())

    def _announce(self, host: HostPeer[L], *, online: bool) -> None:
        for watcher in list(self.watchers.get(host.id, ())):
            if watcher.key in host.allowlist:
                self._send(watcher, Presence(host.id, online=online).encode())


def _uncount(counts: dict[_K, int], key: _K) -> None:
    left = counts.get(key, 0) - 1
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)
