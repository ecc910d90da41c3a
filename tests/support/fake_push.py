"""A push service on loopback, standing in for the browsers' (FCM, Mozilla's, Apple's): it takes
what the host POSTs to a subscription's endpoint, records it, and answers 201 — or what a test sets
for that subscription (410: gone). With a :class:`Browser`'s keys a test decrypts what it got,
exactly as the browser would (RFC 8291), and checks the VAPID signature (RFC 8292).

Run in-process (``async with FakePush() as push``) or as a process:
``python -m tests.support.fake_push --log pushes.jsonl`` prints ``PORT n``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import secrets
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import http_ece
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid02

from tether.crypto.encoding import b64u_encode


@dataclass
class Browser:
    """A browser's push subscription keys (what PushManager.subscribe makes)."""

    key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    auth: bytes = field(default_factory=lambda: secrets.token_bytes(16))

    def keys(self) -> dict[str, str]:
        point = self.key.public_key().public_bytes(serialization.Encoding.X962,
                                                   serialization.PublicFormat.UncompressedPoint)
        return {"p256dh": b64u_encode(point), "auth": b64u_encode(self.auth)}

    def decrypt(self, body: bytes) -> dict[str, Any]:
        plain = http_ece.decrypt(body, private_key=self.key, auth_secret=self.auth, version="aes128gcm")
        return dict(json.loads(plain))


@dataclass
class Push:
    path: str
    headers: dict[str, str]
    body: bytes

    def vapid_key(self) -> str:
        """The public key the push was signed with, once its signature is checked."""
        auth = self.headers.get("Authorization", "")
        assert Vapid02.verify(auth), f"bad VAPID signature: {auth[:40]}…"
        return auth.split("k=", 1)[1].split(",")[0]

    def as_json(self) -> dict[str, Any]:
        return {"path": self.path, "headers": self.headers, "body": base64.b64encode(self.body).decode()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Push:
        return cls(data["path"], data["headers"], base64.b64decode(data["body"]))


class FakePush:
    def __init__(self, log_path: Path | None = None) -> None:
        self.pushes: list[Push] = []
        self.status: dict[str, int] = {}  # path → the answer for it (default 201)
        self.hang: set[str] = set()  # paths that never answer
        self.started: list[str] = []  # paths of every request as it came in (hanging ones too)
        self.log_path = log_path
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.arrived = asyncio.Event()

    def endpoint(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/push/{name}"

    async def __aenter__(self) -> FakePush:
        app = web.Application()
        app.router.add_post("/push/{name}", self._take)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)  # a hanging endpoint does not hold the test
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _take(self, request: web.Request) -> web.Response:
        push = Push(request.path, dict(request.headers), await request.read())
        self.started.append(request.path)
        if request.path in self.hang:
            await asyncio.sleep(3600)
        self.pushes.append(push)
        self.arrived.set()
        if self.log_path is not None:
            with self.log_path.open("a") as f:
                f.write(json.dumps(push.as_json()) + "\n")
        status_file = self.log_path.with_suffix(".status") if self.log_path else None
        if status_file is not None and status_file.exists():
            self.status.update(json.loads(status_file.read_text()))
        return web.Response(status=self.status.get(request.path, 201))

    async def wait(self, count: int, timeout: float = 10) -> list[Push]:
        async with asyncio.timeout(timeout):
            while len(self.pushes) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.pushes


async def _serve(log: Path) -> None:
    async with FakePush(log) as push:
        print(f"PORT {push.port}", flush=True)
        await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--log", type=Path, required=True, help="JSON lines of every push; LOG.status: path → code")
    args = parser.parse_args()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    try:
        asyncio.run(_serve(args.log))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
