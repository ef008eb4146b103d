from collections.abc import AsyncIterator

import pytest

from megaservice.client import close_client


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # aiohttp and uvloop are asyncio-only


@pytest.fixture
async def upstream_client() -> AsyncIterator[None]:
    """Close the loop's pooled upstream client after the test (it is per event loop)."""
    yield
    await close_client()
