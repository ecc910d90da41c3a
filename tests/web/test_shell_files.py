"""The service worker caches the whole app shell: every script and style the page loads is in its
list (a file missing there breaks the page offline, and only there)."""

from __future__ import annotations

import re
from pathlib import Path

STATIC = Path(__file__).resolve().parents[2] / "src" / "tether" / "web" / "static"


def test_the_service_worker_caches_every_script_and_style() -> None:
    source = (STATIC / "sw.js").read_text()
    listed = set(re.findall(r'"([\w./-]+)"', source[source.index("const SHELL = ["):].split("];", 1)[0]))
    shell = {str(p.relative_to(STATIC)) for p in STATIC.rglob("*") if p.suffix in (".js", ".css", ".html")}
    assert shell - {"sw.js"} - listed == set(), "add these to SHELL in sw.js (and bump CACHE)"
    assert listed - {"./", "manifest.webmanifest", "icon.svg", "apple-touch-icon.png"} <= shell, \
        "sw.js lists files that do not exist"

