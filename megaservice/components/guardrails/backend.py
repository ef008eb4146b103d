"""What the guardrails service needs from its backend, its settings, and the choice of backend.

    local         the checks `GUARDRAILS_CHECKS` lists, in process (the LLM judge is remote)   (default)
    llama-guard   the same, plus the `llm-judge` check asking a Llama Guard server the conversation itself
                  (OPEA's `OPEA_LLAMA_GUARD`: `SAFETY_GUARD_ENDPOINT`, `SAFETY_GUARD_MODEL_ID`)

The checks: `banned` (substrings, regexes), `pii` (mask or refuse), `toxicity` (alt-profanity-check),
`bias` (the bias service's local detector) and `llm-judge` (any OpenAI-compatible server).
"""

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from megaservice.components.bias.backend import BiasSettings
from megaservice.components.bias.local import LocalBias
from megaservice.components.embedding.minilm import MiniLM
from megaservice.components.guardrails.banned import Banned
from megaservice.components.guardrails.checks import Check, Outcome
from megaservice.components.guardrails.judge import JudgeConfig
from megaservice.components.guardrails.model_checks import SAFETY_QUESTION, BiasCheck, JudgeCheck
from megaservice.components.guardrails.pii import KINDS, PIIMatch
from megaservice.components.guardrails.pipeline import Guardrails
from megaservice.components.guardrails.toxicity import Toxicity
from megaservice.exceptions import ConfigurationError
from megaservice.settings import EnvSettings, variable

__all__ = [
    "BACKENDS",
    "CHECKS",
    "DEFAULT_CHECKS",
    "GuardrailsBackend",
    "GuardrailsSettings",
    "backend_name",
    "load_backend",
]

BACKENDS = ("local", "llama-guard")
"""The backends `GUARDRAILS_BACKEND` may name."""
CHECKS = ("banned", "pii", "toxicity", "bias", "llm-judge")
"""The checks `GUARDRAILS_CHECKS` may list."""
DEFAULT_CHECKS = ("banned", "pii", "toxicity")
"""The checks that run when `GUARDRAILS_CHECKS` is unset: none needs a download or another server."""

_OPEA_NAMES = {"OPEA_LLAMA_GUARD": "llama-guard"}


def _names(text: str, known: Sequence[str]) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"unknown {', '.join(unknown)}")
    return names


def _checks(text: str) -> tuple[str, ...]:
    return _names(text, CHECKS)


def _kinds(text: str) -> tuple[str, ...]:
    return _names(text, KINDS)


def _regexes(text: str) -> tuple[str, ...]:
    """A JSON array of regexes (needed when one holds a comma), or a comma list."""
    if text.lstrip().startswith("["):
        patterns = json.loads(text)
        if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
            raise ValueError("a JSON array of strings")
    else:
        patterns = [part.strip() for part in text.split(",") if part.strip()]
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"{pattern!r} is not a regex: {exc}") from None
    return tuple(patterns)


