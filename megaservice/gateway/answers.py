"""The answers of the chat routes, in their two framings, with their sources and refusals.

OpenAI (`/v1/chat/completions`):

    not streamed   the LLM's chat completion as it answered (its `model`, `usage`, ...), plus
                   `"sources": [{index, source, chunk, page, score, text}, ...]`
    streamed       the LLM's `chat.completion.chunk` events as they arrive, then one more chunk
                   with `"choices": []` and the `sources` (shaped like OpenAI's usage chunk, so
                   OpenAI clients accept it), then `data: [DONE]`
    refused        the guardrail's text as the content (and OpenAI's `refusal`), `finish_reason:
                   "content_filter"`, `"refused_by": "<service>"`; streamed as chunks the same way

OPEA (`/v1/chatqna`, as GenAIExamples' ChatQnA answers, so its UIs keep working):

    not streamed   OPEA's `ChatCompletionResponse` (`model: "chatqna"`), plus `sources`; a refusal
                   is the guardrail's text, with `choices[0].metadata.refused_by`
    streamed       one `data: b'<token>'` frame per token, then `data: [DONE]`, nothing else:
                   OPEA's React UI appends any other event's data to the answer, so the sources
                   of a streamed answer are on the OpenAI route (or ask without streaming)

The first event of the LLM's stream is timed: the LLM's time to first token, from its call
(`megaservice_llm_first_token_latency`, `megaservice.gateway.metrics`).

An error after the stream started ends it with an `event: error` event (no sources, no `[DONE]`)
whose body names the node and has OpenAI's `error` object (so the openai client raises).
"""

import logging
import time
from collections.abc import AsyncIterator, Collection, Iterator, Mapping
from typing import Any

import orjson

from megaservice import _compat
from megaservice.gateway.metrics import gateway_metrics
from megaservice.gateway.turn import Turn

__all__ = ["DONE", "answer", "completion_text", "refusal", "refusal_stream", "relay", "text_stream"]

logger = logging.getLogger("megaservice.gateway")

DONE = b"data: [DONE]\n\n"
_DATA_JSON = b"data: {"


def completion_text(data: Any) -> str:
    """The text of an LLM's (or a node's) non-streamed answer: a chat/text completion, or `{"text"}`."""
    if isinstance(data, Mapping):
        choices = data.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], Mapping):
            message = choices[0].get("message")
            if isinstance(message, Mapping):
                return str(message.get("content") or "")
            return str(choices[0].get("text") or "")
        if isinstance(data.get("text"), str):
            return str(data["text"])
    return ""


# -- not streamed ---------------------------------------------------------------------------------


def answer(turn: Turn, result: Any) -> dict[str, Any]:
    """The answer to a non-streamed request, from the pipeline's last result."""
    if turn.framing == "opea":
        usage = result.get("usage") if isinstance(result, Mapping) else None
        return _opea_response(turn, completion_text(result), usage)
    if isinstance(result, Mapping) and isinstance(result.get("choices"), list):
        return {**result, "sources": turn.source_dicts()}  # the LLM's own completion, as it answered
    return {**_completion(turn, completion_text(result), "stop"), "sources": turn.source_dicts()}


def refusal(turn: Turn) -> dict[str, Any]:
    """The answer to a non-streamed request a guardrail refused."""
    text = turn.refusal or ""
    if turn.framing == "opea":
        response = _opea_response(turn, text, None)
        response["choices"][0]["metadata"] = {"refused_by": turn.refused_by}
        return response
    completion = _completion(turn, text, "content_filter")
    completion["choices"][0]["message"]["refusal"] = text
    return {**completion, "sources": [], "refused_by": turn.refused_by}


def _completion(turn: Turn, text: str, finish_reason: str) -> dict[str, Any]:
    return {
        "id": turn.id,
        "object": "chat.completion",
        "created": turn.created,
        "model": turn.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }


def _opea_response(turn: Turn, text: str, usage: Any) -> dict[str, Any]:
    """OPEA's `ChatCompletionResponse` (its fields and defaults), plus the sources."""
    return {
        "id": turn.id,
        "object": "chat.completion",
        "created": turn.created,
        "model": turn.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "audio": None},
                "finish_reason": "stop",
                "metadata": None,
            }
        ],
        "usage": usage
        if isinstance(usage, Mapping)
        else {"prompt_tokens": 0, "total_tokens": 0, "completion_tokens": 0},
        "sources": turn.source_dicts(),
    }


# -- streamed -------------------------------------------------------------------------------------


def relay(events: AsyncIterator[Any], turn: Turn, *, nodes: Collection[str] = ()) -> AsyncIterator[bytes | str]:
    """The LLM's stream (raw SSE events, or OPEA frames after an output guardrail) in the turn's framing.

    An async `align_generator` hook: the LLM node failing midway is raised through here, and the
    core ends the stream with its error event (the node, OpenAI's `error` object). An error event
    the LLM service sends about its own upstream is passed on named by the LLM node, since its
    `node` (`model-server`) is not one of the pipeline's `nodes` (`_named_by_the_pipeline`).
    """
    if turn.framing == "opea":
        return _opea_stream(events, turn, nodes)
    return _openai_stream(events, turn, nodes)


def _first_event(turn: Turn) -> None:
    """The LLM's first event arrived now: its time to first token, from its call."""
    if turn.llm_called:
        gateway_metrics().llm_first_token_latency.observe(time.monotonic() - turn.llm_called)


