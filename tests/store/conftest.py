"""Fixtures of the store tests."""

from __future__ import annotations

import aiohttp
import pytest


@pytest.fixture
async def http_session():
    """The aiohttp client session an outbox worker sends with."""
    async with aiohttp.ClientSession() as session:
        yield session
