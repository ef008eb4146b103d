import pytest

from megaservice import _compat


def test_token_frames_are_python_bytes_reprs_as_chatqna_uis_expect():
    assert _compat.opea_token_frame(" Deep") == "data: b' Deep'\n\n"
    assert _compat.opea_token_frame("it's") == 'data: b"it\'s"\n\n'
    assert _compat.opea_token_frame("你") == "data: b'\\xe4\\xbd\\xa0'\n\n"


def test_extract_chunk_str_strips_the_framing():
    assert _compat.extract_chunk_str("data: b'example test.'\n\n") == "example test."
    assert _compat.extract_chunk_str("data: [DONE]\n\n") == ""


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'data: {"choices": [{"delta": {"content": " hi"}}]}\n\n', (" hi", False)),
        (b'data: {"choices": [{"text": " hi"}]}\n\n', (" hi", False)),
        (b'data: {"token": {"text": " hi"}}\n\n', (" hi", False)),
        (b"data: b' hi'\n\n", (" hi", False)),
        (b"data: [DONE]\n\n", ("", True)),
        (b" bare text", (" bare text", False)),
        (b": keep-alive\n\n", ("", False)),
    ],
)
def test_event_text_understands_every_framing(raw, expected):
    assert _compat.event_text(raw) == expected


def test_split_tokens_keeps_surrounding_spaces():
    assert _compat.split_tokens(" OPEA is great. ~~~") == [" OPEA ", "is ", "great. ", "~~~"]


async def _source(batches):
    for batch in batches:
        yield batch


@pytest.mark.anyio
async def test_sync_generator_hook_runs_on_the_event_loop_thread():
    import threading

    seen_threads = set()

    def hook(gen, *, suffix):
        for item in gen:
            seen_threads.add(threading.get_ident())
            yield item + suffix

    out = [x async for x in _compat.drive_sync_generator(hook, _source([["a"], ["b"]]), {"suffix": "!"})]
    assert out == [["a!"], ["b!"]]
    assert seen_threads == {threading.get_ident()}


@pytest.mark.anyio
async def test_what_arrived_together_leaves_together():
    def hook(gen):
        for item in gen:
            yield item.upper()
            if item == "b":
                yield "extra"
        yield "end"

    out = [x async for x in _compat.drive_sync_generator(hook, _source([["a", "b"], ["c"], []]), {})]
    assert out == [["A", "B", "extra"], ["C"], ["end"]]


@pytest.mark.anyio
async def test_abandoning_a_bridged_stream_runs_the_hooks_finally():
    closed = []

    def hook(gen):
        try:
            yield from gen
        finally:
            closed.append(True)

    stream = _compat.drive_sync_generator(hook, _source([["a"], ["b"], ["c"]]), {})
    assert await anext(stream) == ["a"]
    await stream.aclose()
    assert closed == [True]


@pytest.mark.anyio
async def test_a_failing_hook_raises_on_the_async_side_after_what_it_yielded():
    def hook(gen):
        for item in gen:
            if item == "bad":
                raise ValueError("bad hook")
            yield item

    out = []
    with pytest.raises(ValueError, match="bad hook"):
        async for batch in _compat.drive_sync_generator(hook, _source([["a", "bad"]]), {}):
            out.append(batch)  # noqa: PERF401  # kept up to the failure
    assert out == [["a"]]


@pytest.mark.anyio
async def test_a_hook_that_pulls_after_the_end_keeps_getting_stop_iteration():
    def hook(gen):
        yield from gen
        yield from gen
        yield "done"

    out = [x async for x in _compat.drive_sync_generator(hook, _source([["a"]]), {})]
    assert out == [["a"], ["done"]]
