"""Several generations on one model at once: one thread decodes every running sequence's next token together.

    decoder = Decoder(llama_cpp, model, slots=4, context=2048, threads=2)
    decoder.start()
    outcome = decoder.generate(job)          # blocking: from the thread of the request (`runner.ModelRunner`)
    decoder.close()

The decoder's thread owns a llama.cpp context with `slots` sequences, each with its own `context`
tokens of KV cache. Each step is one `llama_decode` of a batch holding the last token of every
sequence that is generating, and as much as fits of the prompts of those just admitted (chunks of
at most `batch` tokens in all): a generation streams its tokens while the next request's prompt
is read, and the model's weights are read once per step for every sequence (on this 2-CPU machine
4 sequences decode at about twice the tokens per second of one). Then each sequence samples its
token with its own sampler chain (`sampler.sampler_chain`), and its text goes through its own
`TextOut`.

A sequence ends at the end of the turn, a stop sequence, its `max_tokens`, or when its `stopped`
event is set (checked every step). A slot keeps the tokens of its last sequence in its KV cache:
a new sequence takes the free slot whose tokens share the longest prefix with its prompt and
reads only the rest (the system prompt and template of a RAG pipeline are read once per slot).
"""

import ctypes
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from megaservice.components.llm_server.text import TextOut

