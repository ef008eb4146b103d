"""Small services for the tracing tests, each run as its own process: `python tests/tracing_services.py ROLE ...`.

    retriever   POST /v1/retrieval: three documents, found inside a `tracing.span("retrieval.search")`
    llm         POST /v1/chat/completions: a chat completion with `usage`, or its SSE stream
    chatqna     a megaservice: POST /v1/chatqna runs retriever → llm (ServiceOrchestrator)

Every role also answers `GET /debug/process`: the OpenTelemetry modules imported, its threads,
whether tracing is on, and the `traceparent` headers its routes received. It listens on a free port and prints
`port N` once it accepts connections; SIGTERM stops it (the spans not yet exported are sent then).
"""

import argparse
import asyncio
import sys
import threading
from typing import Any

from starlette.requests import Request
from starlette.responses import StreamingResponse

from megaservice import LLMParams, MicroService, ServiceOrchestrator, ServiceRoleType, ServiceType, tracing

SEEN: list[str | None] = []


def retriever() -> MicroService:
    service = MicroService("retriever", service_type=ServiceType.RETRIEVER, port=0, endpoint="/v1/retrieval")

    async def retrieve(request: Request) -> dict[str, Any]:
        SEEN.append(request.headers.get("traceparent"))
        query = (await request.json())["text"]
        with tracing.span("retrieval.search", k=3) as work:
            docs = [{"text": f"document {i} about {query}"} for i in range(3)]
            work.set("megaservice.retrieved_docs", len(docs))
        return {"retrieved_docs": docs, "initial_query": query}

    service.add_route("/v1/retrieval", retrieve, methods=["POST"])
    return service


def llm() -> MicroService:
    service = MicroService("llm", service_type=ServiceType.LLM, port=0, endpoint="/v1/chat/completions")
    words = ["Tracing", " works", " across", " processes", "."]

    async def chat(request: Request) -> Any:
        SEEN.append(request.headers.get("traceparent"))
        body = await request.json()
        if body.get("stream"):

            async def events() -> Any:
                for word in words:
                    yield f'data: {{"choices": [{{"index": 0, "delta": {{"content": "{word}"}}}}]}}\n\n'
                yield "data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")
        return {
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(words)}}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16},
        }

    service.add_route("/v1/chat/completions", chat, methods=["POST"])
    return service


class ChatQnA(ServiceOrchestrator):
    def align_inputs(self, inputs: Any, cur_node: str, *args: Any, **kwargs: Any) -> Any:
        if cur_node.startswith("llm"):
            docs = "\n".join(doc["text"] for doc in inputs["retrieved_docs"])
            prompt = f"{docs}\n{inputs['initial_query']}"
            return {"messages": [{"role": "user", "content": prompt}], "stream": inputs["stream"]}
        return inputs


def chatqna(upstreams: dict[str, str]) -> MicroService:
    orchestrator = ChatQnA()
    nodes = []
    for role, service_type in (("retriever", ServiceType.RETRIEVER), ("llm", ServiceType.LLM)):
        host, port, path = _split(upstreams[role])
        node = MicroService(
            role, host=host, port=port, endpoint=path, use_remote_service=True, service_type=service_type
        )
        orchestrator.add(node)
        nodes.append(node)
    orchestrator.flow_to(nodes[0], nodes[1])
    service = MicroService("chatqna", service_role=ServiceRoleType.MEGASERVICE, port=0, endpoint="/v1/chatqna")

    async def ask(request: Request) -> Any:
        SEEN.append(request.headers.get("traceparent"))
        body = await request.json()
        params = LLMParams(stream=bool(body.get("stream")), max_tokens=16)
        results, graph = await orchestrator.schedule({"text": body["question"]}, llm_parameters=params)
        answer = results[graph.all_leaves()[-1]]
        if isinstance(answer, StreamingResponse):
            return answer
        return {"answer": answer["choices"][0]["message"]["content"]}

    service.add_route("/v1/chatqna", ask, methods=["POST"])
    return service


def _split(url: str) -> tuple[str, int, str]:
    hostport, _, path = url.removeprefix("http://").partition("/")
    host, _, port = hostport.partition(":")
    return host, int(port), "/" + path


async def debug() -> dict[str, Any]:
    return {
        "opentelemetry_modules": sorted(name for name in sys.modules if name.startswith("opentelemetry")),
        "megaservice_otel": "megaservice.tracing._otel" in sys.modules,
        "threads": sorted(thread.name for thread in threading.enumerate()),
        "tracing": tracing.tracer is not None,
        "traceparents": SEEN,
    }


async def run(service: MicroService) -> None:
    service.add_route("/debug/process", debug, methods=["GET"])
    serving = asyncio.ensure_future(service.serve())
    while not service.started:
        if serving.done():
            serving.result()
            return
        await asyncio.sleep(0.01)
    print(f"port {service.bound_port}", flush=True)
    await serving


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["retriever", "llm", "chatqna"])
    parser.add_argument("--upstream", action="append", default=[], help="role=url, for chatqna")
    args = parser.parse_args()
    if args.role == "chatqna":
        service = chatqna(dict(item.split("=", 1) for item in args.upstream))
    else:
        service = retriever() if args.role == "retriever" else llm()
    asyncio.run(run(service))


if __name__ == "__main__":
    main()
