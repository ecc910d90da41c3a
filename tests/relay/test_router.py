"""The relay's routing core without sockets: its rules one by one, then random event sequences
(hypothesis) against the invariants that keep hosts reachable only by whom they allow."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from tether.protocol.frames import (
    Allowlist,
    Close,
    CloseCode,
    Incoming,
    MailboxGet,
    MailboxTake,
    Offers,
    Open,
    Opened,
    Presence,
    Role,
    Watch,
    decode_frame,
    encode_data,
)
from tether.relay.limits import RelayLimits
from tether.relay.router import (
    UNREACHABLE,
    AllowlistPublished,
    Fail,
    HostPeer,
    LeftNodes,
    OpenElsewhere,
    Peer,
    ProxyPeer,
    Router,
    Send,
    ToMailbox,
)

HOSTS = ["host-a", "host-b"]
NODES = ["node-2", "node-3"]
KEYS = [bytes([n]) * 32 for n in range(1, 4)]
OFFERS = ["offer-1", "offer-2"]


class Clock:
    """A clock the test moves, so that OPEN rate limits are deterministic."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(**limits: object) -> Router[str]:
    return Router(RelayLimits(**limits), Clock())  # type: ignore[arg-type]


def sent(actions: list[object], peer: Peer[str]) -> list[object]:
    return [decode_frame(a.frame) for a in actions if isinstance(a, Send) and a.peer is peer]


def test_a_device_on_the_allowlist_opens_a_channel_and_data_flows_both_ways() -> None:
    router = make()
    host = router.connect("h", Role.HOST, b"H" * 32, "host-a")
    assert router.admit_device(KEYS[0]) is None
    device = router.connect("d", Role.DEVICE, KEYS[0], "dev")
    router.receive(host, Allowlist((KEYS[0],)))
    assert router.take() == [AllowlistPublished(host, frozenset({KEYS[0]}))]  # type: ignore[arg-type]
    router.receive(device, Open(7, "host-a"))
    actions = router.take()
    assert sent(actions, device) == [Opened(7)]
    assert sent(actions, host) == [Incoming(7, KEYS[0])]
    assert router.forward(device, encode_data(7, b"up")) == (host, encode_data(7, b"up"), 7)
    assert router.forward(host, encode_data(7, b"down")) == (device, encode_data(7, b"down"), 7)
    assert router.forward(device, encode_data(8, b"nowhere")) is None


def test_a_stranger_and_an_offline_host_get_the_same_answer() -> None:
    router = make()
    host = router.connect("h", Role.HOST, b"H" * 32, "host-a")
    router.receive(host, Offers(("offer-1",)))
    stranger = router.connect("s", Role.DEVICE, KEYS[1], "s")
    router.receive(stranger, Open(1, "host-a"))
    router.receive(stranger, Open(2, "host-b"))
    [first, second] = sent(router.take(), stranger)
    assert first == Close(1, CloseCode.HOST_OFFLINE, UNREACHABLE)
    assert second == Close(2, CloseCode.HOST_OFFLINE, UNREACHABLE)
    router.receive(stranger, Open(3, "host-a", "offer-1"))  # a live pairing offer admits it
    assert sent(router.take(), stranger) == [Opened(3)]
    assert not host.allowlist


def test_revoking_a_key_closes_its_channels_and_its_presence() -> None:
    router = make()
    host = router.connect("h", Role.HOST, b"H" * 32, "host-a")
    router.receive(host, Allowlist((KEYS[0], KEYS[1])))
    device = router.connect("d", Role.DEVICE, KEYS[0], "d")
    router.receive(device, Watch(("host-a",)))
    router.receive(device, Open(5, "host-a"))
    router.take()
    router.receive(host, Allowlist((KEYS[1],)))
    actions = router.take()
    assert [f.code for f in sent(actions, device) if isinstance(f, Close)] == [CloseCode.REVOKED]
    assert Presence("host-a", online=False) in sent(actions, device)
    assert not device.channels and not host.channels
    assert router.device_channels == {}


