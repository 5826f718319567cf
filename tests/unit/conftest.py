"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from app.main import create_app
from tests.factories import memory_container


@pytest.fixture
async def client() -> AsyncIterator[AsyncTestClient[Any]]:
    """A test client of a bridge on the memory backend, with its default settings."""
    async with AsyncTestClient(app=create_app(memory_container())) as test_client:
        yield test_client
