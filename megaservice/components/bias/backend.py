"""What the bias service needs from a detector, its settings, and the choice of detector.

    local          the packaged MiniLM head (model.json): in process, no download, batched   (default)
    transformers   a text-classification model, OPEA's production default valurank/distilroberta-bias
    llm-judge      a yes/no question to any OpenAI-compatible server

OPEA's component name `OPEA_NATIVE_BIAS` (its transformers pipeline) selects `transformers`.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from megaservice.exceptions import ConfigurationError
from megaservice.settings import EnvSettings, variable

if TYPE_CHECKING:  # imported when needed: the guardrails package imports this one
    from megaservice.components.guardrails.judge import JudgeConfig

__all__ = ["BACKENDS", "BiasBackend", "BiasSettings", "BiasVerdict", "load_backend"]

BACKENDS = ("local", "transformers", "llm-judge")
"""The detectors `BIAS_DETECTION_BACKEND` may name."""

_OPEA_NAMES = {"OPEA_NATIVE_BIAS": "transformers"}


@dataclass(frozen=True, slots=True)
class BiasVerdict:
    """One text's judgement."""

    biased: bool
    score: float
    """P(BIASED) (the local and transformers detectors), or 1.0/0.0 (a judge's yes/no)."""


class BiasBackend(Protocol):
    """A bias detector: texts in, one verdict per text out."""

    name: str
    """The backend's name (`local`, `transformers`, `llm-judge`)."""

    @property
    def ready(self) -> bool:
        """Whether `detect()` can answer now (the model is loaded)."""
        ...

    async def load(self) -> None:
        """Load the model (off the event loop); called once at startup, and by the first `detect()` if not."""
        ...

    async def detect(self, texts: Sequence[str]) -> list[BiasVerdict]:
        """One verdict per text, in order."""
        ...

    async def aclose(self) -> None:
        """Release what `load()` took."""
        ...


def _threshold(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise ValueError(text)
    return value


@dataclass(frozen=True, slots=True)
class BiasSettings(EnvSettings):
    """What the bias-detection service runs (OPEA's `opea_service@bias_detection`)."""

    host: str = variable("BIAS_DETECTION_HOST", "0.0.0.0", help="The address the bias-detection service listens on.")
    port: int = variable("BIAS_DETECTION_PORT", 9092, minimum=1, help="The port of the bias-detection service.")
    backend: str = variable(
        "BIAS_DETECTION_BACKEND",
        "local",
        aliases=("BIAS_DETECTION_COMPONENT_NAME",),
        help="The detector: `local` (the packaged MiniLM head), `transformers` (`BIAS_DETECTION_MODEL`) or "
        "`llm-judge` (`BIAS_JUDGE_ENDPOINT`); OPEA's `OPEA_NATIVE_BIAS` means `transformers`.",
    )
    threshold: float | None = variable(
        "BIAS_DETECTION_THRESHOLD",
        None,
        parse=_threshold,
        expected="a number from 0 to 1",
        shown_default="the model's (0.47 for `local`, 0.5 for `transformers`)",
        help="A text is biased when its P(BIASED) is at least this (`local` and `transformers`; a judge says yes/no).",
    )
    head_file: Path | None = variable(
        "BIAS_DETECTION_HEAD_FILE",
        None,
        shown_default="the packaged `model.json`",
        help="`local`: a logistic-regression head over MiniLM embeddings, as `scripts/train_bias_model.py` writes.",
    )
    max_words: int = variable(
        "BIAS_DETECTION_MAX_WORDS",
        64,
        minimum=1,
        help="`local`: texts longer than this many words are scored sentence by sentence (biased if any sentence "
        "is), so a neutral majority does not dilute one biased sentence.",
    )
    model: str = variable(
        "BIAS_DETECTION_MODEL",
        "valurank/distilroberta-bias",
        help="`transformers`: the text-classification model (a local folder, or a Hub id already in the cache).",
    )
    label: str = variable("BIAS_DETECTION_LABEL", "BIASED", help="`transformers`: the model's label that means biased.")
    judge_endpoint: str = variable(
        "BIAS_JUDGE_ENDPOINT",
        "http://localhost:8080",
        aliases=("SAFETY_GUARD_ENDPOINT",),
        help="`llm-judge`: the OpenAI-compatible server (its `/v1/chat/completions` is called).",
    )
    judge_model: str | None = variable(
        "BIAS_JUDGE_MODEL",
        None,
        aliases=("SAFETY_GUARD_MODEL_ID",),
        shown_default="unset (the server's default model)",
        help="`llm-judge`: the model asked.",
    )
    judge_api_key: str | None = variable(
        "BIAS_JUDGE_API_KEY",
        None,
        aliases=("SAFETY_GUARD_API_KEY",),
        secret=True,
        help="`llm-judge`: the bearer key sent to the server.",
    )
    judge_timeout: float = variable(
        "BIAS_JUDGE_TIMEOUT", 30.0, minimum=0.1, help="`llm-judge`: seconds to wait for the judge's answer."
    )
    batch_size: int = variable(
        "BIAS_DETECTION_BATCH_SIZE",
        32,
        minimum=1,
        help="`local` and `transformers`: most texts (or sentences) scored in one model call, across requests.",
    )

    def judge(self) -> "JudgeConfig":
        """The judge these settings describe."""
        from megaservice.components.guardrails.judge import JudgeConfig

        return JudgeConfig(
            endpoint=self.judge_endpoint,
            model=self.judge_model,
            api_key=self.judge_api_key,
            timeout=self.judge_timeout,
            node="bias-judge",
        )


def backend_name(name: str) -> str:
    """`name` as one of `BACKENDS` (OPEA's component names mapped)."""
    name = _OPEA_NAMES.get(name, name)
    if name not in BACKENDS:
        raise ConfigurationError(
            f"BIAS_DETECTION_BACKEND: no bias backend {name!r}; the backends are: {', '.join(BACKENDS)}"
        )
    return name


def load_backend(settings: BiasSettings) -> BiasBackend:
    """The detector `settings.backend` names, built but not loaded (its optional dependencies imported now).

    Raises:
        ConfigurationError: the backend is not one of `BACKENDS`.
    """
    name = backend_name(settings.backend)
    if name == "local":
        from megaservice.components.bias.local import LocalBias

        return LocalBias(settings)
    if name == "transformers":
        from megaservice.components.bias.transformers_classifier import TransformersBias

        return TransformersBias(settings)
    from megaservice.components.bias.llm_judge import JudgeBias

    return JudgeBias(settings)
