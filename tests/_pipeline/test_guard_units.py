"""The unit machinery shared by the output guards (megaservice.checked_stream): cutting, ordering, bounds, closing."""

import asyncio

import pytest

from megaservice.checked_stream import CheckedUnits, ItemCutter, TextCutter, Unit

pytestmark = pytest.mark.anyio


def cut(cutter, pieces):
    units = [unit for piece in pieces for unit in cutter.feed(piece)]
    return [unit.text for unit in units + cutter.flush()]


def test_text_is_cut_at_each_sentence_end_even_inside_one_piece():
    assert cut(TextCutter(), [" One.", " Two! Three", "? Four"]) == [" One.", " Two!", " Three?", " Four"]


def test_a_number_with_a_point_in_one_piece_is_not_a_sentence_end():
    assert cut(TextCutter(), ["Pi is 3.14 or so.", " Done"]) == ["Pi is 3.14 or so.", " Done"]


def test_a_newline_after_a_sentence_starts_the_next_unit_instead_of_being_one():
    assert cut(TextCutter(), ["Title.\n", "\nBody text.\n"]) == ["Title.", "\n\nBody text.", "\n"]


def test_text_without_sentence_ends_is_cut_in_windows_at_a_space():
    text = " ".join(["word"] * 30)  # 149 characters
    units = cut(TextCutter(max_chars=40), [text])
    assert "".join(units) == text
    assert all(len(unit) < 40 for unit in units) and len(units) == 5
    assert all(unit.strip().split() == ["word"] * len(unit.split()) for unit in units)  # no word was split


def test_a_word_longer_than_the_window_is_cut_hard():
    assert cut(TextCutter(max_chars=10), ["x" * 25]) == ["x" * 10, "x" * 10, "x" * 5]


def test_items_stay_whole_and_a_unit_carries_the_unfinished_sentence_before_it():
    cutter = ItemCutter(str)
    units = [unit for item in ["Done. Project", " Fal", "con. ", "Next"] for unit in cutter.feed(item)]
    units += cutter.flush()
    assert [unit.items for unit in units] == [["Done. Project"], [" Fal", "con. "], ["Next"]]
    assert [unit.context for unit in units] == ["", " Project", " "]


class Source:
    """Text pieces that record how far they were read and whether they were closed; may fail at the end."""

    def __init__(self, pieces, error=None):
        self.pieces = list(pieces)
        self.error = error
        self.sent = 0
        self.closed = False

    def __aiter__(self):
        return self

    async def __anext__(self):
        if self.sent == len(self.pieces):
            if self.error is not None:
                raise self.error
            raise StopAsyncIteration
        self.sent += 1
        return self.pieces[self.sent - 1]

    async def aclose(self):
        self.closed = True


class Gated:
    """A check that waits for its unit's own gate; records what it started and what was cancelled."""

    def __init__(self):
        self.gates: dict[str, asyncio.Event] = {}
        self.started: list[str] = []
        self.cancelled: list[str] = []

    def gate(self, text):
        return self.gates.setdefault(text.strip(), asyncio.Event())

    async def __call__(self, unit: Unit[str]) -> str:
        self.started.append(unit.text.strip())
        try:
            await self.gate(unit.text).wait()
        except asyncio.CancelledError:
            self.cancelled.append(unit.text.strip())
            raise
        return unit.text.strip().upper()


async def spin(condition):
    for _ in range(10_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never met")


async def test_verdicts_come_out_in_order_each_as_soon_as_it_and_the_earlier_ones_are_in():
    check = Gated()
    units = CheckedUnits(Source(["a.", " b.", " c."]), TextCutter(), check, max_pending=8)
    first = asyncio.ensure_future(units.__anext__())
    await spin(lambda: len(check.started) == 3)  # all three checked at once
    check.gate("c.").set()
    check.gate("b.").set()
    for _ in range(50):
        await asyncio.sleep(0)
    assert not first.done()  # b and c are in, a is not: nothing comes out of order
    check.gate("a.").set()
    assert (await first)[1] == "A."
    assert [verdict async for _, verdict in units] == ["B.", "C."]


async def test_a_unit_does_not_wait_for_the_checks_of_later_ones():
    check = Gated()
    units = CheckedUnits(Source(["a.", " b."]), TextCutter(), check, max_pending=8)
    check.gate("a.").set()
    unit, verdict = await asyncio.wait_for(units.__anext__(), timeout=10)
    assert (unit.text, verdict) == ("a.", "A.") and check.started == ["a.", "b."]
    await units.aclose()


async def test_no_more_than_max_pending_units_are_read_ahead_and_the_source_waits():
    check = Gated()
    source = Source([f" s{i}." for i in range(10)])
    units = CheckedUnits(source, TextCutter(), check, max_pending=3)
    first = asyncio.ensure_future(units.__anext__())
    await spin(lambda: len(check.started) == 3)
    for _ in range(50):
        await asyncio.sleep(0)
    assert len(check.started) == 3 and source.sent < 10
    check.gate("s0.").set()
    assert (await first)[1] == "S0."
    await spin(lambda: len(check.started) == 4)  # the slot the consumer freed goes to the next unit
    await units.aclose()


async def test_blank_units_are_not_checked():
    calls = []

    async def check(unit):
        calls.append(unit.text)
        return True

    units = CheckedUnits(Source(["Hi.", "  "]), TextCutter(), check, max_pending=2)
    assert [(unit.text, verdict) async for unit, verdict in units] == [("Hi.", True), ("  ", None)]
    assert calls == ["Hi."]


async def test_a_failing_source_raises_after_the_units_read_before_it():
    check = Gated()
    for text in ("a.", "b."):
        check.gate(text).set()
    source = Source(["a.", " b."], error=ConnectionResetError("gone"))
    units = CheckedUnits(source, TextCutter(), check, max_pending=8)
    seen = []
    with pytest.raises(ConnectionResetError):
        async for _, verdict in units:
            seen.append(verdict)
    assert seen == ["A.", "B."] and source.closed


async def test_closing_cancels_the_checks_in_flight_and_closes_the_source():
    check = Gated()
    source = Source(["a.", " b.", " c."])
    units = CheckedUnits(source, TextCutter(), check, max_pending=8)
    check.gate("a.").set()
    await units.__anext__()
    await spin(lambda: len(check.started) == 3)
    await units.aclose()
    await spin(lambda: sorted(check.cancelled) == ["b.", "c."])
    assert source.closed
    assert [item async for item in units] == []
