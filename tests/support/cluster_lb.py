"""A cluster behind a load balancer, the docs/cluster.md recipe run for real: N ``tether relay
--cluster`` nodes sharing one Redis, and a real Caddy on a loopback port in front of them.

Caddy routes ``/node-N/*`` to node N with the prefix stripped (``handle_path``), so each node is
reachable at ``http://127.0.0.1:LB/node-N``: its advertise URL, on the same origin as the page (a
browser may dial nothing else: the relay's CSP says ``connect-src 'self'``). Everything else (the
web client, ``/ws``, ``/healthz``) is balanced over all nodes, with active health checks on
``/healthz`` and, when a node does not answer, the request tried on another for ``lb_try_duration``.

Each node listens on 127.0.0.1 with ``--public-url http://127.0.0.1:LB`` (the origin check),
``--advertise-url http://127.0.0.1:LB/node-N`` and ``--trust-forwarded-for`` (its per-address
limits count the client Caddy names, not Caddy). ``/metrics`` answers on a node's own port only
(loopback, no X-Forwarded-For): :meth:`LbNode.metrics`.

``ClusterBehindLb`` is a context manager; everything it started is stopped and its directories
removed when it exits, whatever happened.
"""

from __future__ import annotations

import os
import re
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.procs import Proc, free_port, remove, short_home, start_relay

CADDY = shutil.which("caddy") or "/usr/bin/caddy"

# How the load balancer treats its nodes (the values docs/cluster.md shows).
LB_OPTIONS = """\
			lb_policy {policy}
			lb_try_duration 5s
			lb_try_interval 250ms
			fail_duration 10s
			max_fails 1
			unhealthy_status 502 503 504
			health_uri /healthz
			health_interval 2s
			health_timeout 2s
			health_status 200"""


def caddyfile(site: str, nodes: Sequence[str], *, policy: str = "least_conn", order: Sequence[int] | None = None,
              globals_: str = "") -> str:
    """The Caddyfile of a load balancer at ``site`` (``relay.example.com``, or
    ``http://127.0.0.1:PORT``) in front of ``nodes`` (``host:port`` each; node N is
    ``nodes[N-1]``). ``order``: the node numbers in the order the balanced route lists them (it
    matters for ``lb_policy first``); default 1..N."""
    order = list(order or range(1, len(nodes) + 1))
    assert sorted(order) == list(range(1, len(nodes) + 1)), order
    head = f"{{\n{globals_}}}\n\n" if globals_ else ""
    public = site if "://" in site else f"https://{site}"
    routes = "".join(
        f"\t# node {n}: its advertise URL is {public}/node-{n}\n"
        f"\thandle_path /node-{n}/* {{\n\t\treverse_proxy {address}\n\t}}\n"
        for n, address in enumerate(nodes, start=1)
    )
    balanced = " ".join(nodes[n - 1] for n in order)
    return (
        f"{head}{site} {{\n{routes}"
        "\t# the page, /ws and /healthz: any node\n"
        f"\thandle {{\n\t\treverse_proxy {balanced} {{\n{LB_OPTIONS.format(policy=policy)}\n\t\t}}\n\t}}\n}}\n"
    )


def metrics_of(port: int) -> dict[str, float]:
    """``GET /metrics`` on a relay's own port: ``{'name{labels}': value}``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {name: float(value) for name, value in re.findall(r"^(tether_\S+) (\S+)$", text, re.M)}


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except OSError:
        return 0, ""


@dataclass
class LbNode:
    n: int
    node_id: str
    proc: Proc
    port: int
    home: Path
    advertise_url: str

    def metrics(self) -> dict[str, float]:
        return metrics_of(self.port)


class ClusterBehindLb:
    """``count`` relay nodes on ``redis_url`` and Caddy in front of them, started by the
    constructor (``policy``/``order``: see :func:`caddyfile`)."""

    def __init__(self, redis_url: str, count: int = 2, *, policy: str = "least_conn",
                 order: Sequence[int] | None = None, timeout: float = 30) -> None:
        self.port = free_port()
        self.work = short_home("tlb")
        self.nodes: list[LbNode] = []
        self.caddy: Proc | None = None
        try:
            for n in range(1, count + 1):
                home = short_home("tn")
                advertise = f"{self.origin}/node-{n}"
                proc, port = start_relay(
                    0, "--cluster", redis_url, "--node-id", f"node-{n}", "--public-url", self.origin,
                    "--advertise-url", advertise, "--trust-forwarded-for", home=home,
                )
                self.nodes.append(LbNode(n, f"node-{n}", proc, port, home, advertise))
            globals_ = f"\tadmin off\n\tauto_https off\n\tstorage file_system {self.work / 'data'}\n"
            self.caddyfile = caddyfile(self.origin, [f"127.0.0.1:{node.port}" for node in self.nodes],
                                       policy=policy, order=order, globals_=globals_)
            (self.work / "Caddyfile").write_text(self.caddyfile)
            env = {"HOME": str(self.work), "XDG_DATA_HOME": str(self.work), "XDG_CONFIG_HOME": str(self.work)}
            self.caddy = Proc([CADDY, "run", "--config", str(self.work / "Caddyfile"), "--adapter", "caddyfile"],
                              name="caddy", env=env)
            self._wait_ready(timeout)
        except BaseException:
            self.close()
            raise

    @property
    def origin(self) -> str:
        """The page's origin, and the cluster's public URL."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def node(self, n: int) -> LbNode:
        return self.nodes[n - 1]

    def _wait_ready(self, timeout: float) -> None:
        """Until Caddy answers /healthz on the balanced route and on each node's own route."""
        deadline = time.monotonic() + timeout
        paths = ["/healthz", *(f"/node-{node.n}/healthz" for node in self.nodes)]
        seen: dict[str, tuple[int, str]] = {}
        while time.monotonic() < deadline:
            assert self.caddy is not None
            if not self.caddy.alive:
                raise AssertionError(f"caddy exited ({self.caddy.popen.returncode}):\n{self.caddy.log}")
            seen = {path: _get(self.origin + path) for path in paths}
            if all(status == 200 and body.startswith("ok") for status, body in seen.values()):
                return
            time.sleep(0.1)
        log = self.caddy.log if self.caddy is not None else ""
        raise AssertionError(f"the load balancer was not ready within {timeout} s: {seen}\n{log}")

    def close(self) -> None:
        if self.caddy is not None:
            self.caddy.stop()
        for node in self.nodes:
            node.proc.stop()
            remove(node.home)
        remove(self.work)

    def __enter__(self) -> ClusterBehindLb:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def need_caddy() -> None:
    """Skip without Caddy (fail in CI, whose scripts/test installs it), as tests/e2e does."""
    import pytest

    if shutil.which("caddy") is None:
        if os.environ.get("CI"):
            pytest.fail("caddy is not installed, and CI must run this test (scripts/test installs it)")
        pytest.skip("caddy is not installed (scripts/test installs it)")
