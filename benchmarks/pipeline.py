"""The ChatQnA megaservice (guardrail → embedding → retriever → rerank → llm), written with OPEA's API.

The same file runs on megaservice and on opea-comps (`--package comps`, in the venv that has it):
only the import differs, so the numbers compare the frameworks, not two programs. It uses only
the standard library and the package under test.

    python benchmarks/pipeline.py --package megaservice --port 8900 --backends guardrail=http://...,llm=http://...
"""

import argparse
import importlib
import json
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

ROLES = ("guardrail", "embedding", "retriever", "rerank", "llm")
PROMPT = (
    "### You are a helpful, respectful and honest assistant. Use the search results to answer.\n"
    "### Search results: {context}\n### Question: {question}\n### Answer:\n"
)


def build(package: str, host: str, port: int, backends: dict[str, str]) -> Any:
    pkg = importlib.import_module(package)
    from fastapi import Request  # both frameworks are FastAPI-based

    llm_params = getattr(pkg, "LLMParams", None) or importlib.import_module(f"{package}.cores.proto.docarray").LLMParams
    st = pkg.ServiceType
    if TYPE_CHECKING:  # checked against megaservice's hooks; at run time the orchestrator of `package`
        from megaservice import ServiceOrchestrator
    else:
        ServiceOrchestrator = pkg.ServiceOrchestrator

    class ChatQnA(ServiceOrchestrator):
        def align_inputs(
            self, inputs: Any, cur_node: str, runtime_graph: Any, llm_parameters_dict: dict[str, Any], **kwargs: Any
        ) -> Any:
            kind = self.services[cur_node].service_type
            if kind == st.EMBEDDING:
                return {"inputs": inputs["text"]}
            if kind == st.RETRIEVER:
                return {**inputs, "k": 4, "search_type": "similarity"}
            if kind == st.LLM:
                return {
                    "model": "fake-llm",
                    "messages": [{"role": "user", "content": inputs["inputs"]}],
                    "max_tokens": llm_parameters_dict["max_tokens"],
                    "stream": llm_parameters_dict["stream"],
                }
            return inputs

        def align_outputs(
            self,
            data: Any,
            cur_node: str,
            inputs: Any,
            runtime_graph: Any,
            llm_parameters_dict: dict[str, Any],
            **kwargs: Any,
        ) -> Any:
            kind = self.services[cur_node].service_type
            if kind == st.EMBEDDING:
                return {"text": inputs["inputs"], "embedding": data[0]}
            if kind == st.RETRIEVER:
                return {"query": data["initial_query"], "texts": [d["text"] for d in data["retrieved_docs"]]}
            if kind == st.RERANK:
                best = [inputs["texts"][r["index"]] for r in data[:1]]
                return {"inputs": PROMPT.format(context="\n".join(best), question=inputs["query"])}
            if kind == st.LLM and not llm_parameters_dict["stream"]:
                return {"text": data["choices"][0]["message"]["content"]}
            return data

        def align_generator(self, gen: Iterable[bytes | str], **kwargs: Any) -> Iterator[str]:
            # OPEA's shape: a sync generator over the LLM's chunks, re-framed as `data: b'<token>'`.
            for chunk in gen:
                text = chunk.decode() if isinstance(chunk, bytes | bytearray) else chunk
                for event in text.split("\n\n"):
                    start, end = event.find("{"), event.rfind("}") + 1
                    if start < 0 or end <= start:
                        continue
                    content = json.loads(event[start:end])["choices"][0]["delta"].get("content")
                    if content is not None:
                        yield f"data: {content.encode()!r}\n\n"
            yield "data: [DONE]\n\n"

    orchestrator = ChatQnA()
    nodes: list[Any] = []
    for role, kind in zip(ROLES, (st.GUARDRAIL, st.EMBEDDING, st.RETRIEVER, st.RERANK, st.LLM), strict=True):
        url = backends[role]
        hostport, _, path = url.removeprefix("http://").partition("/")
        node_host, _, node_port = hostport.partition(":")
        node = pkg.MicroService(
            name=role,
            host=node_host,
            port=int(node_port),
            endpoint="/" + path,
            use_remote_service=True,
            service_type=kind,
        )
        orchestrator.add(node)
        if nodes:
            orchestrator.flow_to(nodes[-1], node)
        nodes.append(node)

    async def chatqna(request: Request) -> Any:
        data = await request.json()
        stream = bool(data.get("stream", True))
        params = llm_params(max_tokens=data.get("max_tokens") or 1024, stream=stream)
        question = data["messages"][-1]["content"]
        results, graph = await orchestrator.schedule(initial_inputs={"text": question}, llm_parameters=params)
        for value in results.values():
            if hasattr(value, "body_iterator"):
                return value
        answer = results[graph.all_leaves()[-1]]["text"]
        return {
            "id": "chatqna",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": "chatqna",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
        }

    service = pkg.MicroService(
        "ChatQnA", service_role=pkg.ServiceRoleType.MEGASERVICE, host=host, port=port, endpoint="/v1/chatqna"
    )
    service.add_route("/v1/chatqna", chatqna, methods=["POST"])
    return service


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--package", default="megaservice")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--backends", required=True, help="role=url,... for " + ", ".join(ROLES))
    args = parser.parse_args()
    backends = dict(item.split("=", 1) for item in args.backends.split(","))
    service = build(args.package, args.host, args.port, backends)
    print(f"pipeline[{args.package}] on {args.host}:{args.port}", file=sys.stderr, flush=True)
    service.start()


if __name__ == "__main__":
    main()
