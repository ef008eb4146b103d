"""Small ASGI fakes of every pipeline role, for tests and demos (ours and our users').

Each fake answers any POST with its role's wire format (TEI shapes for embedding and rerank, the
OPEA retriever shape, the OpenAI chat format for the LLM), and records what it received. Serve one
on a real socket with `megaservice.testing.serve(fake)`.
"""

import asyncio
import math
import re
import time
import zlib
from collections.abc import Sequence
from typing import Any

import orjson
from starlette.types import Message, Receive, Scope, Send

__all__ = ["FakeEmbedding", "FakeGuardrail", "FakeLLM", "FakeReranker", "FakeRetriever", "FakeService"]

_JSON = [(b"content-type", b"application/json")]
_SSE = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
_WORD = re.compile(r"\w+")

DEFAULT_DOCUMENTS = (
    "megaservice runs GenAI pipelines as HTTP microservices and orchestrates them as a DAG.",
    "A retriever finds the documents closest to the question's embedding in a vector store.",
    "A reranker scores each retrieved passage against the question and keeps the best ones.",
    "The LLM answers the question grounded in the documents the pipeline retrieved.",
)


async def _read_body(receive: Receive) -> bytes | None:
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        body += message.get("body", b"")
        if not message.get("more_body", False):
            return bytes(body)


