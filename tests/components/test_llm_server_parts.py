"""The model server's parts that need no model: the text released to clients, the request rules, the queue."""

import asyncio
import threading

import anyio
import pytest

from megaservice.components.llm_server.request import DEFAULTS, read_chat_request
from megaservice.components.llm_server.runner import ModelBusy, ModelRunner
from megaservice.components.llm_server.text import TextOut
from megaservice.exceptions import InputError

USER = [{"role": "user", "content": "hi"}]


# -- text ------------------------------------------------------------------------------------------


def released(out: TextOut, pieces: list[bytes]) -> list[str]:
    return [out.feed(piece) for piece in pieces]


def test_text_without_stops_is_released_as_it_comes():
    out = TextOut()
    assert released(out, [b"Hel", b"lo", b" world"]) == ["Hel", "lo", " world"]
    assert out.flush() == ""


def test_a_character_split_over_tokens_is_released_whole():
    euro = "€".encode()
    out = TextOut()
    assert released(out, [b"a" + euro[:1], euro[1:2], euro[2:] + b"b"]) == ["a", "", "€b"]


def test_a_possible_stop_is_held_until_it_is_clear():
    out = TextOut(["END"])
    assert released(out, [b"one E", b"N", b"D two"]) == ["one ", "", ""]
    assert out.stopped
    assert out.feed(b"more") == ""
    assert out.flush() == ""


def test_held_text_that_is_not_a_stop_is_released():
    out = TextOut(["END"])
    assert released(out, [b"one E", b"NX"]) == ["one ", "ENX"]
    assert not out.stopped
    assert released(out, [b" tail E"]) == [" tail "]
    assert out.flush() == "E"


def test_the_earliest_of_several_stops_ends_the_text():
    out = TextOut(["bb", "a"])
    assert out.feed(b"xxbbya") == "xx"
    assert out.stopped


def test_a_broken_character_at_the_end_becomes_a_replacement_character():
    out = TextOut()
    assert out.feed("é".encode()[:1]) == ""
    assert out.flush() == "\ufffd"


# -- requests --------------------------------------------------------------------------------------


def test_a_minimal_request_takes_the_defaults():
    chat = read_chat_request({"messages": USER})
    assert chat.messages == USER
    assert chat.sampling == DEFAULTS
    assert (chat.max_tokens, chat.stream, chat.stop, chat.seed, chat.model) == (None, False, (), None, None)


def test_the_fields_a_request_sets_are_read():
    chat = read_chat_request(
        {
            "model": "m",
            "messages": [
                {"role": "developer", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            ],
            "max_completion_tokens": 7,
            "temperature": 0,
            "top_p": 0.5,
            "top_k": 3,
            "stop": "\n",
            "seed": 42,
            "logit_bias": {"2": -100},
            "stream": True,
            "stream_options": {"include_usage": True},
            "response_format": {"type": "json_object"},
            "user": "ignored",
        }
    )
    assert chat.messages == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "a\nb"}]
    assert (chat.model, chat.max_tokens, chat.seed, chat.stop) == ("m", 7, 42, ("\n",))
    assert chat.sampling["temperature"] == 0 and chat.sampling["top_p"] == 0.5 and chat.sampling["top_k"] == 3
    assert chat.logit_bias == {2: -100.0}
    assert chat.stream and chat.include_usage and chat.response_format == "json_object"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"messages": []}, "messages must be a non-empty list"),
        ({}, "messages must be a non-empty list"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role 'wizard'"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "tool results are not supported"),
        ({"messages": [{"role": "user"}]}, "messages[0] has no content"),
        ({"messages": [{"role": "user", "content": 3}]}, "content must be a string or a list"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "only text parts"),
        ({"messages": USER, "max_tokens": 0}, "max_tokens must be at least 1"),
        ({"messages": USER, "max_tokens": "5"}, "max_tokens must be an integer"),
        ({"messages": USER, "max_tokens": True}, "max_tokens must be an integer"),
        ({"messages": USER, "temperature": 3}, "temperature must be between 0 and 2"),
        ({"messages": USER, "top_p": "x"}, "top_p must be a number"),
        ({"messages": USER, "n": 2}, "n must be 1"),
        ({"messages": USER, "logprobs": True}, "logprobs are not supported"),
        ({"messages": USER, "tools": [{"type": "function"}]}, "tools are not supported"),
        ({"messages": USER, "stop": [1]}, "stop must be a string or a list of strings"),
        ({"messages": USER, "logit_bias": {"x": 1}}, "'x' is not a token id"),
        ({"messages": USER, "stream": "yes"}, "stream must be true or false"),
        ({"messages": USER, "stream_options": {"include_usage": True}}, "only allowed with stream: true"),
        ({"messages": USER, "response_format": {"type": "xml"}}, "response_format.type"),
        ({"messages": USER, "max_token": 5}, "unknown field(s): max_token"),
        ([1, 2], "must be a JSON object"),
    ],
)
def test_a_wrong_request_is_refused_saying_what_is_wrong(body, message):
    with pytest.raises(InputError) as caught:
        read_chat_request(body)
    assert caught.value.status_code == 400
    assert message in str(caught.value)


