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


def drive(hook, batches, kwargs):
    """Feed `batches` to the bridged `hook` as the relay does; return what each step gave (an error last)."""
    bridge = _compat.GeneratorBridge(hook, kwargs)
    out = []
    for batch in batches:
        given = bridge.feed(batch)
        if given:
            out.append(given)
        if bridge.error is not None:
            raise bridge.error
        if bridge.finished:
            return out
    rest = bridge.end()
    if rest:
        out.append(rest)
    return out


def test_sync_generator_hook_runs_on_the_calling_thread():
    import threading

    seen_threads = set()

    def hook(gen, *, suffix):
        for item in gen:
            seen_threads.add(threading.get_ident())
            yield item + suffix

    assert drive(hook, [["a"], ["b"]], {"suffix": "!"}) == [["a!"], ["b!"]]
    assert seen_threads == {threading.get_ident()}


def test_what_arrived_together_leaves_together():
    def hook(gen):
        for item in gen:
            yield item.upper()
            if item == "b":
                yield "extra"
        yield "end"

    assert drive(hook, [["a", "b"], ["c"], []], {}) == [["A", "B", "extra"], ["C"], ["end"]]


def test_closing_a_bridge_runs_the_hooks_finally():
    closed = []

    def hook(gen):
        try:
            yield from gen
        finally:
            closed.append(True)

    bridge = _compat.GeneratorBridge(hook, {})
    assert bridge.feed(["a"]) == ["a"]
    bridge.close()
    assert closed == [True]


def test_a_failing_hook_keeps_its_error_until_what_it_yielded_is_out():
    def hook(gen):
        for item in gen:
            if item == "bad":
                raise ValueError("bad hook")
            yield item

    bridge = _compat.GeneratorBridge(hook, {})
    assert bridge.feed(["a", "bad"]) == ["a"]
    assert isinstance(bridge.error, ValueError)
    assert bridge.finished
    with pytest.raises(ValueError, match="bad hook"):
        _compat.GeneratorBridge(hook, {}).feed(["bad"])  # nothing yielded first: raised at once


def test_a_hook_that_pulls_after_the_end_keeps_getting_stop_iteration():
    def hook(gen):
        yield from gen
        yield from gen
        yield "done"

    assert drive(hook, [["a"]], {}) == [["a"], ["done"]]