class FakeService:
    """Base of the fakes: an ASGI app that records request bodies and answers JSON.

    **Parameters:**

    * **status** - HTTP status of every answer (default 200).
    * **delay** - seconds to wait before answering.
    * **record** - keep every request in `requests`/`headers` (turn off for long runs: benchmarks).
    """

    def __init__(self, *, status: int = 200, delay: float = 0.0, record: bool = True) -> None:
        self.status = status
        self.delay = delay
        self.record = record
        self.requests: list[Any] = []
        self.headers: list[dict[str, str]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one ASGI call (lifespan, health GET, or a POST handled by `handle`)."""
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        if scope["type"] != "http":
            return
        if scope["method"] == "GET":
            await self.send_json(send, {"status": "ok"})
            return
        body = await _read_body(receive)
        if body is None:
            return
        request = orjson.loads(body) if body else None
        if self.record:
            self.requests.append(request)
            self.headers.append({k.decode(): v.decode() for k, v in scope["headers"]})
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.status >= 300:
            await self.send_json(send, {"detail": f"fake failure {self.status}"}, status=self.status)
            return
        await self.handle(request, scope, receive, send)

    async def handle(self, request: Any, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one request (subclasses)."""
        await self.send_json(send, request)

    @staticmethod
    async def send_json(send: Send, payload: Any, status: int = 200) -> None:
        """Send a complete JSON response."""
        body = orjson.dumps(payload)
        headers = [*_JSON, (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _words(text: str) -> set[str]:
    return {w.lower() for w in _WORD.findall(text)}


def _hash_embedding(text: str, dim: int) -> list[float]:
    """A deterministic bag-of-words vector: texts sharing words get close vectors."""
    vector = [0.0] * dim
    for word in _words(text):
        vector[zlib.crc32(word.encode()) % dim] += 1.0
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]


class FakeEmbedding(FakeService):
    """TEI `/embed` (`{"inputs": ...}` → `[[floats]]`) and OpenAI `/v1/embeddings` (`{"input": ...}`)."""

    def __init__(self, *, dim: int = 8, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dim = dim

    async def handle(self, request: Any, scope: Scope, receive: Receive, send: Send) -> None:  # noqa: D102
        if "input" in request:
            texts = request["input"] if isinstance(request["input"], list) else [request["input"]]
            data = [
                {"index": i, "object": "embedding", "embedding": _hash_embedding(t, self.dim)}
                for i, t in enumerate(texts)
            ]
            await self.send_json(send, {"object": "list", "model": request.get("model"), "data": data, "usage": None})
            return
        inputs = request.get("inputs", request.get("text", ""))
        texts = inputs if isinstance(inputs, list) else [inputs]
        await self.send_json(send, [_hash_embedding(t, self.dim) for t in texts])


class FakeRetriever(FakeService):
    """OPEA retriever: `{"text", "embedding", "k", ...}` → `{"retrieved_docs": [...], "initial_query": text}`."""

    def __init__(self, documents: Sequence[str] = DEFAULT_DOCUMENTS, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.documents = list(documents)

    async def handle(self, request: Any, scope: Scope, receive: Receive, send: Send) -> None:  # noqa: D102
        query = str(request.get("text", ""))
        k = int(request.get("k", 4))
        docs = [{"id": f"doc{i}", "text": d, "downstream_black_list": []} for i, d in enumerate(self.documents[:k])]
        await self.send_json(send, {"id": "searched", "retrieved_docs": docs, "initial_query": query, "top_n": 1})


class FakeReranker(FakeService):
    """TEI `/rerank`: `{"query", "texts"}` → `[{"index", "score"}]`, best first (score: shared words)."""

    async def handle(self, request: Any, scope: Scope, receive: Receive, send: Send) -> None:  # noqa: D102
        query = _words(str(request.get("query", "")))
        texts = request.get("texts", [])
        scores = [len(query & _words(t)) / (len(query) or 1) for t in texts]
        ranked = sorted(range(len(texts)), key=lambda i: -scores[i])
        await self.send_json(send, [{"index": i, "score": round(scores[i], 4)} for i in ranked])


class FakeGuardrail(FakeService):
    """A guardrail: `{"text"}` → `{"text"}`, or a refusal with `downstream_black_list: [".*"]` if a word is banned."""

    REFUSAL = "Violated policies: bias, please check your input."

    def __init__(self, banned: Sequence[str] = ("stupid",), *, suffix: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.banned = {w.lower() for w in banned}
        self.suffix = suffix

    async def handle(self, request: Any, scope: Scope, receive: Receive, send: Send) -> None:  # noqa: D102
        text = str(request.get("text", ""))
        if _words(text) & self.banned:
            await self.send_json(send, {"text": self.REFUSAL, "downstream_black_list": [".*"]})
            return
        await self.send_json(send, {"text": text + self.suffix, "downstream_black_list": []})


class FakeLLM(FakeService):
    """An OpenAI-compatible chat server (vLLM, TGI, Ollama, llama.cpp all speak this).

    **Parameters:**

    * **tokens** - the answer, token by token (default: a sentence built from the prompt's last words).
    * **token_delay** - seconds between two streamed tokens.
    * **prefill_delay** - seconds before the response headers (queueing + prefill of a real server).
    * **models** - the models it serves: listed by `GET /v1/models`, the first one answering a request
      that names none, and a request naming another one refused with OpenAI's 404 `model_not_found`
      (default: any model is answered, `fake-llm` is listed).
    * **hold_after** - stream this many tokens, then hold the rest until `release()` is called (or the
      client leaves): a generation still in progress, for exactly as long as a test needs.

    `cancelled` counts streams the client dropped before the end; `active` counts streams in progress;
    `model_lists` counts `GET …/models` requests (answered with `status` when that is an error).
    """

    def __init__(
        self,
        tokens: Sequence[str] | None = None,
        *,
        token_delay: float = 0.0,
        prefill_delay: float = 0.0,
        models: Sequence[str] | None = None,
        hold_after: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.hold_after = hold_after
        self._released = asyncio.Event()
        self.tokens = list(tokens) if tokens is not None else None
        self.token_delay = token_delay
        self.prefill_delay = prefill_delay
        self.models = list(models) if models is not None else None
        self.cancelled = 0
        self.completed = 0
        self.active = 0
        self.model_lists = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer `GET …/models` with the model list; everything else as every fake does."""
        if scope["type"] == "http" and scope["method"] == "GET" and scope["path"].endswith("/models"):
            self.model_lists += 1
            if self.status >= 300:
                await self.send_json(send, _error(f"fake failure {self.status}", "server_error"), self.status)
                return
            listed = [
                {"id": m, "object": "model", "created": 0, "owned_by": "megaservice"}
                for m in self.models or ["fake-llm"]
            ]
            await self.send_json(send, {"object": "list", "data": listed})
            return
        await super().__call__(scope, receive, send)

    def release(self) -> None:
        """Let the streams held after `hold_after` tokens go on (and later ones not stop)."""
        self._released.set()

    def answer_tokens(self, request: Any) -> list[str]:
        """The tokens of the answer to `request`: the given tokens, or the first document of a RAG prompt."""
        if self.tokens is not None:
            return self.tokens
        messages = request.get("messages") or [{"content": request.get("prompt", "")}]
        prompt = str(messages[-1].get("content", "")) if isinstance(messages, list) else str(messages)
        context = prompt.partition("Search results:")[2].strip()
        if context:
            answer = "Based on the retrieved documents: " + context.splitlines()[0].strip()
        else:
            answer = "I have no documents about that."
        return [f" {word}" for word in answer.split()]

    async def handle(self, request: Any, scope: Scope, receive: Receive, send: Send) -> None:  # noqa: D102
        if self.prefill_delay:
            await asyncio.sleep(self.prefill_delay)
        model = request.get("model") or (self.models[0] if self.models else "fake-llm")
        if self.models is not None and model not in self.models:
            error = _error(f"The model `{model}` does not exist.", "invalid_request_error", code="model_not_found")
            await self.send_json(send, error, status=404)
            return
        tokens = self.answer_tokens(request)
        if not request.get("stream"):
            await self.send_json(send, _completion(model, "".join(tokens)))
            self.completed += 1
            return
        self.active += 1
        streaming = asyncio.current_task()
        assert streaming is not None
        disconnected = asyncio.Event()

        async def watch() -> None:
            message: Message = await receive()
            while message["type"] != "http.disconnect":
                message = await receive()
            disconnected.set()
            streaming.cancel()

        watcher = asyncio.get_running_loop().create_task(watch())
        try:
            await send({"type": "http.response.start", "status": 200, "headers": _SSE})
            for sent, token in enumerate(tokens):
                if sent == self.hold_after:
                    await self._released.wait()
                if self.token_delay:
                    await asyncio.sleep(self.token_delay)
                await send({"type": "http.response.body", "body": _chunk(model, token), "more_body": True})
            await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})
            self.completed += 1
        except asyncio.CancelledError:
            if not disconnected.is_set():
                raise
            self.cancelled += 1
        finally:
            self.active -= 1
            watcher.cancel()


def _chunk(model: str, token: str) -> bytes:
    payload = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": {"content": token}, "finish_reason": None}],
    }
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def _error(message: str, kind: str, *, code: str | None = None) -> dict[str, Any]:
    """An OpenAI error body."""
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _completion(model: str, text: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }
