"""The lean baseline: the same ChatQnA pipeline by hand, with no framework at all.

Raw ASGI on uvicorn (uvloop + httptools), one pooled `aiohttp` session, orjson, the five calls in
sequence, the same request and answer shapes as `pipeline.py`, and each network read of the LLM's
stream forwarded in one write. It is the floor a framework's overhead is measured against, so it
is written to be fast, not to be complete: no validation, no metrics, no logging.

    python benchmarks/lean.py --port 8901 --backends guardrail=http://...,llm=http://...
"""

import argparse
import sys
import time
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
import uvicorn

if TYPE_CHECKING:  # the ASGI types only: no framework at run time
    from starlette.types import Receive, Scope, Send

PROMPT = (
    "### You are a helpful, respectful and honest assistant. Use the search results to answer.\n"
    "### Search results: {context}\n### Question: {question}\n### Answer:\n"
)
_JSON = {"Content-Type": "application/json"}


class Lean:
    def __init__(self, backends: dict[str, str]) -> None:
        self.urls = backends
        self.session: aiohttp.ClientSession | None = None

    async def call(self, role: str, payload: object) -> Any:
        assert self.session is not None
        async with self.session.post(self.urls[role], data=orjson.dumps(payload), headers=_JSON) as response:
            body = await response.read()
            if response.status != 200:
                raise RuntimeError(f"{role}: HTTP {response.status}")
            return orjson.loads(body)

    async def llm_request(self, question: str, max_tokens: int, stream: bool) -> dict[str, object]:
        guarded = await self.call("guardrail", {"text": question})
        text = guarded["text"]
        embedding = await self.call("embedding", {"inputs": text})
        found = await self.call(
            "retriever", {"text": text, "embedding": embedding[0], "k": 4, "search_type": "similarity"}
        )
        texts = [d["text"] for d in found["retrieved_docs"]]
        ranked = await self.call("rerank", {"query": found["initial_query"], "texts": texts})
        best = [texts[r["index"]] for r in ranked[:1]]
        prompt = PROMPT.format(context="\n".join(best), question=found["initial_query"])
        return {
            "model": "fake-llm",
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens,
            "stream": stream,
        }

    async def __call__(self, scope: "Scope", receive: "Receive", send: "Send") -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
                elif self.session is not None:
                    await self.session.close()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        request = orjson.loads(body)
        stream = bool(request.get("stream", True))
        try:
            llm = await self.llm_request(request["messages"][-1]["content"], request.get("max_tokens") or 1024, stream)
            if not stream:
                answer = await self.call("llm", llm)
                content = answer["choices"][0]["message"]["content"]
                payload = {
                    "id": "chatqna",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": "chatqna",
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
                    ],
                }
                await _respond(send, 200, orjson.dumps(payload))
                return
        except Exception as exc:
            await _respond(send, 502, orjson.dumps({"error": repr(exc)}))
            return
        assert self.session is not None
        async with self.session.post(self.urls["llm"], data=orjson.dumps(llm), headers=_JSON) as response:
            headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            pending = b""
            async for data in response.content.iter_any():
                pending += data
                cut = pending.rfind(b"\n\n")
                if cut < 0:
                    continue
                events, pending = pending[: cut + 2], pending[cut + 2 :]
                out = [_frame(event) for event in events.split(b"\n\n") if event.startswith(b"data: {")]
                if out:
                    await send({"type": "http.response.body", "body": b"".join(out), "more_body": True})
            await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})


def _frame(event: bytes) -> bytes:
    content = orjson.loads(event[6:])["choices"][0]["delta"].get("content") or ""
    return f"data: {content.encode()!r}\n\n".encode()


async def _respond(send: "Send", status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--backends", required=True)
    args = parser.parse_args()
    backends = dict(item.split("=", 1) for item in args.backends.split(","))
    print(f"lean on {args.host}:{args.port}", file=sys.stderr, flush=True)
    uvicorn.run(Lean(backends), host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