__all__ = ["Decoder", "Job", "Outcome"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a sequence ended."""

    completion_tokens: int
    """Tokens generated (the one that ended the answer not counted)."""
    finish_reason: str
    """`stop` (end of turn or a stop sequence), `length` (max_tokens), or `cancelled` (told to stop)."""


@dataclass(eq=False, slots=True)
class Job:
    """One generation: its prompt, how it samples and stops, and where its text goes."""

    tokens: list[int]
    """The prompt's tokens (at least one)."""
    max_tokens: int
    """Most tokens the answer may have."""
    stops: tuple[str, ...]
    """Stop sequences (cut out of the text)."""
    sampler: Any
    """A llama.cpp sampler chain, owned by the job from now on (freed when it ends)."""
    emit: Callable[[str], None]
    """Called from the decoder's thread with each piece of text."""
    stopped: threading.Event
    """Set to stop the generation at its next step."""
    done: threading.Event = field(default_factory=threading.Event)
    outcome: Outcome | None = None
    error: BaseException | None = None


@dataclass(eq=False, slots=True)
class _Slot:
    """One sequence of the context: the tokens its KV cache holds, and the job using it."""

    seq: int
    cached: list[int] = field(default_factory=list)
    job: Job | None = None
    todo: list[int] = field(default_factory=list)
    """Prompt tokens not read yet; then the sampled token the next step reads."""
    out: TextOut | None = None
    count: int = 0
    logits_at: int = -1
    """Where in this step's batch the job's logits are (-1: none this step)."""


class Decoder:
    """Runs up to `slots` jobs at once on `model` in one thread (module docstring)."""

    def __init__(
        self,
        llama_cpp: Any,
        model: Any,
        *,
        slots: int,
        context: int,
        threads: int,
        batch: int = 512,
        params: Any = None,
    ) -> None:
        self._lib = llama_cpp
        self._model = model
        self._params = params
        """Context parameters to start from (llama-cpp-python's `Llama.context_params`: flash attention off, ...)."""
        self._vocab = llama_cpp.llama_model_get_vocab(model)
        self.slots = slots
        self.context = context
        self.threads = threads
        self.batch = max(batch, slots)
        self._queue: deque[Job] = deque()
        self._wake = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._ctx: Any = None
        self._batch: Any = None
        self._slots = [_Slot(seq) for seq in range(slots)]
        self.prompt_tokens_read = 0
        """Prompt tokens decoded so far (those a slot's KV cache already held are not read again)."""
        self._piece = ctypes.create_string_buffer(256)

    def start(self) -> None:
        """Make the context and start the thread (blocking; raises if llama.cpp cannot make the context)."""
        lib = self._lib
        base = self._params
        params = lib.llama_context_default_params() if base is None else type(base).from_buffer_copy(base)
        params.n_ctx = self.context * self.slots
        params.n_seq_max = self.slots
        params.n_batch = self.batch
        params.n_ubatch = self.batch
        params.n_threads = self.threads
        params.n_threads_batch = self.threads
        params.kv_unified = False
        params.no_perf = True
        ctx = lib.llama_init_from_model(self._model, params)
        if not ctx:
            raise RuntimeError(f"llama.cpp could not make a context of {self.slots} x {self.context} tokens")
        self._ctx = ctx
        self._batch = lib.llama_batch_init(self.batch, 0, 1)
        self._thread = threading.Thread(target=self._run, name="llm-server-decoder", daemon=True)
        self._thread.start()

    def generate(self, job: Job) -> Outcome:
        """Queue `job` and wait for its end (blocking); raises what failed it."""
        with self._wake:
            if self._closing:
                raise RuntimeError("the model server is stopping")
            self._queue.append(job)
            self._wake.notify()
        job.done.wait()
        if job.error is not None:
            raise job.error
        assert job.outcome is not None
        return job.outcome

    def close(self) -> None:
        """Stop every job, end the thread, free the context (blocking)."""
        with self._wake:
            self._closing = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        for job in self._queue:
            self._end(job, Outcome(0, "cancelled"))
        self._queue.clear()
        if self._batch is not None:
            self._lib.llama_batch_free(self._batch)
            self._batch = None
        if self._ctx is not None:
            self._lib.llama_free(self._ctx)
            self._ctx = None

    # The decoder's thread.

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._closing and not self._queue and not self._busy():
                    self._wake.wait()
                if self._closing:
                    break
                self._admit()
            try:
                self._step()
            except BaseException as exc:  # noqa: BLE001  # every running job learns what failed
                for slot in self._slots:
                    if slot.job is not None:
                        self._fail(slot, exc)
        for slot in self._slots:
            if slot.job is not None:
                self._finish(slot, "cancelled")

    def _busy(self) -> bool:
        return any(slot.job is not None for slot in self._slots)

    def _admit(self) -> None:
        """Give queued jobs the free slots, each the one whose cached tokens share most of its prompt."""
        while self._queue:
            free = [slot for slot in self._slots if slot.job is None]
            if not free:
                return
            job = self._queue.popleft()
            if job.stopped.is_set():
                self._end(job, Outcome(0, "cancelled"))
                continue
            slot = max(free, key=lambda s: _shared(s.cached, job.tokens))
            keep = min(_shared(slot.cached, job.tokens), len(job.tokens) - 1)  # the last one is read for its logits
            memory = self._lib.llama_get_memory(self._ctx)
            if not self._lib.llama_memory_seq_rm(memory, slot.seq, keep, -1):
                self._lib.llama_memory_seq_rm(memory, slot.seq, -1, -1)
                keep = 0
            slot.cached = job.tokens[:keep]
            slot.todo = job.tokens[keep:]
            self.prompt_tokens_read += len(slot.todo)
            slot.job, slot.out, slot.count = job, TextOut(job.stops), 0

    def _step(self) -> None:
        """One `llama_decode` of every running job's next tokens, then each samples and emits."""
        lib, batch = self._lib, self._batch
        for slot in self._slots:
            if slot.job is not None and slot.job.stopped.is_set():
                self._finish(slot, "cancelled")
        running = [slot for slot in self._slots if slot.job is not None]
        if not running:
            return
        n = 0
        generating = [slot for slot in running if len(slot.cached) + len(slot.todo) > len(slot.job.tokens)]  # type: ignore[union-attr]
        reading = [slot for slot in running if slot not in generating]
        for slot in generating + reading:  # generating ones first: a token each, then prompts in what is left
            slot.logits_at = -1
            room = self.batch - n
            if room <= 0:
                continue
            part = slot.todo[:room]
            position = len(slot.cached)
            for offset, token in enumerate(part):
                batch.token[n] = token
                batch.pos[n] = position + offset
                batch.n_seq_id[n] = 1
                batch.seq_id[n][0] = slot.seq
                batch.logits[n] = 0
                n += 1
            slot.cached.extend(part)
            del slot.todo[: len(part)]
            if not slot.todo:
                batch.logits[n - 1] = 1
                slot.logits_at = n - 1
        batch.n_tokens = n
        status = lib.llama_decode(self._ctx, batch)
        if status != 0:
            raise RuntimeError(f"llama.cpp could not decode the batch (llama_decode returned {status})")
        for slot in running:
            if slot.logits_at >= 0:
                self._sampled(slot, lib.llama_sampler_sample(slot.job.sampler, self._ctx, slot.logits_at))  # type: ignore[union-attr]

    def _sampled(self, slot: _Slot, token: int) -> None:
        job, out = slot.job, slot.out
        assert job is not None and out is not None
        if job.stopped.is_set():
            self._finish(slot, "cancelled")
            return
        if self._lib.llama_vocab_is_eog(self._vocab, token):
            self._finish(slot, "stop")
            return
        slot.count += 1
        piece = out.feed(self._token_bytes(token))
        if piece:
            job.emit(piece)
        if out.stopped:
            self._finish(slot, "stop")
        elif slot.count >= job.max_tokens:
            self._finish(slot, "length")
        else:
            slot.todo = [token]

    def _token_bytes(self, token: int) -> bytes:
        lib, buffer = self._lib, self._piece
        size = lib.llama_token_to_piece(self._vocab, token, buffer, len(buffer), 0, False)
        if size < 0:  # longer than the buffer: make one that fits
            buffer = self._piece = ctypes.create_string_buffer(-size)
            size = lib.llama_token_to_piece(self._vocab, token, buffer, len(buffer), 0, False)
        return buffer.raw[:size]

    def _finish(self, slot: _Slot, reason: str) -> None:
        job, out = slot.job, slot.out
        assert job is not None and out is not None
        if reason != "cancelled":
            rest = out.flush()
            if rest:
                job.emit(rest)
        slot.job, slot.out, slot.todo = None, None, []
        self._end(job, Outcome(slot.count, reason))

    def _fail(self, slot: _Slot, exc: BaseException) -> None:
        job = slot.job
        assert job is not None
        slot.job, slot.out, slot.todo, slot.cached = None, None, [], []
        self._lib.llama_memory_seq_rm(self._lib.llama_get_memory(self._ctx), slot.seq, -1, -1)
        job.error = exc
        self._end(job, None)

    def _end(self, job: Job, outcome: Outcome | None) -> None:
        if outcome is not None:
            job.outcome = outcome
        if job.sampler is not None:
            self._lib.llama_sampler_free(job.sampler)
            job.sampler = None
        job.done.set()


def _shared(cached: list[int], tokens: list[int]) -> int:
    """How many tokens the two lists share from the start."""
    n = 0
    for a, b in zip(cached, tokens, strict=False):
        if a != b:
            break
        n += 1
    return n
