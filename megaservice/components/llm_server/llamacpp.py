"""The `llama-cpp` backend: a GGUF model in process, `LLM_SERVER_PARALLEL` generations at once, tokens streamed.

Threads: each running generation holds one of the runner's worker threads (`runner.ModelRunner`)
while the model's decoder thread generates for all of them together (`decoder.Decoder`); prompts
are built and tokenized in another (`_shared.blocking.Worker`), so a request's prompt is checked
while the model generates for others, and a request that cannot fit is refused before it waits.
Requests beyond `LLM_SERVER_MAX_WAITING` waiting are refused with 503 at once.
"""

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from megaservice.components._shared.blocking import Worker
from megaservice.components.llm_server.backend import LLMServerSettings, default_threads
from megaservice.components.llm_server.model import LlamaModel, Outcome, Prompt, packaged_model
from megaservice.components.llm_server.request import ChatRequest
from megaservice.components.llm_server.runner import ModelRunner, Run
from megaservice.exceptions import ConfigurationError, InputError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = ["LlamaCppBackend", "LlamaGeneration"]

logger = logging.getLogger(__name__)


class LlamaGeneration:
    """One generation on the model (`backend.Generation`): batches of text pieces, then the counts."""

    def __init__(self, run: "Run[str, Outcome]", prompt_tokens: int) -> None:
        self._run = run
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = 0
        self.finish_reason: str | None = None

    async def __aiter__(self) -> "AsyncIterator[list[str]]":
        async for pieces in self._run:
            yield pieces
        outcome = self._run.result
        if outcome is not None:
            self.completion_tokens = outcome.completion_tokens
            self.finish_reason = outcome.finish_reason

    def close(self) -> None:
        """Stop generating; the slot is free for the next request once the current step is done."""
        self._run.close()


class LlamaCppBackend:
    """A GGUF chat model served by llama.cpp (`LLMServerBackend`)."""

    def __init__(self, settings: LLMServerSettings, *, model: LlamaModel | None = None) -> None:
        if model is None:
            path = settings.model if settings.model is not None else packaged_model()
            template = _read_template(settings.chat_template)
            model = LlamaModel(
                path,
                context=settings.context,
                threads=settings.threads or default_threads(),
                parallel=settings.parallel,
                chat_template=template,
            )
        self.model = model
        self._name = settings.model_name or model.path.name.removesuffix(".gguf")
        self._runner = ModelRunner(settings.max_waiting, parallel=settings.parallel)
        self._prompts = Worker(1)
        self._failure: BaseException | None = None
        self.load_seconds: float | None = None
        """How long loading the model took (`None` until it is loaded)."""
        self.cancelled = 0
        """Generations stopped because their client left."""
        self.last_outcome: Outcome | None = None
        """How the last generation that ran ended."""
        self._counting = threading.Lock()

    @property
    def model_id(self) -> str:
        """The model's name, as answered and listed."""
        return self._name

    @property
    def pending(self) -> int:
        """Generations generating or waiting their turn."""
        return self._runner.pending

    async def start(self) -> None:
        """Load the model in the model's thread (a failure is logged and kept: `ready()` raises it)."""
        started = time.perf_counter()
        try:
            await self._runner.call(self.model.load)
        except Exception as exc:  # kept for the readiness probe, which reports it
            logger.exception("the model server's model could not be loaded")
            self._failure = exc
            return
        self.load_seconds = time.perf_counter() - started
        logger.info("loaded %s in %.2f s (%d threads)", self.model.path.name, self.load_seconds, self.model.threads)

    def ready(self) -> bool:
        """Whether the model is loaded (raises the load's failure)."""
        if self._failure is not None:
            raise self._failure
        return self.model.loaded

    async def generate(self, chat: ChatRequest) -> LlamaGeneration:
        """The generation for `chat`, its prompt built and checked, queued for the model (see the Protocol)."""
        if not self.model.loaded:
            reason = f": {self._failure}" if self._failure is not None else ", try again shortly"
            raise InputError(f"the model is not loaded{reason}", status_code=503)
        prompt = await self._prompts.run(self.model.prompt, chat)
        return LlamaGeneration(self._runner.open(self._produce(prompt, chat)), len(prompt.tokens))

    def _produce(
        self, prompt: Prompt, chat: ChatRequest
    ) -> Callable[[Callable[[str], None], threading.Event], Outcome]:
        def produce(emit: Callable[[str], None], stopped: threading.Event) -> Outcome:
            outcome = self.model.generate(prompt, chat, emit, stopped)
            with self._counting:  # generations end in several threads at once
                self.last_outcome = outcome
                if outcome.finish_reason == "cancelled":
                    self.cancelled += 1
            return outcome

        return produce

    def describe(self) -> dict[str, Any]:
        """The model's file, context, threads and size, for `/v1/models`."""
        metadata = self.model.metadata
        return {
            "file": self.model.path.name,
            "context_length": self.model.context,
            "threads": self.model.threads,
            "parallel": self.model.parallel,
            "architecture": metadata.get("general.architecture"),
            "size_bytes": self.model.path.stat().st_size if self.model.path.is_file() else None,
        }

    async def aclose(self) -> None:
        """Stop the running generations; free the model once the last one returned."""
        self._runner.close()
        await self._runner.drained()
        await self._runner.call(self.model.close)


def _read_template(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text()
    except OSError as exc:
        raise ConfigurationError(f"LLM_SERVER_CHAT_TEMPLATE: cannot read {path}: {exc}") from None