async def _openai_stream(events: AsyncIterator[Any], turn: Turn, nodes: Collection[str]) -> AsyncIterator[bytes]:
    first = timing = True
    async for event in events:
        if timing:
            timing = False
            _first_event(turn)
        raw = event if isinstance(event, bytes) else str(event).encode()
        if raw.startswith(_DATA_JSON):  # an OpenAI chunk: passed on as the LLM wrote it
            if first:
                first = False
                _adopt_identity(turn, raw)
            yield raw
            continue
        if _is_error(raw):  # the LLM service's own error event (it has OpenAI's `error`): passed on
            yield _named_by_the_pipeline(raw, turn, nodes)
            await _drain(events)
            return
        text, done = _compat.event_text(raw)
        if text and not done:  # OPEA frames (a node after the LLM re-streams its text): as chunks
            delta = {"role": "assistant", "content": text} if first else {"content": text}
            first = False
            yield _chunk(turn, {"choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}]})
    yield _chunk(turn, {"choices": [], "sources": turn.source_dicts()})
    yield DONE


async def _opea_stream(events: AsyncIterator[Any], turn: Turn, nodes: Collection[str]) -> AsyncIterator[bytes | str]:
    timing = True
    async for event in events:
        if timing:
            timing = False
            _first_event(turn)
        raw = event if isinstance(event, bytes) else str(event).encode()
        if raw.startswith(_DATA_JSON):
            text = _delta_content(raw)
        elif _is_error(raw):
            yield _named_by_the_pipeline(raw, turn, nodes)
            await _drain(events)
            return
        else:
            text, done = _compat.event_text(raw)
            if done:
                continue
        if text:
            yield _compat.opea_token_frame(text)
    yield _compat.DONE_FRAME


def refusal_stream(turn: Turn) -> Iterator[bytes | str]:
    """The stream answering a request a guardrail refused: its text, marked refused, then the end."""
    return text_stream(turn, turn.refusal or "", refused=True)


def text_stream(turn: Turn, text: str, *, refused: bool = False) -> Iterator[bytes | str]:
    """A whole answer `text` as a stream in the turn's framing (a refusal: marked so)."""
    if turn.framing == "opea":
        yield _compat.opea_token_frame(text)
        yield _compat.DONE_FRAME
        return
    delta = (
        {"role": "assistant", "content": text, "refusal": text} if refused else {"role": "assistant", "content": text}
    )
    yield _chunk(turn, {"choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}]})
    stop = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "content_filter" if refused else "stop"}
    yield _chunk(turn, {"choices": [stop], "refused_by": turn.refused_by} if refused else {"choices": [stop]})
    yield _chunk(turn, {"choices": [], "sources": [] if refused else turn.source_dicts()})
    yield DONE


def _chunk(turn: Turn, fields: dict[str, Any]) -> bytes:
    payload = {"id": turn.id, "object": "chat.completion.chunk", "created": turn.created, "model": turn.model}
    return b"data: " + orjson.dumps({**payload, **fields}) + b"\n\n"


def _adopt_identity(turn: Turn, raw: bytes) -> None:
    """Take the LLM's chunk id and model for the chunks the gateway adds, so the stream is one completion."""
    try:
        chunk = orjson.loads(raw[6:].strip())
    except orjson.JSONDecodeError:
        return
    if isinstance(chunk, dict):
        if isinstance(chunk.get("id"), str):
            turn.id = chunk["id"]
        if isinstance(chunk.get("model"), str):
            turn.model = chunk["model"]
        if isinstance(chunk.get("created"), int):
            turn.created = chunk["created"]


def _delta_content(raw: bytes) -> str:
    try:
        chunk = orjson.loads(raw[6:].strip())
    except orjson.JSONDecodeError:
        return ""
    choices = chunk.get("choices") if isinstance(chunk, dict) else None
    if not choices or not isinstance(choices[0], dict):
        return ""
    delta = choices[0].get("delta")
    content = delta.get("content") if isinstance(delta, dict) else choices[0].get("text")
    return content if isinstance(content, str) else ""


def _named_by_the_pipeline(raw: bytes, turn: Turn, nodes: Collection[str]) -> bytes:
    """An error event naming a node the pipeline does not have, named by the LLM node instead.

    The LLM service names its own upstream `model-server` (it does not know the pipeline): a client
    looks for the node among the pipeline's. Its message is kept, after the LLM node's name.
    """
    _, found, data = raw.partition(b"data: ")
    try:
        body = orjson.loads(data) if found and turn.llm_node else None
    except orjson.JSONDecodeError:
        return raw
    if not isinstance(body, dict) or not isinstance(body.get("node"), str) or body["node"] in nodes:
        return raw
    message = f"{turn.llm_node}: {body.get('message', '')}"
    body.update(node=turn.llm_node, message=message)
    if isinstance(body.get("error"), dict):
        body["error"] = {**body["error"], "message": message}
    return _compat.error_frame(body)


def _is_error(raw: bytes) -> bool:
    return raw.startswith(b"event: error") or b"\nevent: error" in raw


async def _drain(events: AsyncIterator[Any]) -> None:
    """Read what is left of the stream (so its connection can be reused); nothing more goes out."""
    async for _ in events:
        pass
