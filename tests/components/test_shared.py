"""What every component uses: dynamic batching, blocking work off the loop, optional dependencies."""

import asyncio
import threading

import pytest

from megaservice.components._shared.batching import Batcher, BatcherFull
from megaservice.components._shared.blocking import Loader, Worker
from megaservice.components._shared.deps import package_dir, require
from megaservice.exceptions import MissingDependencyError

pytestmark = pytest.mark.anyio


class Model:
    """Doubles numbers; records its batches and the thread it ran in."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.batches: list[list[int]] = []
        self.threads: set[int] = set()
        self.fail_on = fail_on
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, batch: list[int]) -> list[int]:
        self.gate.wait(5)
        self.threads.add(threading.get_ident())
        self.batches.append(list(batch))
        if self.fail_on in batch:
            raise ValueError(f"cannot take {self.fail_on}")
        return [2 * x for x in batch]


async def test_concurrent_requests_share_batches_and_get_their_own_answers_in_order():
    model = Model()
    model.gate.clear()  # the first batch waits: the others pile up meanwhile
    batcher = Batcher(model, Worker(), max_batch=4)
    first = asyncio.ensure_future(batcher.submit([0]))
    await asyncio.sleep(0.05)
    rest = [asyncio.ensure_future(batcher.submit(list(range(10 * i, 10 * i + 3)))) for i in range(1, 4)]
    await asyncio.sleep(0.05)
    model.gate.set()
    results = await asyncio.gather(first, *rest)
    await batcher.aclose()
    assert results == [[0], [20, 22, 24], [40, 42, 44], [60, 62, 64]]
    assert model.batches[0] == [0]
    assert all(len(batch) <= 4 for batch in model.batches)
    assert len(model.batches) == 1 + 3  # 9 items in batches of at most 4: three batches, not nine calls
    assert threading.get_ident() not in model.threads  # never on the event loop's thread


async def test_a_failing_batch_fails_its_requests_only():
    model = Model(fail_on=13)
    batcher = Batcher(model, Worker(), max_batch=2)
    ok, bad = await asyncio.gather(batcher.submit([1]), batcher.submit([13]), return_exceptions=True)
    after = await batcher.submit([5])
    await batcher.aclose()
    assert isinstance(bad, ValueError)
    assert ok == [2] or isinstance(ok, ValueError)  # shared the failing batch, or not
    assert after == [10]


async def test_too_many_pending_items_are_refused_at_once():
    model = Model()
    model.gate.clear()
    batcher = Batcher(model, Worker(), max_batch=2, max_pending=4)
    running = asyncio.ensure_future(batcher.submit([1, 2, 3, 4]))
    await asyncio.sleep(0.05)
    with pytest.raises(BatcherFull) as refused:
        await batcher.submit([5, 6, 7])
    model.gate.set()
    assert await running == [2, 4, 6, 8]
    await batcher.aclose()
    assert refused.value.status_code == 503


async def test_an_empty_request_needs_no_model():
    model = Model()
    assert await Batcher(model, Worker()).submit([]) == []
    assert model.batches == []


def test_a_missing_optional_dependency_names_the_install_line():
    with pytest.raises(MissingDependencyError, match=r"pip install 'megaservice\[clip\]'"):
        require("no_such_module_here", "clip")
    with pytest.raises(MissingDependencyError, match="pip install --no-deps some-model"):
        package_dir("no_such_package_here", "pip install --no-deps some-model")
    assert package_dir("megaservice", "-").name == "megaservice"


async def test_a_loader_keeps_a_failed_load_and_ready_raises_it():
    state = {"loaded": False}

    def broken() -> None:
        raise OSError("no weights in /models/x")

    failing = Loader(Worker(), broken, lambda: state["loaded"])
    assert failing.ready() is False  # not loaded yet, nothing failed yet
    with pytest.raises(OSError, match="no weights"):
        await failing.start()
    with pytest.raises(OSError, match="no weights"):
        failing.ready()

    loading = Loader(Worker(), lambda: state.update(loaded=True), lambda: state["loaded"])
    await loading.start()
    assert loading.ready() is True
