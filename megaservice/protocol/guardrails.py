"""Scanner settings of the LLM-Guard input/output guardrails, as OPEA's docarray protocol defines them."""

from typing import Any

from pydantic import Field

from megaservice.protocol.base import BaseDoc

__all__ = [
    "AnonymizeModel",
    "BanCodeModel",
    "BanCompetitorsModel",
    "BanSubstringsModel",
    "BanTopicsModel",
    "BiasModel",
    "CodeModel",
    "DeanonymizeModel",
    "FactualConsistencyModel",
    "GibberishModel",
    "InvisibleText",
    "JSONModel",
    "LLMGuardInputGuardrailParams",
    "LLMGuardOutputGuardrailParams",
    "LanguageModel",
    "LanguageSameModel",
    "MaliciousURLsModel",
    "NoRefusalLightModel",
    "NoRefusalModel",
    "PromptInjectionModel",
    "ReadingTimeModel",
    "RegexModel",
    "RelevanceModel",
    "SecretsModel",
    "SensitiveModel",
    "SentimentModel",
    "TokenLimitModel",
    "ToxicityModel",
    "URLReachabilityModel",
]


class _Scanner(BaseDoc):
    enabled: bool = False


class _ModelScanner(_Scanner):
    use_onnx: bool = False
    model: str | None = None
    threshold: float | None = None


class AnonymizeModel(_Scanner):
    """Settings of the `Anonymize` input scanner."""

    use_onnx: bool = False
    hidden_names: list[str] | None = None
    allowed_names: list[str] | None = None
    entity_types: list[str] | None = None
    preamble: str | None = None
    regex_patterns: list[str] | None = None
    use_faker: bool | None = None
    recognizer_conf: str | None = None
    threshold: float | None = None
    language: str | None = None


class BanCodeModel(_ModelScanner):
    """Settings of the `BanCode` scanner."""


class BanCompetitorsModel(_ModelScanner):
    """Settings of the `BanCompetitors` scanner."""

    competitors: list[str] = Field(default_factory=lambda: ["Competitor1", "Competitor2", "Competitor3"])
    redact: bool | None = None


class BanSubstringsModel(_Scanner):
    """Settings of the `BanSubstrings` scanner."""

    substrings: list[str] = Field(default_factory=lambda: ["backdoor", "malware", "virus"])
    match_type: str | None = None
    case_sensitive: bool = False
    redact: bool | None = None
    contains_all: bool | None = None


class BanTopicsModel(_ModelScanner):
    """Settings of the `BanTopics` scanner."""

    topics: list[str] = Field(default_factory=lambda: ["violence", "attack", "war"])


class CodeModel(_ModelScanner):
    """Settings of the `Code` scanner."""

    languages: list[str] = Field(default_factory=lambda: ["Java", "Python"])
    is_blocked: bool | None = None


class GibberishModel(_ModelScanner):
    """Settings of the `Gibberish` scanner."""

    match_type: str | None = None


class InvisibleText(_Scanner):
    """Settings of the `InvisibleText` scanner."""


class LanguageModel(_ModelScanner):
    """Settings of the `Language` scanner."""

    valid_languages: list[str] = Field(default_factory=lambda: ["en", "es"])
    match_type: str | None = None


class PromptInjectionModel(_ModelScanner):
    """Settings of the `PromptInjection` scanner."""

    match_type: str | None = None


class RegexModel(_Scanner):
    """Settings of the `Regex` scanner."""

    patterns: list[str] = Field(default_factory=lambda: ["Bearer [A-Za-z0-9-._~+/]+"])
    is_blocked: bool | None = None
    match_type: str | None = None
    redact: bool | None = None


class SecretsModel(_Scanner):
    """Settings of the `Secrets` scanner."""

    redact_mode: str | None = None


class SentimentModel(_Scanner):
    """Settings of the `Sentiment` scanner."""

    threshold: float | None = None
    lexicon: str | None = None


class TokenLimitModel(_Scanner):
    """Settings of the `TokenLimit` scanner."""

    limit: int | None = None
    encoding_name: str | None = None
    model_name: str | None = None


class ToxicityModel(_ModelScanner):
    """Settings of the `Toxicity` scanner."""

    match_type: str | None = None


class BiasModel(_ModelScanner):
    """Settings of the `Bias` output scanner."""

    match_type: str | None = None


class DeanonymizeModel(_Scanner):
    """Settings of the `Deanonymize` output scanner."""

    matching_strategy: str | None = None


class JSONModel(_Scanner):
    """Settings of the `JSON` output scanner."""

    required_elements: int | None = None
    repair: bool | None = None


