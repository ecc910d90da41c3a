"""A fake ChatGPT-account login for the real Codex, all on loopback: with it Codex 0.169 offers its
``image_gen`` tool, which it offers only to a ChatGPT login (``auth.json`` ``tokens``) on a model
provider with ``requires_openai_auth = true`` (tests/agents/codex/test_codex_rare_items.py,
tests/web/test_web_codex_rare_items.py).

The tokens are unsigned JWTs (Codex reads their claims but does not check a signature); the model
provider and ``chatgpt_base_url`` are both the scripted model's server (tests/support/fake_responses,
which answers the Images API too), so nothing leaves loopback.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

ACCOUNT = "acct-tether-test"
_AUTH_CLAIMS = {"chatgpt_plan_type": "pro", "chatgpt_account_id": ACCOUNT, "chatgpt_user_id": "user-test"}


def _jwt(claims: dict[str, Any]) -> str:
    """An unsigned JWT: Codex reads a login's token claims but does not check their signature."""
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}.unsigned"


def chatgpt_access_token(expires_in: int = 86400) -> str:
    """An access token of the fake ChatGPT account (``expires_in`` seconds from now; negative: it
    has expired)."""
    now = int(time.time())
    return _jwt({"exp": now + expires_in, "iat": now, "https://api.openai.com/auth": _AUTH_CLAIMS})


def chatgpt_login(home: Path, base_url: str) -> str:
    """A CODEX_HOME logged in to a (fake) ChatGPT account, whose model provider — the scripted
    model at ``base_url`` (``http://127.0.0.1:PORT/v1``) — takes that login (``requires_openai_auth``),
    and whose ChatGPT backend is the scripted model's server too (nothing leaves loopback); the
    access token."""
    now = int(time.time())
    access = chatgpt_access_token()
    chatgpt_home(home, base_url)
    (home / "auth.json").write_text(json.dumps({
        "auth_mode": "chatgpt", "OPENAI_API_KEY": None, "last_refresh": time.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "tokens": {"id_token": _jwt({"email": "test@example.com", "exp": now + 86400, "iat": now,
                                     "https://api.openai.com/auth": _AUTH_CLAIMS}),
                   "access_token": access, "refresh_token": "unused", "account_id": ACCOUNT},
    }))
    return access


def chatgpt_home(home: Path, base_url: str) -> None:
    """The CODEX_HOME of :func:`chatgpt_login` without its login (``auth.json``): for a client that
    logs Codex in with tokens it manages (app-server ``account/login/start`` ``chatgptAuthTokens``)."""
    root = base_url.removesuffix("/v1")
    home.mkdir(parents=True)
    (home / "config.toml").write_text(f'''
model = "mock-model"
model_provider = "scripted"
approval_policy = "on-request"
sandbox_mode = "workspace-write"
check_for_update_on_startup = false
chatgpt_base_url = "{root}/backend-api/"

[features]
enable_request_compression = false
# the ChatGPT login's plugin sync and apps (an MCP server on the ChatGPT backend): not needed here
plugins = false
apps = false

[analytics]
enabled = false

[model_providers.scripted]
name = "tether fake model, ChatGPT login"
base_url = "{base_url}"
wire_api = "responses"
requires_openai_auth = true
request_max_retries = 0
stream_max_retries = 0
supports_websockets = false
''')


def refresh_url(base_url: str) -> dict[str, str]:
    """The environment that points Codex's login refresh at the scripted server (which refuses it)
    instead of OpenAI, should Codex try one."""
    return {"CODEX_REFRESH_TOKEN_URL_OVERRIDE": f"{base_url}/oauth/token"}
