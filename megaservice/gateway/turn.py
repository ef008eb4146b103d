"""`Turn`: one question on its way through the pipeline, what the client asked and what the nodes said.

A route reads the request into a `Turn` (`megaservice.gateway.request`) and passes it to
`schedule(..., turn=turn)`; the orchestrator's hooks (`megaservice.gateway.flow`) read it to shape
each node's input and write into it what the answers tell: the documents retrieved, those the LLM
was given (the sources), a guardrail's refusal. The answer is then built from it
(`megaservice.gateway.answers`).
"""

import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from megaservice.gateway.sources import Source

__all__ = ["Framing", "Turn"]

Framing = Literal["openai", "opea"]
"""How answers are written: OpenAI's chat completion (chunks), or OPEA's ChatQnA (`data: b'…'` frames)."""


@dataclass(slots=True)
class Turn:
    """One question through the pipeline."""

    framing: Framing
    question: str
    """The last user message's text (what is embedded and retrieved for); a guardrail may rewrite it."""
    messages: list[dict[str, Any]]
    """The conversation as the client sent it; its last user message is the question."""
    stream: bool
    llm: dict[str, Any]
    """What the LLM node gets besides the messages and documents (OpenAI's fields: max_tokens, ...)."""
    retrieval: dict[str, Any]
    """The retriever's settings (k, search_type, ...), added to its input."""
    top_n: int
    """How many documents the reranker keeps."""
    model: str
    """The model name answers carry until the LLM's own is known (the pipeline's name)."""
    id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    created: int = field(default_factory=lambda: int(time.time()))

    retrieved: list[Source] = field(default_factory=list)
    """What the retriever found."""
    sources: list[Source] | None = None
    """What the LLM was given (`None` until a retriever or reranker answered)."""
    refusal: str | None = None
    """A guardrail's refusal text: nothing after it runs, the client gets this text."""
    refused_by: str | None = None
    """The service that refused (the pipeline's name for it)."""
    rewritten: bool = False
    """A guardrail changed the question (masked what it found): the LLM gets its text."""
    answered: bool = False
    """The LLM node was called."""
    started: float = field(default_factory=time.monotonic)
    """When the request was read (`time.monotonic()`): the pipeline's time is counted from it."""
    llm_called: float = 0.0
    """When the LLM node was called (`time.monotonic()`; 0 until it is)."""
    llm_node: str = ""
    """The pipeline's name of the LLM node, once it is called (its service's own upstream errors are named by it)."""

    def source_dicts(self) -> list[dict[str, Any]]:
        """The sources as answers carry them (numbered from 1, in the order the LLM saw them)."""
        return [{"index": i, **source.to_dict()} for i, source in enumerate(self.sources or (), start=1)]
