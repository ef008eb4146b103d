"""OPEA's dynamic batching: handlers queue their requests; the service hands each queue to one function.

A handler appends `{"request": ..., "response": future}` to `service.request_buffer[key]` under
`service.buffer_lock` and awaits the future. Every `dynamic_batching_timeout` seconds,
`process_batches` takes up to `dynamic_batching_max_batch_size` entries of each key and awaits
`service.dynamic_batching_infer(key, batch)`, whose results (in order) resolve the futures; if it
raises, every future of the batch gets the error, and batching goes on.
"""

import asyncio
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

__all__ = ["Batched", "RequestBuffer", "process_batches"]

RequestBuffer = defaultdict[Any, deque[dict[str, Any]]]
"""Queued requests by key (OPEA uses the `ServiceType`)."""


class Batched(Protocol):
    """What `process_batches` reads of a service (a `MicroService` with `dynamic_batching=True`)."""

    buffer_lock: asyncio.Lock
    request_buffer: RequestBuffer
    dynamic_batching_timeout: int
    dynamic_batching_max_batch_size: int

    async def dynamic_batching_infer(self, service_type: Any, batch: list[dict[str, Any]]) -> list[Any]:
        """Process one batch; one result per request, in order."""


async def process_batches(service: Batched) -> None:
    """Every `dynamic_batching_timeout` seconds, hand what is queued to `dynamic_batching_infer`; forever."""
    while True:
        await asyncio.sleep(service.dynamic_batching_timeout)
        async with service.buffer_lock:
            batches = {}
            for key, buffer in service.request_buffer.items():
                size = min(len(buffer), service.dynamic_batching_max_batch_size)
                if size:
                    batches[key] = [buffer.popleft() for _ in range(size)]
        for key, batch in batches.items():
            await _run_batch(service.dynamic_batching_infer, key, batch)


async def _run_batch(
    infer: Callable[[Any, list[dict[str, Any]]], Awaitable[list[Any]]], key: Any, batch: list[dict[str, Any]]
) -> None:
    try:
        results = await infer(key, batch)
    except Exception as exc:  # noqa: BLE001  # the waiting handlers get the error, the processor lives on
        for item in batch:
            if not item["response"].done():
                item["response"].set_exception(exc)
        return
    for item, result in zip(batch, results, strict=False):
        if not item["response"].done():
            item["response"].set_result(result)
