"""What a client keeps in its home: its device keys and the hosts it has paired with."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tether.crypto.encoding import b64u_decode, b64u_encode
from tether.crypto.keys import Identity
from tether.errors import ConfigError, UsageError
from tether.home import check_home, ensure_home, read_json, write_private_json


@dataclass
class PairedHost:
    host_id: str
    name: str
    relay_url: str
    host_static: bytes
    device_id: str
    scopes: list[str]
    paired_at: float = field(default_factory=time.time)
    # The host that announced this one (a host it started with `tether ssh`); None: paired here.
    linked_from: str | None = None
    # The node of a relay cluster that held this host when it was last reached (the node said so:
    # REDIRECT); tried before relay_url. Empty: none known.
    node_url: str = ""

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["host_static"] = b64u_encode(self.host_static)
        return data

    @classmethod
    def from_json(cls, data: Any) -> PairedHost:
        """One entry of hosts.json; ``ValueError`` unless every field is there with its type."""
        if not isinstance(data, dict) or set(data) - _FIELDS or not _REQUIRED <= set(data):
            raise ValueError("not a host entry")
        texts = [data[k] for k in ("host_id", "name", "relay_url", "host_static", "device_id")]
        scopes, paired_at = data["scopes"], data.get("paired_at", 0.0)
        if not all(isinstance(t, str) for t in texts):
            raise ValueError("not a host entry")
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            raise ValueError("not a host entry")
        if isinstance(paired_at, bool) or not isinstance(paired_at, int | float) or not math.isfinite(paired_at):
            raise ValueError("not a host entry")
        if not isinstance(data.get("linked_from"), str | None) or not isinstance(data.get("node_url", ""), str):
            raise ValueError("not a host entry")
        host_static = b64u_decode(data["host_static"])
        if len(host_static) != 32:
            raise ValueError("not a host entry")
        return cls(**{**data, "host_static": host_static})


def _not_paired() -> UsageError:
    return UsageError("this home is not paired with any host", hint="run `tether login` first (it asks for the link)")


_FIELDS = {"host_id", "name", "relay_url", "host_static", "device_id", "scopes", "paired_at", "linked_from",
           "node_url"}
_REQUIRED = _FIELDS - {"paired_at", "linked_from", "node_url"}


class ClientState:
    def __init__(self, home: Path) -> None:
        check_home(home)  # hosts.json decides which key a host must prove: nobody else may write it
        self.dir = home / "client"
        self.keys_path = self.dir / "keys.json"
        self.hosts_path = self.dir / "hosts.json"

    def identity(self, *, create: bool = False) -> Identity:
        if create:
            ensure_home(self.dir.parent)
            self.dir.mkdir(mode=0o700, exist_ok=True)
            return Identity.load_or_create(self.keys_path)
        if not self.keys_path.exists():
            raise _not_paired()
        return Identity.load(self.keys_path)

    def hosts(self) -> list[PairedHost]:
        if not self.hosts_path.exists():
            return []
        try:
            data = read_json(self.hosts_path)
        except RecursionError:  # nested too deep for the JSON parser: not a file we wrote
            data = None
        version = data.get("version") if isinstance(data, dict) else None
        if type(version) is int and version != 1:
            # Rewriting it as version 1 would lose what a newer tether keeps there.
            raise ConfigError(
                f"{self.hosts_path} has version {version}, which this tether does not know", hint="upgrade tether"
            )
        try:
            # Strict, like each entry: what this tether does not know it would drop when it saves.
            if not isinstance(data, dict) or set(data) != {"version", "hosts"} or type(version) is not int:
                raise ValueError("not a hosts file")
            if not isinstance(data["hosts"], list):
                raise ValueError("not a hosts file")
            return [PairedHost.from_json(h) for h in data["hosts"]]
        except ValueError:
            raise ConfigError(f"{self.hosts_path} is damaged", hint="remove it and pair again") from None

    def save_host(self, host: PairedHost) -> None:
        self._save([h for h in self.hosts() if h.host_id != host.host_id] + [host])

    def remove_host(self, host_id: str) -> None:
        self._save([h for h in self.hosts() if h.host_id != host_id])

    def _save(self, hosts: list[PairedHost]) -> None:
        write_private_json(self.hosts_path, {"version": 1, "hosts": [h.to_json() for h in hosts]})

    def find_host(self, selector: str | None) -> PairedHost:
        """The host named by id, id prefix or name; the only host when ``selector`` is None."""
        hosts = self.hosts()
        if not hosts:
            raise _not_paired()
        if selector is None:
            if len(hosts) == 1:
                return hosts[0]
            names = ", ".join(f"{h.name} ({h.host_id})" for h in hosts)
            raise UsageError("this client is paired with several hosts", hint=f"pick one with --host: {names}")
        # an exact id first: another host may be named like it
        matches = [h for h in hosts if h.host_id == selector]
        matches = matches or [h for h in hosts if h.name == selector]
        matches = matches or [h for h in hosts if h.host_id.startswith(selector)]
        if len(matches) != 1:
            raise UsageError(f"no single paired host matches {selector!r}", hint="see `tether hosts`")
        return matches[0]