class LanguageSameModel(_ModelScanner):
    """Settings of the `LanguageSame` output scanner."""


class MaliciousURLsModel(_ModelScanner):
    """Settings of the `MaliciousURLs` output scanner."""


class NoRefusalModel(_ModelScanner):
    """Settings of the `NoRefusal` output scanner."""

    match_type: str | None = None


class NoRefusalLightModel(_Scanner):
    """Settings of the `NoRefusalLight` output scanner."""


class ReadingTimeModel(_Scanner):
    """Settings of the `ReadingTime` output scanner."""

    max_time: float = 0.5
    truncate: bool | None = None


class FactualConsistencyModel(_Scanner):
    """Settings of the `FactualConsistency` output scanner."""

    use_onnx: bool = False
    model: str | None = None
    minimum_score: float | None = None


class RelevanceModel(_ModelScanner):
    """Settings of the `Relevance` output scanner."""


class SensitiveModel(_Scanner):
    """Settings of the `Sensitive` output scanner."""

    use_onnx: bool = False
    entity_types: list[str] | None = None
    regex_patterns: list[str] | None = None
    redact: bool | None = None
    recognizer_conf: str | None = None
    threshold: float | None = None


class URLReachabilityModel(_Scanner):
    """Settings of the `URLReachability` output scanner."""

    success_status_codes: list[int] | None = None
    timeout: int | None = None


class LLMGuardInputGuardrailParams(BaseDoc):
    """Which LLM-Guard input scanners to run, and how."""

    anonymize: AnonymizeModel = Field(default_factory=AnonymizeModel)
    ban_code: BanCodeModel = Field(default_factory=BanCodeModel)
    ban_competitors: BanCompetitorsModel = Field(default_factory=BanCompetitorsModel)
    ban_substrings: BanSubstringsModel = Field(default_factory=BanSubstringsModel)
    ban_topics: BanTopicsModel = Field(default_factory=BanTopicsModel)
    code: CodeModel = Field(default_factory=CodeModel)
    gibberish: GibberishModel = Field(default_factory=GibberishModel)
    invisible_text: InvisibleText = Field(default_factory=InvisibleText)
    language: LanguageModel = Field(default_factory=LanguageModel)
    prompt_injection: PromptInjectionModel = Field(default_factory=PromptInjectionModel)
    regex: RegexModel = Field(default_factory=RegexModel)
    secrets: SecretsModel = Field(default_factory=SecretsModel)
    sentiment: SentimentModel = Field(default_factory=SentimentModel)
    token_limit: TokenLimitModel = Field(default_factory=TokenLimitModel)
    toxicity: ToxicityModel = Field(default_factory=ToxicityModel)


class LLMGuardOutputGuardrailParams(BaseDoc):
    """Which LLM-Guard output scanners to run, and how."""

    ban_code: BanCodeModel = Field(default_factory=BanCodeModel)
    ban_competitors: BanCompetitorsModel = Field(default_factory=BanCompetitorsModel)
    ban_substrings: BanSubstringsModel = Field(default_factory=BanSubstringsModel)
    ban_topics: BanTopicsModel = Field(default_factory=BanTopicsModel)
    bias: BiasModel = Field(default_factory=BiasModel)
    code: CodeModel = Field(default_factory=CodeModel)
    deanonymize: DeanonymizeModel = Field(default_factory=DeanonymizeModel)
    json_scanner: JSONModel = Field(default_factory=JSONModel)
    language: LanguageModel = Field(default_factory=LanguageModel)
    language_same: LanguageSameModel = Field(default_factory=LanguageSameModel)
    malicious_urls: MaliciousURLsModel = Field(default_factory=MaliciousURLsModel)
    no_refusal: NoRefusalModel = Field(default_factory=NoRefusalModel)
    no_refusal_light: NoRefusalLightModel = Field(default_factory=NoRefusalLightModel)
    reading_time: ReadingTimeModel = Field(default_factory=ReadingTimeModel)
    factual_consistency: FactualConsistencyModel = Field(default_factory=FactualConsistencyModel)
    gibberish: GibberishModel = Field(default_factory=GibberishModel)
    regex: RegexModel = Field(default_factory=RegexModel)
    relevance: RelevanceModel = Field(default_factory=RelevanceModel)
    sensitive: SensitiveModel = Field(default_factory=SensitiveModel)
    sentiment: SentimentModel = Field(default_factory=SentimentModel)
    toxicity: ToxicityModel = Field(default_factory=ToxicityModel)
    url_reachability: URLReachabilityModel = Field(default_factory=URLReachabilityModel)
    anonymize_vault: list[tuple[Any, ...]] | None = None