def test_a_host_connecting_again_inherits_its_allowlist_and_the_old_connection_is_failed() -> None:
    router = make()
    old = router.connect("old", Role.HOST, b"H" * 32, "host-a")
    router.receive(old, Allowlist((KEYS[0],)))
    router.take()
    new = router.connect("new", Role.HOST, b"H" * 32, "host-a")
    assert isinstance(new, HostPeer) and new.allowlist == {KEYS[0]}
    [fail] = router.take()
    assert isinstance(fail, Fail) and fail.peer is old and fail.code == CloseCode.REPLACED
    assert router.hosts["host-a"] is new and old.gone


def test_frames_a_role_may_not_send_fail_the_connection() -> None:
    router = make()
    host = router.connect("h", Role.HOST, b"H" * 32, "host-a")
    device = router.connect("d", Role.DEVICE, KEYS[0], "d")
    router.receive(device, Allowlist((KEYS[0],)))
    router.receive(host, Open(1, "host-a"))
    fails = [a for a in router.take() if isinstance(a, Fail)]
    assert [(f.peer, f.code) for f in fails] == [(device, CloseCode.PROTOCOL_ERROR), (host, CloseCode.PROTOCOL_ERROR)]
    assert "may not send ALLOWLIST" in fails[0].message


def test_mailbox_requests_go_to_the_mailbox_by_role_only() -> None:
    router = make()
    host = router.connect("h", Role.HOST, b"H" * 32, "host-a")
    device = router.connect("d", Role.DEVICE, KEYS[0], "d")
    router.receive(host, MailboxTake(1))
    router.receive(device, MailboxGet(2, "host-a"))
    assert router.take() == [ToMailbox(host, MailboxTake(1)), ToMailbox(device, MailboxGet(2, "host-a"))]
    router.receive(device, MailboxTake(3))
    [fail] = router.take()
    assert isinstance(fail, Fail) and fail.peer is device


def test_channels_per_device_key_are_counted_over_all_its_connections() -> None:
    router = make(max_channels_per_device=2)
    host = router.connect("h", Role.HOST, b"H" * 32, "host-a")
    router.receive(host, Allowlist((KEYS[0],)))
    one = router.connect("1", Role.DEVICE, KEYS[0], "d")
    two = router.connect("2", Role.DEVICE, KEYS[0], "d")
    router.receive(one, Open(1, "host-a"))
    router.receive(two, Open(1, "host-a"))
    router.receive(two, Open(2, "host-a"))
    refused = sent(router.take(), two)[-1]
    assert isinstance(refused, Close) and refused.code == CloseCode.TOO_MANY_CHANNELS
    router.disconnect(one)
    router.receive(two, Open(3, "host-a"))
    assert sent(router.take(), two) == [Opened(3)]


def test_opens_per_minute_are_limited_until_the_clock_moves() -> None:
    router = make(opens_per_minute=2)
    clock = router.clock
    assert isinstance(clock, Clock)
    device = router.connect("d", Role.DEVICE, KEYS[0], "d")
    for channel in range(3):
        router.receive(device, Open(channel, "host-a"))
    codes = [f.code for f in sent(router.take(), device) if isinstance(f, Close)]
    assert codes == [CloseCode.HOST_OFFLINE, CloseCode.HOST_OFFLINE, CloseCode.RATE_LIMITED]
    clock.now += 30  # one token back
    router.receive(device, Open(9, "host-a"))
    assert [f.code for f in sent(router.take(), device) if isinstance(f, Close)] == [CloseCode.HOST_OFFLINE]


# --- random sequences against the invariants ---

@dataclass
class Model:
    """What the test saw the router say, to check its state against."""

    incoming: set[tuple[int, int]] = field(default_factory=set)  # (id(host peer), host channel)
    opened: set[tuple[int, int]] = field(default_factory=set)  # (id(device peer), channel)
    gone: set[int] = field(default_factory=set)


def _frames() -> st.SearchStrategy[object]:
    host_id = st.sampled_from([*HOSTS, "nobody"])
    channel = st.integers(0, 4)
    return st.one_of(
        st.builds(Open, channel, host_id, st.sampled_from(["", *OFFERS])),
        st.builds(Close, channel, st.sampled_from(list(CloseCode)), st.just("bye")),
        st.builds(Allowlist, st.lists(st.sampled_from(KEYS), max_size=3).map(tuple), st.booleans(), st.booleans()),
        st.builds(Offers, st.lists(st.sampled_from(OFFERS), max_size=2).map(tuple)),
        st.builds(Watch, st.lists(host_id, max_size=3).map(tuple)),
        st.builds(MailboxGet, st.integers(0, 3), host_id),
    )


