"""The built-in agent: a small coding agent against any OpenAI-compatible Chat Completions server.

- :mod:`.llm`: the streaming Chat Completions client (:class:`ChatClient`, :class:`LLMError`).
- :mod:`.tools`: the tools' schemas and their execution inside the workspace and sandbox.
- :mod:`.loop`: one turn of the agent loop, reported through :class:`Hooks`.

The sandbox itself lives in :mod:`tether.agents.sandbox`. Configuration (base URL, model, key)
comes from the host's config, falling back to ``OPENAI_BASE_URL`` and ``OPENAI_API_KEY``: see
:func:`settings_from_env`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from tether.agents.builtin.llm import ChatClient, Delta, LLMError, ToolCall
from tether.agents.builtin.loop import (
    Decision,
    Hooks,
    LoopConfig,
    TurnResult,
    run_turn,
)
from tether.agents.builtin.tools import TOOL_SPECS, ToolError, ToolResult, ToolRunner

DEFAULT_BASE_URL = "https://api.openai.com/v1"

__all__ = [
    "DEFAULT_BASE_URL",
    "TOOL_SPECS",
    "ChatClient",
    "Decision",
    "Delta",
    "Hooks",
    "LLMError",
    "LoopConfig",
    "ToolCall",
    "ToolError",
    "ToolResult",
    "ToolRunner",
    "TurnResult",
    "resolve_endpoint",
    "run_turn",
]


def resolve_endpoint(
    base_url: str | None = None, api_key: str | None = None, env: Mapping[str, str] | None = None
) -> tuple[str, str | None]:
    """The base URL and API key: the host config's values, else ``OPENAI_BASE_URL``/``OPENAI_API_KEY``.

    An empty string in the config counts as unset. The key may be ``None`` (local servers such as
    Ollama need none).
    """
    env = os.environ if env is None else env
    url = base_url or env.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
    key = api_key or env.get("OPENAI_API_KEY") or None
    return url, key
