"""The page's reconnect sleep: news that comes while an attempt is still failing (the host is back
online) is not lost, so the page does not wait out a whole 30 s delay after it."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_a_wake_before_the_sleep_ends_the_next_sleep_at_once(page: Any, static_relay: int) -> None:
    page.goto(f"http://127.0.0.1:{static_relay}/healthz")
    took = page.evaluate(
        """async () => {
          const { Sleeper } = await import("/connection.js");
          const s = new Sleeper();
          const timed = async (promise) => {
            const t = performance.now();
            await promise;
            return performance.now() - t;
          };
          s.wake();  // nobody sleeps yet: remembered
          const early = await timed(s.sleep(10000));
          const p = s.sleep(10000);
          setTimeout(() => s.wake(), 50);  // wakes a sleep in progress
          const during = await timed(p);
          const plain = await timed(s.sleep(200));  // remembered once, not for ever
          return { early, during, plain };
        }"""
    )
    assert took["early"] < 2000 and took["during"] < 2000, took
    assert took["plain"] >= 150, took
