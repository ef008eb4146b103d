"""When a started service is ready: its `/v1/ready` answers 200 (components, the megaservice), or its own check."""

import asyncio
import importlib
from collections.abc import Awaitable, Callable
from pathlib import Path

from megaservice.client import UpstreamClient
from megaservice.exceptions import UpstreamError
from megaservice.resilience import Timeout

__all__ = ["Check", "http_ready", "postgres_ready"]

Check = Callable[[], Awaitable[bool]]
"""Whether a service is ready now (never raises for "not yet")."""

_PROBE_TIMEOUT = Timeout(connect=1.0, first_byte=2.0, read=2.0, total=3.0)


def http_ready(client: UpstreamClient, name: str, base_url: str) -> Check:
    """A check that `GET {base_url}/v1/ready` answers 2xx."""
    url = f"{base_url}/v1/ready"

    async def check() -> bool:
        try:
            await client.get(name, url, timeout=_PROBE_TIMEOUT)
        except UpstreamError:
            return False
        return True

    return check


def postgres_ready(data_dir: Path) -> Check:
    """A check that the embedded PostgreSQL of `data_dir` accepts connections (its component's own probe)."""
    module = importlib.import_module("megaservice.components.postgres")
    probe: Callable[[Path], bool] = module.accepting_connections

    async def check() -> bool:
        return await asyncio.to_thread(probe, data_dir)

    return check