_HOST_IDS = st.sampled_from([*HOSTS, "nobody"])
# device frames go to a live device (most sequences should be about opening and closing channels)
_OPEN = st.tuples(st.just("device_frame"), st.integers(0, 20),
                  st.builds(Open, st.integers(0, 4), _HOST_IDS, st.sampled_from(["", *OFFERS])))
_CLOSE = st.tuples(st.just("device_frame"), st.integers(0, 20),
                   st.builds(Close, st.integers(0, 4), st.just(CloseCode.NORMAL), st.just("bye")))
OPS = st.lists(
    st.one_of(
        # opening and closing channels is what most sequences should be about
        _OPEN, _OPEN, _OPEN, _CLOSE,
        st.tuples(st.just("host"), st.sampled_from(HOSTS)),
        st.tuples(st.just("device"), st.sampled_from(KEYS)),
        st.tuples(st.just("frame"), st.integers(0, 20), _frames()),
        st.tuples(st.just("data"), st.integers(0, 20), st.integers(0, 4)),
        st.tuples(st.just("drop"), st.integers(0, 20)),
        st.tuples(st.just("tick"), st.floats(0, 120)),
        # one node of a cluster: devices of other nodes, and where their channels went
        st.tuples(st.just("proxy"), st.sampled_from(KEYS)),
        # the cluster's answers, for a channel some device holds elsewhere
        st.tuples(st.just("place"), st.integers(0, 20), st.sampled_from(["", *NODES])),
        st.tuples(st.just("place"), st.integers(0, 20), st.sampled_from(NODES)),
        st.tuples(st.just("closed_elsewhere"), st.integers(0, 20)),
        st.tuples(st.just("node_lost"), st.sampled_from(NODES)),
    ),
    min_size=4,
    max_size=60,
)


@settings(max_examples=500, deadline=None)
@given(OPS, st.booleans())
def test_random_sequences_keep_the_routing_invariants(ops: list[tuple[object, ...]], elsewhere: bool) -> None:
    router: Router[str] = Router(
        RelayLimits(max_channels_per_device=4, max_channels_per_offer=1, max_connections_per_device=2,
                    opens_per_minute=6),
        Clock(), elsewhere=elsewhere,
    )
    clock = router.clock
    assert isinstance(clock, Clock)
    model = Model()
    # every sequence starts from a host with an allowlist, devices and (a cluster node's) a
    # device of another node, so that each step has someone to act on
    peers: list[Peer[str]] = [router.connect("h", Role.HOST, b"A" * 32, "host-a")]
    router.receive(peers[0], Allowlist((KEYS[0], KEYS[2])))
    for key in KEYS[:2]:
        assert router.admit_device(key) is None
        peers.append(router.connect(f"d-{key[0]}", Role.DEVICE, key, f"d-{key[0]}"))
    peers.append(router.connect("p", Role.DEVICE, KEYS[2], "p", proxy=True))
    router.take()
    for op in ops:
        gone_before = {id(p) for p in peers if p.gone}
        match op:
            case ("host", str(host_id)):
                peers.append(router.connect(f"h{len(peers)}", Role.HOST, host_id.encode().ljust(32, b"."), host_id))
            case ("device", bytes(key)):
                if router.admit_device(key) is None:
                    peers.append(router.connect(f"d{len(peers)}", Role.DEVICE, key, key.hex()[:8]))
            case ("frame", int(n), frame) if peers:
                router.receive(peers[n % len(peers)], frame)
            case ("device_frame", int(n), frame):
                devices = [p for p in peers if not p.gone and p.role is Role.DEVICE]
                if devices:
                    router.receive(devices[n % len(devices)], frame)
            case ("data", int(n), int(channel)) if peers:
                peer = peers[n % len(peers)]
                target = router.forward(peer, encode_data(channel, b"x"))
                if target is not None:
                    receiver, frame, receiver_channel = target
                    assert not peer.gone and not receiver.gone and receiver is not peer
                    assert decode_frame(frame).channel == receiver_channel  # type: ignore[union-attr]
                    route = peer.channels[channel]
                    assert route.other(peer) == (receiver, receiver_channel)
            case ("drop", int(n)) if peers:
                router.disconnect(peers[n % len(peers)])
            case ("tick", float(seconds)):
                clock.now += seconds
            case ("proxy", bytes(key)):
                peers.append(router.connect(f"p{len(peers)}", Role.DEVICE, key, key.hex()[:8], proxy=True))
            case ("place", int(n), str(node)):
                remote = [(p, ch) for p in peers if p.remote for ch in p.remote]
                if remote:
                    peer, channel = remote[n % len(remote)]
                    if node:
                        router.placed(peer, channel, node)
                    else:
                        router.unplaced(peer, channel, CloseCode.HOST_OFFLINE, UNREACHABLE)
            case ("closed_elsewhere", int(n)):
                remote = [(p, ch) for p in peers if p.remote for ch in p.remote]
                if remote:
                    router.closed_elsewhere(*remote[n % len(remote)])
            case ("node_lost", str(node)):
                router.node_lost(node, CloseCode.NODE_UNREACHABLE, "gone")
            case _:
                pass
        _check(router, peers, model, router.take(), gone_before)


