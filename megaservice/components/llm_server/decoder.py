"""Several generations on one model at once: one thread decodes every running sequence's next token together.

    decoder = Decoder(llama_cpp, model, slots=4, context=2048, threads=2)
    decoder.start()
    outcome = decoder.generate(job)          # blocking: from the thread of the request (`runner.ModelRunner`)
    decoder.close()

The decoder's thread owns a llama.cpp context with `slots` sequences, each with its own `context`
tokens of KV cache. Each step is one `llama_decode` of a batch holding the last token of every
sequence that is generating, and prompt tokens of those just admitted in the room left: up to
`batch` tokens in all when no sequence is generating, `reading` while some are (a new request's
prompt then takes several steps, and the running streams go on between them). Then each sequence
samples its token with its own sampler chain (`sampler.sampler_chain`), and its text goes through
its own `TextOut`.

A sequence ends at the end of the turn, a stop sequence, its `max_tokens`, or when its `stopped`
event is set (checked every step). What fails in one job's own work (its text, its `emit`) fails
that job only; a failed `llama_decode` fails the jobs in that batch. A slot keeps the tokens of its
last sequence in its KV cache: a new sequence takes the free slot whose tokens share the longest
prefix with its prompt (of equals, the one used longest ago) and reads only the rest.
"""

import ctypes
import itertools
import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from megaservice.components.llm_server.text import TextOut

__all__ = ["Decoder", "Job", "Outcome"]

logger = logging.getLogger(__name__)


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
    """Set when the job has ended (`outcome` or `error` is then set)."""
    outcome: Outcome | None = None
    """How it ended (`None` if it failed)."""
    error: Exception | None = None
    """What failed it."""


