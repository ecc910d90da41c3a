"""Screenshots of every web client screen at 390×844, from real relay, host and model processes.

Run through ``scripts/screenshots [OUT_DIR]`` (default ``docs/screenshots``). Regenerable: every
run starts fresh processes in temporary homes and removes them afterwards.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from tests.procs import TETHER, Proc, remove, short_home, start_host, tether, tether_json

from .conftest import CHROMIUM, CHROMIUM_ARGS, PHONE, REPO, start_scripted_model, start_web_relay, write_file_call
from .pages import TIMEOUT, device_id, type_line, wait_terminal

SCRIPT = [
    {"chunks": ["I'll add a greeting module ", "and a test for it."], **write_file_call(
        "greet.py", 'def greet(name: str) -> str:\n    return f"Hello, {name}!"\n', "c1")},
    {"text": "## Done\n\nAdded **`greet()`** in `greet.py`. Try it:\n\n```python\nfrom greet import greet\n"
              "print(greet(\"bus\"))  # Hello, bus!\n```\n\n- no dependencies\n- typed\n"},
]


class Shots:
    def __init__(self, out: Path) -> None:
        self.out = out
        out.mkdir(parents=True, exist_ok=True)

    def take(self, page: Any, name: str, *, full: bool = False) -> None:
        time.sleep(0.4)  # let fonts and the last frame settle
        path = self.out / f"{name}.png"
        page.screenshot(path=str(path), full_page=full)
        print(f"wrote {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")


def pair(page: Any, host_home: Path, name: str, *scopes: str) -> None:
    link = tether_json(host_home, "pair", "--json", *scopes)["link"]
    page.goto(link)
    page.wait_for_selector("#pair-host-id", timeout=TIMEOUT)
    page.fill("#device-name", name)
    page.click("#pair-button")
    page.wait_for_selector(".host", timeout=TIMEOUT)


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else REPO / "docs" / "screenshots"
    shots = Shots(out)
    from playwright.sync_api import sync_playwright

    laptop_home = short_home("th")
    ws = short_home("tw")  # beside the home: an agent's workspace may not hold the host's keys
    (ws / "README.md").write_text("# project\n")
    box_home = short_home("th")
    box_ws = short_home("tw")
    model, model_port, _ = start_scripted_model("fake_openai", SCRIPT, laptop_home)
    (laptop_home / "config.toml").write_text(
        "[agents.builtin]\n"
        f'base_url = "http://127.0.0.1:{model_port}/v1"\n'
        'model = "fake-model"\napi_key = "sk-screenshots"\napproval = "on-request"\nsandbox = "workspace-write"\n'
    )
    relay, port = start_web_relay()
    origin = f"http://127.0.0.1:{port}"
    procs: list[Proc] = [model, relay]
    try:
        laptop = Proc([*TETHER, "--home", str(laptop_home), "host", "--relay", f"ws://127.0.0.1:{port}",
                       "--workspace", str(ws), "--name", "laptop"],
                      env={"OPENAI_API_KEY": "", "OPENAI_BASE_URL": ""}, name="host")
        procs.append(laptop)
        laptop.wait_for(r"connected to relay")
        box = start_host(box_home, f"ws://127.0.0.1:{port}", box_ws, name="build-box")
        procs.append(box)

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            for scheme in ("light", "dark"):
                context = browser.new_context(**PHONE, color_scheme=scheme)
                page = context.new_page()
                suffix = "" if scheme == "light" else "-dark"
                if scheme == "dark":
                    # The dark set: the main screens again, same state.
                    pair(page, laptop_home, "Pixel (dark)", "--scopes", "read,prompt,approve,admin")
                    page.goto(origin + "/")
                    page.wait_for_selector('a.host[data-state="online"]', timeout=TIMEOUT)
                    shots.take(page, f"hosts{suffix}")
                    page.click('a.host[data-state="online"]')
                    page.wait_for_selector("a.session", timeout=TIMEOUT)
                    shots.take(page, f"sessions{suffix}")
                    page.click('a.session[data-status="waiting-for-approval"]')
                    page.wait_for_selector('.card.approval[data-resolved=""]', timeout=TIMEOUT)
                    shots.take(page, f"session-approval{suffix}")
                    page.goto(page.url.split("/session/")[0])
                    page.click('a.session:not([data-status="waiting-for-approval"])')
                    page.wait_for_selector('#terminal[data-ready="1"]', timeout=TIMEOUT)
                    shots.take(page, f"terminal{suffix}")
                    context.close()
                    continue

                link = tether_json(laptop_home, "pair", "--json", "--scopes", "read,prompt,approve,admin")["link"]
                page.goto(link)
                page.wait_for_selector("#pair-host-id", timeout=TIMEOUT)
                page.fill("#device-name", "Pixel 8")
                shots.take(page, "pair")
                page.click("#pair-button")
                page.wait_for_selector(".host", timeout=TIMEOUT)
                pair(page, box_home, "Pixel 8")
                page.wait_for_selector('a.host[data-state="online"] >> nth=1', timeout=TIMEOUT)
                # build-box goes away: offline, "last seen".
                box.stop()
                page.wait_for_selector('a.host[data-state="offline"]', timeout=TIMEOUT)
                shots.take(page, "hosts")

                # A terminal with some colour, started from the phone.
                page.click('a.host[data-state="online"]')
                page.click("#new-session")
                page.wait_for_selector("#new-form", timeout=TIMEOUT)
                page.fill("#new-command", "bash --norc -i")
                page.click("#start-session")
                page.wait_for_selector('#terminal[data-ready="1"]', timeout=TIMEOUT)
                type_line(page, "PS1='\\[\\e[32m\\]laptop\\[\\e[0m\\]:\\[\\e[34m\\]\\W\\[\\e[0m\\]$ '")
                type_line(page, "printf '\\e[1mtether\\e[0m: \\e[32mok\\e[0m \\e[33mwarn\\e[0m "
                                "\\e[31merror\\e[0m\\n'; ls -la --color=always")
                type_line(page, "git --version 2>/dev/null || echo no git; python3 -c 'print(6*7)'")
                wait_terminal(page, "42")
                page.click("#terminal")
                shots.take(page, "terminal")

                # An agent session from the New session screen, waiting for approval.
                host_id = page.url.split("/host/")[1].split("/")[0]
                page.goto(f"{origin}/#/host/{host_id}/new")
                page.wait_for_selector("#new-form", timeout=TIMEOUT)
                page.check('input[name="agent"][value="builtin"]')
                page.fill("#new-prompt", "Add a greet() helper in greet.py")
                shots.take(page, "new-session")
                page.click("#start-session")
                page.wait_for_selector('.card.approval[data-resolved=""]', timeout=TIMEOUT)
                page.locator(".card.agent", has_text="a test for it").wait_for(timeout=TIMEOUT)
                shots.take(page, "session-approval")
                page.goto(f"{origin}/#/host/{host_id}")
                page.wait_for_selector('a.session[data-status="waiting-for-approval"]', timeout=TIMEOUT)
                shots.take(page, "sessions")

                page.goto(f"{origin}/#/host/{host_id}/devices")
                page.wait_for_selector(".device", timeout=TIMEOUT)
                shots.take(page, "devices")
                page.goto(f"{origin}/#/host/{host_id}/settings")
                page.wait_for_selector("#settings", timeout=TIMEOUT)
                shots.take(page, "settings")
                dark_page_state = (context, page, host_id)

            # The approval answered: the agent's reply, in markdown.
            context, page, host_id = dark_page_state
            page.goto(f"{origin}/#/host/{host_id}")
            page.click('a.session[data-status="waiting-for-approval"]')
            page.click('.card.approval[data-resolved=""] button.approve')
            page.locator(".card.agent pre code").wait_for(timeout=TIMEOUT)
            shots.take(page, "session-reply")

            # Last: the light page's browser is revoked on the laptop.
            page.goto(f"{origin}/#/host/{host_id}")
            page.wait_for_selector('#conn-state[data-state="connected"]', timeout=TIMEOUT)
            tether(laptop_home, "devices", "revoke", device_id(laptop_home, "Pixel 8"))
            page.wait_for_selector("#revoked", timeout=TIMEOUT)
            shots.take(page, "revoked")
            context.close()
            browser.close()
    finally:
        for proc in reversed(procs):
            proc.stop()
        remove(laptop_home, ws, box_home, box_ws)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
