"""`GatewayOrchestrator`: the pipeline's orchestrator with ChatQnA's hooks, each node's input shaped by its role.

The nodes are the pipeline's components (not raw TEI/vLLM as in OPEA's ChatQnA), so most answers
already fit the next node; the hooks add what the request says and record what the answers say,
in the request's `Turn` (passed to `schedule(..., turn=turn)`):

    guardrail (before the LLM)  its answer: a refusal (`downstream_black_list`, OPEA's `[".*"]`) is
                                recorded, and the nodes after it are skipped (the core does that);
                                else its text is the question from then on (a guardrail may mask
                                what it found); a black list that still lets the LLM run is no refusal
    guardrail (after the LLM)   not streamed, its refusal replaces the answer
    embedding                   gets the question as OpenAI's embedding request (`{"input"}`: what OPEA's
                                embedding service, TEI, vLLM and Ollama all take); its vector goes on
                                as OPEA's EmbedDoc (`{"text", "embedding"}`)
    retriever                   the EmbedDoc plus the request's k, search_type, ... → its documents,
                                recorded; with none, a reranker after it is skipped (as OPEA does)
    reranker                    the retriever's answer plus `top_n` → the documents it kept, recorded
    llm                         OpenAI's chat request: the conversation, the documents (the LLM
                                service puts OPEA's RAG prompt in the last user message), the
                                request's generation fields; non-streaming, its answer's text goes
                                on as `{"text"}` to a node after it (an output guardrail)

A request without a `Turn` (a caller of `schedule()` that is not the gateway) goes through unchanged.
The streaming answer is written by `align_generator` in the `Turn`'s framing (`.answers`).
The LLM node's call is timed: the pipeline's time before it (`megaservice.gateway.metrics`).
"""

import time
from collections.abc import AsyncIterator
from typing import Any

from megaservice.constants import ServiceType
from megaservice.exceptions import UpstreamProtocolError
from megaservice.gateway import answers
from megaservice.gateway.metrics import gateway_metrics
from megaservice.gateway.sources import reranked, retrieved
from megaservice.gateway.turn import Turn
from megaservice.orchestrator import ServiceOrchestrator

__all__ = ["GatewayOrchestrator", "service_name"]


def service_name(node: str) -> str:
    """The pipeline's name of a node (`guardrail/MicroService` → `guardrail`)."""
    return node.rsplit("/", 1)[0]


class GatewayOrchestrator(ServiceOrchestrator):
    """A `ServiceOrchestrator` whose hooks know the ChatQnA roles (module docstring)."""

    def _role(self, node: str) -> ServiceType:
        return self.services[node].service_type

    def align_inputs(self, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        """Shape a node's input for its role (called as `align_inputs(inputs, cur_node, graph, params, **kwargs)`)."""
        turn: Turn | None = kwargs.get("turn")
        if turn is None or not isinstance(inputs, dict):
            return inputs
        role = self._role(args[0])
        if role == ServiceType.EMBEDDING:
            return {"input": turn.question}
        if role == ServiceType.RETRIEVER:
            return {**inputs, **turn.retrieval}
        if role == ServiceType.RERANK:
            return {**inputs, "top_n": turn.top_n}
        if role in (ServiceType.LLM, ServiceType.LVM):
            turn.answered = True
            turn.llm_node = service_name(args[0])
            turn.llm_called = now = time.monotonic()
            gateway_metrics().pipeline_latency.observe(now - turn.started)
            turn.refusal = turn.refused_by = None  # a black list that let the LLM run refused nothing
            return self._llm_request(turn, inputs)
        return inputs

    def align_outputs(self, data: Any, *args: Any, **kwargs: Any) -> Any:
        """Record what a node's answer says (`align_outputs(data, cur_node, inputs, graph, params, **kwargs)`)."""
        turn: Turn | None = kwargs.get("turn")
        if turn is None:
            return data
        node, graph = args[0], args[2]
        role = self._role(node)
        if role == ServiceType.GUARDRAIL and isinstance(data, dict):
            if data.get("downstream_black_list"):
                turn.refusal = str(data.get("text") or "Refused by a guardrail.")
                turn.refused_by = service_name(node)
            elif not turn.answered and _rewrites(data.get("text"), turn.question):
                turn.question = data["text"]
                turn.rewritten = True
        elif role == ServiceType.EMBEDDING:
            return {
                "text": turn.question,
                "embedding": _vector(data, service_name(node), self.services[node].endpoint_path()),
            }
        elif role == ServiceType.RETRIEVER:
            turn.retrieved = retrieved(data)
            turn.sources = list(turn.retrieved)
            if not turn.retrieved:
                self._skip_rerankers(node, graph)
        elif role == ServiceType.RERANK:
            kept = reranked(data, turn.retrieved)
            if kept is not None:
                turn.sources = kept
        elif role in (ServiceType.LLM, ServiceType.LVM) and graph.downstream(node) and isinstance(data, dict):
            return {"text": answers.completion_text(data)}  # non-streaming, to an output guardrail
        return data

    async def align_generator(self, gen: Any, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        """Write the LLM's stream in the request's framing, the sources before the end (`answers.relay`)."""
        turn: Turn | None = kwargs.get("turn")
        source = gen if turn is None else answers.relay(gen, turn, nodes=frozenset(map(service_name, self.services)))
        async for item in source:
            yield item

    def _llm_request(self, turn: Turn, inputs: dict[str, Any]) -> dict[str, Any]:
        messages = _with_question(turn.messages, turn.question) if turn.rewritten else turn.messages
        body: dict[str, Any] = {**turn.llm, "messages": messages, "stream": turn.stream}
        model = inputs.get("model")
        if model:
            body["model"] = model
        documents = [source.text for source in turn.sources] if turn.sources is not None else []
        if documents:
            body["documents"] = documents
        return body

    def _skip_rerankers(self, node: str, graph: Any) -> None:
        """No documents: a reranker after `node` has nothing to rank; the nodes after it follow `node` directly."""
        for child in list(graph.downstream(node)):
            if self._role(child) != ServiceType.RERANK:
                continue
            for grandchild in graph.downstream(child):
                graph.add_edge(node, grandchild)
            graph.delete_node_if_exists(child)


def _vector(answer: Any, node: str, url: str) -> Any:
    """The question's vector in an embedding node's answer: OpenAI's (`data[0].embedding`), OPEA's EmbedDoc, TEI's."""
    if isinstance(answer, dict):
        data = answer.get("data")
        if isinstance(data, list) and data and isinstance(data[0], dict) and "embedding" in data[0]:
            return data[0]["embedding"]
        if "embedding" in answer:
            return answer["embedding"]
    elif isinstance(answer, list) and answer and isinstance(answer[0], list):
        return answer[0]
    raise UpstreamProtocolError(
        f"{node} answered no embedding (expected OpenAI's `data[0].embedding`, an EmbedDoc or TEI's list)",
        node=node,
        url=url,
    )


def _rewrites(text: Any, question: str) -> bool:
    """Whether a guardrail's answer `text` is another question than `question` (it masked something)."""
    return isinstance(text, str) and bool(text.strip()) and text != question


def _with_question(messages: list[dict[str, Any]], question: str) -> list[dict[str, Any]]:
    """`messages` with the last user message's content replaced by `question` (a guardrail's rewrite)."""
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].get("role") == "user":
            return [*messages[:index], {**messages[index], "content": question}, *messages[index + 1 :]]
    return messages