def _threshold(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise ValueError(text)
    return value


class GuardrailsBackend(Protocol):
    """What the guardrails service calls: the checks, run on a text."""

    name: str
    """The backend's name."""
    checks: tuple[str, ...]
    """The checks `/v1/guardrails` runs, in order."""

    @property
    def ready(self) -> bool:
        """Whether the enabled checks' models are loaded."""
        ...

    async def load(self) -> None:
        """Load the enabled checks' models."""
        ...

    async def check(self, text: str, *, prompt: str | None = None, only: Sequence[str] | None = None) -> Outcome:
        """The decision on `text` by the enabled checks (or `only` these)."""
        ...

    def find_pii(self, text: str) -> list[PIIMatch]:
        """The personal data in `text`."""
        ...

    async def aclose(self) -> None:
        """Release the models."""
        ...


@dataclass(frozen=True, slots=True)
class GuardrailsSettings(EnvSettings):
    """What the guardrails service runs (OPEA's `opea_service@guardrails`, with `/v1/toxicity` and `/v1/pii`)."""

    host: str = variable("GUARDRAILS_HOST", "0.0.0.0", help="The address the guardrails service listens on.")
    port: int = variable(
        "GUARDRAILS_PORT",
        9090,
        minimum=1,
        help="The port of the guardrails service (it also serves OPEA's `/v1/toxicity` and `/v1/pii`).",
    )
    backend: str = variable(
        "GUARDRAILS_BACKEND",
        "local",
        aliases=("GUARDRAILS_COMPONENT_NAME",),
        help="`local` (the checks of `GUARDRAILS_CHECKS`) or `llama-guard` (the same plus `llm-judge` asking "
        "a Llama Guard server at `SAFETY_GUARD_ENDPOINT`; OPEA's `OPEA_LLAMA_GUARD`).",
    )
    checks: tuple[str, ...] = variable(
        "GUARDRAILS_CHECKS",
        DEFAULT_CHECKS,
        parse=_checks,
        expected=f"a comma list of {', '.join(CHECKS)}",
        help=f"The checks `/v1/guardrails` runs, a comma list of: {', '.join(f'`{c}`' for c in CHECKS)}.",
    )
    banned_substrings: tuple[str, ...] = variable(
        "GUARDRAILS_BANNED_SUBSTRINGS", (), help="`banned`: substrings refused in any case, a comma list."
    )
    banned_regexes: tuple[str, ...] = variable(
        "GUARDRAILS_BANNED_REGEXES",
        (),
        parse=_regexes,
        expected="a JSON array of regexes, or a comma list",
        help='`banned`: regexes refused (Python syntax), a JSON array (`["a{1,3}"]`) or a comma list.',
    )
    pii_action: Literal["mask", "refuse"] = variable(
        "GUARDRAILS_PII_ACTION",
        "mask",
        help="`pii`: `mask` passes the text on with the personal data replaced; `refuse` refuses it.",
    )
    pii_types: tuple[str, ...] = variable(
        "GUARDRAILS_PII_TYPES",
        KINDS,
        parse=_kinds,
        expected=f"a comma list of {', '.join(KINDS)}",
        help=f"`pii`: the kinds of personal data looked for, a comma list of {', '.join(KINDS)}.",
    )
    pii_replacement: Literal["category", "mask", "random"] = variable(
        "GUARDRAILS_PII_REPLACEMENT",
        "category",
        help="`pii`: how masked data is written: `category` (`[EMAIL]`), `mask` (`*****`) or `random` (look-alike).",
    )
    toxicity_threshold: float = variable(
        "GUARDRAILS_TOXICITY_THRESHOLD",
        0.5,
        parse=_threshold,
        expected="a number from 0 to 1",
        help="`toxicity`: a text is toxic when alt-profanity-check's `predict_prob` is at least this.",
    )
    bias_threshold: float | None = variable(
        "GUARDRAILS_BIAS_THRESHOLD",
        None,
        aliases=("BIAS_DETECTION_THRESHOLD",),
        parse=_threshold,
        expected="a number from 0 to 1",
        shown_default="the model's (0.47)",
        help="`bias`: a text is biased when the packaged detector's P(BIASED) is at least this.",
    )
    max_words: int = variable(
        "GUARDRAILS_MAX_WORDS",
        64,
        minimum=1,
        help="`toxicity` and `bias`: texts longer than this many words are scored sentence by sentence.",
    )
    judge_endpoint: str = variable(
        "SAFETY_GUARD_ENDPOINT",
        "http://localhost:8080",
        help="`llm-judge`: the OpenAI-compatible server (its `/v1/chat/completions` is called).",
    )
    judge_model: str | None = variable(
        "SAFETY_GUARD_MODEL_ID",
        None,
        shown_default="unset (the server's default model)",
        help="`llm-judge`: the model asked.",
    )
    judge_api_key: str | None = variable(
        "SAFETY_GUARD_API_KEY", None, secret=True, help="`llm-judge`: the bearer key sent to the server."
    )
    judge_timeout: float = variable(
        "SAFETY_GUARD_TIMEOUT", 30.0, minimum=0.1, help="`llm-judge`: seconds to wait for the judge's answer."
    )
    judge_style: Literal["question", "conversation"] = variable(
        "GUARDRAILS_JUDGE_STYLE",
        "question",
        help="`llm-judge`: `question` asks any model a yes/no question about the text; `conversation` sends the "
        "text as the conversation (safety models such as Llama Guard; the `llama-guard` backend's way).",
    )
    judge_question: str | None = variable(
        "GUARDRAILS_JUDGE_QUESTION",
        None,
        shown_default="a general safety question",
        help="`llm-judge`, style `question`: the yes/no question the judge answers about each text.",
    )

    def judge(self, style: Literal["question", "conversation"] | None = None) -> JudgeConfig:
        """The judge these settings describe (`style` replacing theirs)."""
        return JudgeConfig(
            endpoint=self.judge_endpoint,
            model=self.judge_model,
            api_key=self.judge_api_key,
            timeout=self.judge_timeout,
            node="llm-judge",
            style=style or self.judge_style,
        )


def backend_name(name: str) -> str:
    """`name` as one of `BACKENDS` (OPEA's component name mapped); `ConfigurationError` listing them if none."""
    found = _OPEA_NAMES.get(name, name)
    if found not in BACKENDS:
        raise ConfigurationError(
            f"GUARDRAILS_BACKEND: no guardrails backend {found!r}; the backends are: {', '.join(BACKENDS)}"
        )
    return found


def load_backend(settings: GuardrailsSettings, *, minilm: MiniLM | None = None) -> Guardrails:
    """The backend `settings.backend` names, built but not loaded.

    The `bias` check is the bias service's `local` detector; `minilm` shares an embedding model
    already in the process with it (default: it loads its own).

    Raises:
        ConfigurationError: the backend is not one of `BACKENDS`.
    """
    name = backend_name(settings.backend)
    checks = settings.checks
    style = settings.judge_style
    if name == "llama-guard":
        checks = checks if "llm-judge" in checks else (*checks, "llm-judge")
        style = "conversation"
    models: dict[str, Check] = {"toxicity": Toxicity(settings.toxicity_threshold, max_words=settings.max_words)}
    if "bias" in checks:
        bias = BiasSettings(threshold=settings.bias_threshold, max_words=settings.max_words)
        models["bias"] = BiasCheck(LocalBias(bias, model=minilm))
    if "llm-judge" in checks:
        models["llm-judge"] = JudgeCheck(settings.judge(style), settings.judge_question or SAFETY_QUESTION)
    return Guardrails(
        checks,
        banned=Banned(settings.banned_substrings, settings.banned_regexes),
        pii_kinds=settings.pii_types,
        pii_action=settings.pii_action,
        pii_replacement=settings.pii_replacement,
        models=models,
        name=name,
    )
