"""Keepalive pings for every authenticated connection of a relay, from one task.

A peer gone without a FIN (a laptop shut, a network lost) or frozen sends nothing, and TCP alone
would keep its connection, its channels and its place in the router for hours. Each connection
is pinged every ``interval``; when its peer has not answered within ``timeout`` of a ping (a
pong proves it reads what the relay sends: frames it sends do not), it is aborted (a peer that
answers nothing would not answer a closing handshake either), and the shell lets the router know
as for any other end.

websockets' own keepalive runs a task per connection, with a future and a timeout per ping: a
relay holds thousands of idle connections, and admits thousands at once when a node dies. Here
the connections wait in two queues kept in time order (every connection is pinged ``interval``
after its last ping, checked ``timeout`` after it), so one task sleeps until the next one due.
The queues hold them weakly: a closed connection must not stay in memory until its turn comes
(under churn, a strong reference held every connection of the last ``interval``: 200 MiB more).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import weakref

from tether.relay.connection import Connection, send_ping

log = logging.getLogger("tether.relay")


class Keepalive:
    """Pings the connections :meth:`add` was given until they close; :meth:`run` is the task."""

    def __init__(self, interval: float, timeout: float | None) -> None:
        self.interval = interval
        self.timeout = timeout
        # (when, connection): its next ping
        self._pings: collections.deque[tuple[float, weakref.ref[Connection]]] = collections.deque()
        # (when, connection, its pongs when pinged): the check of that ping
        self._checks: collections.deque[tuple[float, weakref.ref[Connection], int]] = collections.deque()
        #: connections dropped for answering nothing (for /metrics)
        self.dropped = 0

    def add(self, conn: Connection) -> None:
        """Ping ``conn`` from ``interval`` on (it was just admitted)."""
        self._pings.append((asyncio.get_running_loop().time() + self.interval, weakref.ref(conn)))

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        pings, checks = self._pings, self._checks
        while True:
            now = loop.time()
            while checks and checks[0][0] <= now:
                _, ref, pongs = checks.popleft()
                conn = ref()
                if (conn is not None and not conn.closing and conn.pongs() == pongs
                        and not conn.ws.transport.is_closing()):
                    self.dropped += 1
                    log.info("%s answered no keepalive ping within %g s: dropped", conn.label, self.timeout)
                    conn.ws.transport.abort()
            while pings and pings[0][0] <= now:
                _, ref = pings.popleft()
                conn = ref()
                if conn is None or conn.closing or not send_ping(conn.ws):
                    continue  # gone or going: pinged no more
                pings.append((now + self.interval, ref))
                if self.timeout is not None:
                    checks.append((now + self.timeout, ref, conn.pongs()))
            conn = None  # held only by the queues, weakly, while this task sleeps
            due = min(queue[0][0] for queue in (pings, checks) if queue) if pings or checks else now + self.interval
            await asyncio.sleep(max(0.0, due - now))
