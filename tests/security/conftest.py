from __future__ import annotations

import pytest

from tests.harness import Network


@pytest.fixture
async def net(tmp_path, database_factory):
    network = Network(tmp_path, database_factory)
    yield network
    await network.stop()