def _check(router: Router[str], peers: list[Peer[str]], model: Model, actions: list[object],
           gone_before: set[int]) -> None:
    failed: set[int] = set()
    for action in actions:
        if isinstance(action, Send):
            # nothing is ever sent to a connection already let go, nor after its Fail
            assert id(action.peer) not in gone_before and id(action.peer) not in failed
            frame = decode_frame(action.frame)
            if isinstance(frame, Incoming):
                model.incoming.add((id(action.peer), frame.channel))
            elif isinstance(frame, Opened):
                model.opened.add((id(action.peer), frame.channel))
        elif isinstance(action, Fail):
            assert action.peer.gone
            failed.add(id(action.peer))
        elif isinstance(action, OpenElsewhere):
            # only for a device connected here, only in a cluster, and held until placed
            device = action.device
            assert router.elsewhere and not isinstance(device, ProxyPeer) and action.frame.host_id not in router.hosts
            assert device.gone or (device.remote is not None and action.frame.channel in device.remote)
        elif isinstance(action, LeftNodes):
            assert action.device.gone and action.nodes and "" not in action.nodes
    live = [p for p in peers if not p.gone]
    assert router.peers == set(live)
    routes = {id(r): r for p in live for r in p.channels.values()}
    per_key: dict[bytes, int] = {}
    for route in routes.values():
        device, host = route.device, route.host
        # both ends are live, hold the route under its ids, and were told it was opened
        assert not device.gone and not host.gone and not route.closed
        assert device.channels[route.device_channel] is route and host.channels[route.host_channel] is route
        assert (id(device), route.device_channel) in model.opened
        assert (id(host), route.host_channel) in model.incoming
        assert router.hosts[host.id] is host
        # a device reaches a host only through its allowlist or a pairing offer
        assert route.via_offer or device.key in host.allowlist
        per_key[device.key] = per_key.get(device.key, 0) + 1
    for peer in live:
        if peer.remote:
            assert router.elsewhere and not isinstance(peer, ProxyPeer) and peer.role is Role.DEVICE
            assert not set(peer.remote) & set(peer.channels)
            per_key[peer.key] = per_key.get(peer.key, 0) + len(peer.remote)
    assert router.device_channels == per_key
    for key, count in per_key.items():
        assert count <= router.limits.max_channels_per_device, key
    for host in router.hosts.values():
        by_offer: dict[str, int] = {}
        for route in host.channels.values():
            if route.via_offer:
                by_offer[route.offer_id] = by_offer.get(route.offer_id, 0) + 1
        assert by_offer == host.offer_channels
    for watched, watchers in router.watchers.items():
        assert watchers and all(not w.gone and watched in w.watching for w in watchers)
    devices = [p for p in live if p.role is Role.DEVICE and not isinstance(p, ProxyPeer)]
    assert router.device_connections == {k: sum(1 for d in devices if d.key == k) for k in {d.key for d in devices}}
