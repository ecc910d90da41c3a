from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.procs import remove, short_home
from tests.support.deployment import Deployment, deployed


@pytest.fixture
def deployment() -> Iterator[Deployment]:
    with deployed() as deployment:
        yield deployment


@pytest.fixture
def client_home() -> Iterator[Path]:
    home = short_home("tc")
    yield home
    remove(home)
