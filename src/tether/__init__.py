"""tether: drive the AI coding agents on your own machines from your phone."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Client", "__version__"]

if TYPE_CHECKING:
    from tether.client.sdk import Client


def __getattr__(name: str) -> Any:
    # Imported lazily so `import tether` (and the CLI's start) stays fast.
    if name == "Client":
        from tether.client.sdk import Client

        return Client
    raise AttributeError(name)
