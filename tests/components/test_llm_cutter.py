"""EventCutter: an SSE byte stream let out up to its last complete event, however the network cut it."""

import pytest

from megaservice._pipeline.relay import MAX_EVENT_BYTES
from megaservice.components.llm.cutter import EventCutter
from megaservice.exceptions import UpstreamProtocolError

EVENTS = [b'data: {"n": %d}\n\n' % i for i in range(20)] + [b"data: [DONE]\n\n"]
STREAM = b"".join(EVENTS)


def cut(pieces: list[bytes]) -> list[bytes]:
    cutter = EventCutter("model-server", "http://m/v1/chat/completions")
    out = [cutter.feed(piece) for piece in pieces]
    return [*out, cutter.flush()]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 16, 64, len(STREAM)])
def test_every_way_of_cutting_the_stream_gives_it_back_whole_and_only_in_complete_events(size):
    pieces = [STREAM[i : i + size] for i in range(0, len(STREAM), size)]
    out = cut(pieces)
    assert b"".join(out) == STREAM
    sent = b""
    for piece in out:
        sent += piece
        assert sent in (b"".join(EVENTS[:n]) for n in range(len(EVENTS) + 1))  # never half an event


def test_a_read_holding_many_events_goes_out_as_one_piece():
    assert cut([STREAM]) == [STREAM, b""]
    assert cut([STREAM + b"data: {"]) == [STREAM, b"data: {"]  # the unended last event, at the end


def test_crlf_streams_and_bare_text_are_cut_by_the_orchestrators_reader():
    crlf = [e.replace(b"\n", b"\r\n") for e in EVENTS[:3]]
    out = cut([crlf[0] + crlf[1][:5], crlf[1][5:] + crlf[2]])
    assert b"".join(out).replace(b"\r\n", b"\n") == b"".join(EVENTS[:3])
    assert cut([b"Hello", b" world"]) == [b"Hello", b" world", b""]  # not SSE: passed on as it comes


def test_an_event_that_never_ends_is_refused_once_it_is_too_long():
    cutter = EventCutter("model-server", "http://m/v1/chat/completions")
    cutter.feed(b"data: ")
    with pytest.raises(UpstreamProtocolError, match="longer than") as refused:
        cutter.feed(b"x" * MAX_EVENT_BYTES)
    assert refused.value.node == "model-server"
