"""The "Scan a QR code" screen: Chromium's fake camera plays a Y4M video of a QR code.

The QR code holds a real pairing link (`tether pair --json` on a real host); the page scans it,
pairs, and the host shows online. A QR code of some other text is refused with a clear message.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support.deployment import Deployment

from .conftest import CHROMIUM, CHROMIUM_ARGS, _unavailable, phone_page
from .pages import TIMEOUT

pytestmark = [pytest.mark.browser, pytest.mark.slow]

WIDTH, HEIGHT = 640, 480


def write_qr_y4m(text: str, path: Path, frames: int = 10) -> Path:
    """A Y4M video (4:2:0, 10 fps) whose every frame is ``text`` as a QR code, black on white,
    scaled to fit and centred, with a quiet zone of 4 modules."""
    import segno

    qr = segno.make(text, error="m")
    rows = [list(row) for row in qr.matrix_iter(scale=1, border=4)]
    modules = len(rows)
    scale = min(WIDTH, HEIGHT) // modules
    assert scale >= 2, f"QR code too big for {WIDTH}x{HEIGHT}: {modules} modules"
    size = modules * scale
    left, top = (WIDTH - size) // 2, (HEIGHT - size) // 2
    y_plane = bytearray(b"\xff" * (WIDTH * HEIGHT))
    for r, row in enumerate(rows):
        line = bytes(0 if dark else 255 for dark in row for _ in range(scale))
        for dy in range(scale):
            start = (top + r * scale + dy) * WIDTH + left
            y_plane[start:start + size] = line
    chroma = b"\x80" * ((WIDTH // 2) * (HEIGHT // 2))
    frame = b"FRAME\n" + bytes(y_plane) + chroma + chroma
    with path.open("wb") as out:
        out.write(f"YUV4MPEG2 W{WIDTH} H{HEIGHT} F10:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            out.write(frame)
    return path


@contextmanager
def camera_page(video: Path) -> Iterator[Any]:
    """A phone-sized page in a Chromium whose (fake) camera shows ``video``."""
    if not Path(CHROMIUM).exists():
        _unavailable(f"{CHROMIUM} is missing (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright Python package is missing (pip install playwright)")
    args = [
        *CHROMIUM_ARGS,
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={video}",
    ]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            with phone_page(browser) as page:
                yield page
        finally:
            browser.close()


def _open_scan_screen(page: Any, origin: str) -> None:
    page.goto(origin + "/")
    page.wait_for_selector("#scan-link", timeout=TIMEOUT)
    assert page.text_content("#scan-link") == "Scan a QR code to pair"
    page.click("#scan-link")
    page.wait_for_selector("#scan video", timeout=TIMEOUT)
    assert page.get_attribute("#scan-cancel", "href") == "#/"


def test_scan_a_pairing_qr_code_and_pair(web_deployment: Deployment, tmp_path: Path) -> None:
    d = web_deployment
    link = d.pairing_link()
    secret = link.rsplit(".", 1)[1]
    host_id = link.split("#pair=")[1].split(".")[0]
    video = write_qr_y4m(link, tmp_path / "pair.y4m")
    with camera_page(video) as page:
        _open_scan_screen(page, d.origin)
        # Scanned: the pairing screen, exactly as if the link had been opened; the secret is not
        # left in the address bar.
        page.wait_for_selector("#pair-host-id", timeout=TIMEOUT)
        assert page.text_content("#pair-host-id") == host_id
        assert "#pair" not in page.url and secret not in page.url
        assert page.query_selector("#scan") is None  # the scan screen is gone
        # The camera was stopped.
        assert page.evaluate("document.querySelectorAll('video').length") == 0
        page.fill("#device-name", "scanned-phone")
        page.click("#pair-button")
        row = f'a.host[data-host="{host_id}"][data-online="1"]'
        page.wait_for_selector(row, timeout=TIMEOUT)
        assert "test-host" in page.text_content(row)
        assert not page.errors  # type: ignore[attr-defined]


def test_a_qr_code_that_is_not_a_pairing_link_is_refused(web_deployment: Deployment, tmp_path: Path) -> None:
    video = write_qr_y4m("https://example.com/not-tether", tmp_path / "other.y4m")
    with camera_page(video) as page:
        _open_scan_screen(page, web_deployment.origin)
        page.wait_for_selector("#scan-error:not(:empty)", timeout=TIMEOUT)
        assert "not a tether pairing link" in page.text_content("#scan-error")
        assert page.get_attribute("#scan", "data-decoder") in {"jsQR", "BarcodeDetector"}
        # Still on the scan screen, camera running; Cancel goes back to the hosts.
        assert page.url.endswith("#/scan")
        page.click("#scan-cancel")
        page.wait_for_selector("#hosts", timeout=TIMEOUT)
        assert page.evaluate("document.querySelectorAll('video').length") == 0
        # What counts as a pairing link: this relay's (set the fragment), another's (go there).
        got = page.evaluate(
            """async (origin) => {
              const { classifyScanned } = await import("/ui/scan.js");
              return [origin + "/#pair=a.b.c.d", "https://relay.example:8443/#pair=a.b.c.d", "hello",
                      "https://example.com/#other", "javascript:alert(1)#pair=x"].map((t) => classifyScanned(t));
            }""",
            web_deployment.origin,
        )
        assert got[0] == {"same": "#pair=a.b.c.d"}
        assert got[1] == {"other": "https://relay.example:8443/#pair=a.b.c.d"}
        assert all("not a tether pairing link" in g["error"] for g in got[2:])
        assert not page.errors  # type: ignore[attr-defined]