# -- the queue -------------------------------------------------------------------------------------


def counting(count: int, log: list[str], name: str, gate: threading.Event | None = None):
    """Blocking work emitting `count` items, waiting for `gate` first; records its start and end in `log`."""

    def produce(emit, stopped):
        log.append(f"{name} start")
        if gate is not None:
            gate.wait(10)
        done = 0
        for number in range(count):
            if stopped.is_set():
                break
            emit(f"{name}{number}")
            done += 1
        log.append(f"{name} end")
        return done

    return produce


@pytest.mark.anyio
async def test_runs_go_one_at_a_time_in_order():
    runner = ModelRunner(max_waiting=4)
    log: list[str] = []
    runs = [runner.open(counting(3, log, name)) for name in "abc"]
    assert runner.pending == 3

    async def read(run):
        return [item async for batch in run for item in batch]

    outputs = await asyncio.gather(*(read(run) for run in runs))
    assert outputs == [["a0", "a1", "a2"], ["b0", "b1", "b2"], ["c0", "c1", "c2"]]
    assert log == ["a start", "a end", "b start", "b end", "c start", "c end"]
    assert [run.result for run in runs] == [3, 3, 3]
    assert runner.pending == 0


@pytest.mark.anyio
async def test_a_full_queue_refuses_at_once():
    runner = ModelRunner(max_waiting=1)
    gate = threading.Event()
    log: list[str] = []
    first = runner.open(counting(1, log, "a", gate))
    second = runner.open(counting(1, log, "b"))
    with pytest.raises(ModelBusy) as caught:
        runner.open(counting(1, log, "c"))
    assert caught.value.status_code == 503
    gate.set()
    with anyio.fail_after(10):
        assert [item async for batch in first for item in batch] == ["a0"]
    second.close()
    with anyio.fail_after(10):
        while runner.pending:
            await asyncio.sleep(0.01)
    assert log == ["a start", "a end"]  # the closed run never ran


@pytest.mark.anyio
async def test_closing_a_run_stops_its_work_and_frees_the_model():
    runner = ModelRunner(max_waiting=1)
    gate = threading.Event()
    log: list[str] = []
    endless = runner.open(counting(10**9, log, "a", gate))
    batch = None
    with anyio.fail_after(10):
        gate.set()
        batch = await anext(aiter(endless))
        endless.close()
        after = runner.open(counting(2, log, "b"))
        assert [item async for b in after for item in b] == ["b0", "b1"]
    assert batch and batch[0] == "a0"
    assert log == ["a start", "a end", "b start", "b end"]


@pytest.mark.anyio
async def test_what_the_work_raises_reaches_the_reader():
    runner = ModelRunner(max_waiting=1)

    def failing(emit, stopped):
        emit("x")
        raise RuntimeError("model broke")

    run = runner.open(failing)
    seen = []
    with pytest.raises(RuntimeError, match="model broke"):
        async for batch in run:
            seen.extend(batch)
    assert seen == ["x"]
    assert runner.pending == 0