@dataclass(eq=False, slots=True)
class _Slot:
    """One sequence of the context: the tokens its KV cache holds, and the job using it."""

    seq: int
    cached: list[int] = field(default_factory=list)
    """The tokens the sequence's KV cache holds, in order."""
    job: Job | None = None
    todo: list[int] = field(default_factory=list)
    """Prompt tokens not read yet; then the sampled token the next step reads."""
    out: TextOut | None = None
    count: int = 0
    """Tokens the job generated so far."""
    logits_at: int = -1
    """Where in this step's batch the job's logits are (-1: none this step)."""
    used: int = 0
    """When the slot was last given a job (a counter), to reuse the one used longest ago."""


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
        reading: int = 128,
        params: Any = None,
    ) -> None:
        self._lib = llama_cpp
        self._model = model
        self._params = params
        """Context parameters to start from (llama-cpp-python's `Llama.context_params`: flash attention off, ...)."""
        self._vocab = llama_cpp.llama_model_get_vocab(model)
        self.slots = slots
        """Sequences decoded at once."""
        self.context = context
        """KV cache tokens of each sequence (prompt + answer)."""
        self.threads = threads
        """llama.cpp's threads."""
        self.batch = max(batch, slots)
        """Most tokens one step decodes."""
        self.reading = max(1, min(reading, self.batch - slots))
        """Most prompt tokens one step reads while some sequence is generating."""
        self.prompt_tokens_read = 0
        """Prompt tokens decoded so far (those a slot's KV cache already held are not read again)."""
        self._queue: deque[Job] = deque()
        self._wake = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._ctx: Any = None
        self._batch: Any = None
        self._slots = [_Slot(seq) for seq in range(slots)]
        self._turns = itertools.count(1)
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
        try:
            self._batch = lib.llama_batch_init(self.batch, 0, 1)
            self._ctx = ctx
            self._thread = threading.Thread(target=self._run, name="llm-server-decoder", daemon=True)
            self._thread.start()
        except BaseException:
            lib.llama_free(ctx)
            self._ctx = None
            raise

    def generate(self, job: Job) -> Outcome:
        """Queue `job` and wait for its end (blocking); raises what failed it."""
        with self._wake:
            if self._closing:
                self._end(job, None, RuntimeError("the model server is stopping"))
            elif not job.tokens:
                self._end(job, None, RuntimeError("an empty prompt cannot be generated from"))
            else:
                self._queue.append(job)
                self._wake.notify()
        job.done.wait()
        if job.error is not None:
            raise job.error
        assert job.outcome is not None
        return job.outcome

    def close(self) -> None:
        """Stop every job (`cancelled`), end the thread, free the context (blocking)."""
        with self._wake:
            self._closing = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._batch is not None:
            self._lib.llama_batch_free(self._batch)
            self._batch = None
        if self._ctx is not None:
            self._lib.llama_free(self._ctx)
            self._ctx = None

    # The decoder's thread.

    def _run(self) -> None:
        try:
            while True:
                with self._wake:
                    while not self._closing and not self._queue and not self._busy():
                        self._wake.wait()
                    if self._closing:
                        break
                    self._admit()
                self._step()
        except Exception:  # a bug: say it, and fail every job rather than leave them waiting
            logger.exception("the model server's decoder stopped")
        finally:
            with self._wake:
                self._closing = True
                queued = list(self._queue)
                self._queue.clear()
            for job in queued:
                self._end(job, Outcome(0, "cancelled"))
            for slot in self._slots:
                if slot.job is not None:
                    self._release(slot, Outcome(slot.count, "cancelled"))

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
            slot = max(free, key=lambda s: (_shared(s.cached, job.tokens), -s.used))
            keep = min(_shared(slot.cached, job.tokens), len(job.tokens) - 1)  # the last one is read for its logits
            memory = self._lib.llama_get_memory(self._ctx)
            if not self._lib.llama_memory_seq_rm(memory, slot.seq, keep, -1):
                self._lib.llama_memory_seq_rm(memory, slot.seq, -1, -1)
                keep = 0
            slot.cached = job.tokens[:keep]
            slot.todo = job.tokens[keep:]
            slot.job, slot.out, slot.count, slot.used = job, TextOut(job.stops), 0, next(self._turns)

    def _step(self) -> None:
        """One `llama_decode` of every running job's next tokens, then each samples and emits."""
        for slot in self._slots:
            if slot.job is not None and slot.job.stopped.is_set():
                self._release(slot, Outcome(slot.count, "cancelled"))
        running = [(slot, slot.job) for slot in self._slots if slot.job is not None]
        if not running:
            return
        self._fill(running)
        status = self._lib.llama_decode(self._ctx, self._batch)
        if status != 0:
            for slot, _ in running:
                self._fail(slot, f"llama.cpp could not decode the batch (llama_decode returned {status})")
            return
        for slot, job in running:
            if slot.logits_at >= 0:
                token = self._lib.llama_sampler_sample(job.sampler, self._ctx, slot.logits_at)
                try:
                    self._sampled(slot, job, token)
                except Exception as exc:  # noqa: BLE001  # this job's own work (its text, its emit): it alone fails
                    self._fail(slot, f"{type(exc).__name__}: {exc}", exc)

    def _fill(self, running: list[tuple[_Slot, Job]]) -> None:
        """The step's batch: a token of each generating job, then prompt tokens in the room left."""
        batch = self._batch
        generating = [slot for slot, job in running if len(slot.cached) + len(slot.todo) > len(job.tokens)]
        reading = [slot for slot, _ in running if slot not in generating]
        limit = self.batch if not generating else len(generating) + self.reading
        n = 0
        for slot in generating + reading:
            slot.logits_at = -1
            part = slot.todo[: limit - n]
            if not part:
                continue
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
            if slot in reading:
                self.prompt_tokens_read += len(part)
            if not slot.todo:
                batch.logits[n - 1] = 1
                slot.logits_at = n - 1
        batch.n_tokens = n

    def _sampled(self, slot: _Slot, job: Job, token: int) -> None:
        out = slot.out
        assert out is not None
        if job.stopped.is_set():
            self._release(slot, Outcome(slot.count, "cancelled"))
            return
        if self._lib.llama_vocab_is_eog(self._vocab, token):
            self._finish(slot, job, out, "stop")
            return
        slot.count += 1
        piece = out.feed(self._token_bytes(token))
        if piece:
            job.emit(piece)
        if out.stopped:
            self._finish(slot, job, out, "stop")
        elif slot.count >= job.max_tokens:
            self._finish(slot, job, out, "length")
        else:
            slot.todo = [token]

    def _token_bytes(self, token: int) -> bytes:
        lib, buffer = self._lib, self._piece
        size = lib.llama_token_to_piece(self._vocab, token, buffer, len(buffer), 0, False)
        if size < 0:  # longer than the buffer: make one that fits
            buffer = self._piece = ctypes.create_string_buffer(-size)
            size = lib.llama_token_to_piece(self._vocab, token, buffer, len(buffer), 0, False)
        return buffer.raw[:size]

    def _finish(self, slot: _Slot, job: Job, out: TextOut, reason: str) -> None:
        """The job's answer is complete: what `out` held back goes out, then the job ends."""
        rest = out.flush()
        if rest:
            job.emit(rest)
        self._release(slot, Outcome(slot.count, reason))

    def _release(self, slot: _Slot, outcome: Outcome) -> None:
        job = slot.job
        assert job is not None
        slot.job, slot.out, slot.todo = None, None, []
        self._end(job, outcome)

    def _fail(self, slot: _Slot, reason: str, cause: Exception | None = None) -> None:
        """The job fails (an error of its own, so each waiting thread raises its own); its KV cache is dropped."""
        job = slot.job
        if job is None:
            return
        slot.job, slot.out, slot.todo, slot.cached = None, None, [], []
        self._lib.llama_memory_seq_rm(self._lib.llama_get_memory(self._ctx), slot.seq, -1, -1)
        error = RuntimeError(reason)
        error.__cause__ = cause
        self._end(job, None, error)

    def _end(self, job: Job, outcome: Outcome | None, error: Exception | None = None) -> None:
        job.outcome, job.error = outcome, error
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
