"""`tether relay --cluster …` refuses bad settings with a sentence saying what to pass, and never
shows a Redis password."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import pytest

from tests.procs import TETHER, free_port, short_home
from tests.support.redis_server import RedisServer

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(60)]


def relay(*args: str) -> tuple[int, str]:
    home = short_home("tn")
    result = subprocess.run([*TETHER, "--home", str(home), "relay", *args], capture_output=True, text=True,
                            timeout=30)
    return result.returncode, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--cluster", "http://127.0.0.1:6379"], "bad --cluster URL"),
        (["--cluster", "redis://127.0.0.1"], "bad --cluster URL"),
        (["--cluster", "redis://user:hunter2@:6379"], "bad --cluster URL"),
        (["--cluster", ""], "--cluster needs a Redis URL"),
        (["--node-id", "n1"], "--node-id and --advertise-url are for a cluster node"),
        (["--cluster", "redis://127.0.0.1:6379", "--node-id", "two words"], "bad --node-id"),
        (["--cluster", "redis://127.0.0.1:6379", "--listen", "127.0.0.1:0"], "--advertise-url"),
        (["--trusted-proxy", "10.0.0.0/33"], "is not a network"),
    ],
)
def test_bad_cluster_settings_are_refused_with_what_to_pass(args: list[str], said: str) -> None:
    code, output = relay("--listen", f"127.0.0.1:{free_port()}", *args)
    assert code == 2, output
    assert said in output
    assert "hunter2" not in output
    assert "Traceback" not in output


def test_an_unreachable_redis_is_said_without_its_password() -> None:
    port = free_port()  # nothing listens there
    code, output = relay("--listen", f"127.0.0.1:{free_port()}", "--cluster", f"redis://me:hunter2@127.0.0.1:{port}")
    assert code != 0
    assert f"cannot reach Redis at 127.0.0.1:{port}" in output and "start redis-server" in output
    assert "hunter2" not in output and "Traceback" not in output


def test_a_wrong_redis_password_is_said_without_it(redis_servers: Callable[..., RedisServer]) -> None:
    server = redis_servers(args=["--requirepass", "s3cret-pass"])
    code, output = relay("--listen", f"127.0.0.1:{free_port()}", "--cluster",
                         f"redis://default:badpw-42@127.0.0.1:{server.port}")
    assert code != 0 and f"cannot reach Redis at 127.0.0.1:{server.port}" in output, output
    assert "badpw-42" not in output and "s3cret" not in output and "Traceback" not in output
