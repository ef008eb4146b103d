import pytest

from megaservice.sse import EventParser, EventSplitter, encode_event, parse_event

STREAM = b'data: {"a": 1}\n\ndata: hello\ndata: world\n\n: comment\n\nevent: error\ndata: x\n\ndata: [DONE]\n\n'


@pytest.mark.parametrize("cut", range(1, len(STREAM)))
def test_parser_handles_any_chunk_boundary(cut):
    parser = EventParser()
    events = parser.feed(STREAM[:cut]) + parser.feed(STREAM[cut:]) + parser.flush()
    assert [(e.event, e.data) for e in events] == [
        (None, '{"a": 1}'),
        (None, "hello\nworld"),
        ("error", "x"),
        (None, "[DONE]"),
    ]


@pytest.mark.parametrize("cut", range(1, len(STREAM)))
def test_splitter_yields_each_raw_event_whole(cut):
    splitter = EventSplitter()
    raw = splitter.feed(STREAM[:cut]) + splitter.feed(STREAM[cut:])
    assert b"".join(raw) == STREAM
    assert all(event.endswith(b"\n\n") for event in raw)
    assert len(raw) == 5


def test_crlf_streams_are_split_into_events():
    splitter = EventSplitter()
    events = splitter.feed(b"data: a\r") + splitter.feed(b"\n\r\ndata: b\r\n\r\n")
    assert [parse_event(e).data for e in events] == ["a", "b"]


def test_an_event_ending_in_two_carriage_returns_is_complete_at_once():
    # regression (issue 14): a CR-only stream held each event back until the next network chunk
    splitter = EventSplitter()
    assert [parse_event(e).data for e in splitter.feed(b"data: a\r\r")] == ["a"]
    assert [parse_event(e).data for e in splitter.feed(b"data: b\r\r")] == ["b"]
    assert splitter.pending == 0


@pytest.mark.parametrize("ending", [b"\r\r", b"\r\n\r\n", b"\n\n", b"\r\n\r"])
@pytest.mark.parametrize("cut", range(1, 12))
def test_every_line_ending_gives_the_same_events_at_any_boundary(ending, cut):
    stream = b"data: one" + ending + b"data: two" + ending
    splitter = EventSplitter()
    events = splitter.feed(stream[:cut]) + splitter.feed(stream[cut:])
    assert [parse_event(e).data for e in events] == ["one", "two"]
    assert splitter.flush() == b""


def test_bare_text_streams_pass_through_chunk_by_chunk():
    splitter = EventSplitter()
    assert splitter.feed(b" OPEA") == [b" OPEA"]
    assert splitter.feed(b" is", complete=False) == []
    assert splitter.feed(b" great.") == [b" is great."]


def test_an_unterminated_last_event_is_flushed():
    parser = EventParser()
    assert parser.feed(b"data: tail") == []
    assert [e.data for e in parser.flush()] == ["tail"]


def test_encode_event_splits_multiline_data():
    assert encode_event("a\nb", event="msg") == b"event: msg\ndata: a\ndata: b\n\n"
    assert parse_event(encode_event("a\nb")).data == "a\nb"
