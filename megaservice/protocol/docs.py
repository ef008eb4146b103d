"""Documents passed between pipeline nodes, with the names and JSON of OPEA's docarray protocol.

Every document serialises an auto-generated `id`; `TextDoc` also carries `downstream_black_list`,
which a node uses to tell the orchestrator which downstream nodes to skip (e.g. a guardrail
answering `[".*"]` ends the pipeline).
"""

from typing import Annotated, Any

from pydantic import Field, NonNegativeFloat, PositiveInt

from megaservice.protocol.base import BaseDoc, TopologyInfo
from megaservice.protocol.guardrails import LLMGuardInputGuardrailParams, LLMGuardOutputGuardrailParams
from megaservice.protocol.limits import MaxTokens

__all__ = [
    "Audio2TextDoc",
    "Audio2text",
    "Base64ByteStrDoc",
    "DocPath",
    "DocSumDoc",
    "EmbedDoc",
    "EmbedMultimodalDoc",
    "FactualityDoc",
    "GeneratedDoc",
    "GraphDoc",
    "ImageDoc",
    "ImagePath",
    "ImagesPath",
    "LLMParams",
    "LLMParamsDoc",
    "LVMDoc",
    "LVMSearchedMultimodalDoc",
    "LVMVideoDoc",
    "MetadataTextDoc",
    "MultimodalDoc",
    "PIIRequestDoc",
    "PIIResponseDoc",
    "PrevQuestionDetails",
    "PromptTemplateInput",
    "RAGASParams",
    "RAGASScores",
    "RerankedDoc",
    "RerankerParms",
    "RetrieverParms",
    "SDImg2ImgInputs",
    "SDInputs",
    "SDOutputs",
    "ScoreDoc",
    "SearchedDoc",
    "SearchedMultimodalDoc",
    "TextDoc",
    "TextImageDoc",
    "TranslationInput",
    "VideoPath",
]

MaxNewTokens = Annotated[int, Field(ge=0, le=1024)]
Vector = list[float]


class TextDoc(BaseDoc, TopologyInfo):
    """Plain text (or a list of texts) flowing through the pipeline."""

    text: str | list[str] | None = None


class Audio2text(BaseDoc, TopologyInfo):
    """A transcription query."""

    query: str | None = None


class FactualityDoc(BaseDoc):
    """A text to check against a reference."""

    reference: str
    text: str


class ScoreDoc(BaseDoc):
    """A single score answered by a classifier."""

    score: float


class PIIRequestDoc(BaseDoc):
    """A prompt to scan for personal data."""

    prompt: str
    replace: bool | None = False
    replace_method: str | None = "random"


class PIIResponseDoc(BaseDoc):
    """Personal data found in a prompt, and the prompt with it replaced."""

    detected_pii: list[dict[str, Any]] | None = None
    new_prompt: str | None = None


class MetadataTextDoc(TextDoc):
    """Text with free-form metadata."""

    metadata: dict[str, Any] | None = None


class ImageDoc(BaseDoc):
    """An image, by URL or as base64."""

    url: str | None = None
    base64_image: str | None = None


class TextImageDoc(BaseDoc):
    """An image with its text."""

    image: ImageDoc | None = None
    text: TextDoc | None = None


MultimodalDoc = TextDoc | ImageDoc | TextImageDoc


class Base64ByteStrDoc(BaseDoc):
    """Bytes as a base64 string."""

    byte_str: str


class DocSumDoc(BaseDoc):
    """Input of a summarisation service: text, audio or video."""

    text: str | None = None
    audio: str | None = None
    video: str | None = None


class DocPath(BaseDoc):
    """A file to ingest, with its chunking settings."""

    path: str
    chunk_size: int = 1500
    chunk_overlap: int = 100
    process_table: bool = False
    table_strategy: str = "fast"


class EmbedDoc(BaseDoc):
    """Text with its embedding and the retrieval settings that go with it."""

    text: str | list[str]
    embedding: Vector | list[Vector]
    search_type: str = "similarity"
    k: PositiveInt = 4
    distance_threshold: float | None = None
    fetch_k: PositiveInt = 20
    lambda_mult: NonNegativeFloat = 0.5
    score_threshold: NonNegativeFloat = 0.2
    constraints: dict[str, Any] | list[dict[str, Any]] | None = None
    index_name: str | None = None


class EmbedMultimodalDoc(EmbedDoc):
    """An embedding of text and, optionally, an image."""

    url: str | None = None
    base64_image: str | None = None


class Audio2TextDoc(BaseDoc):
    """Audio to transcribe, by URL."""

    url: str | None = None
    model_name_or_path: str | None = "openai/whisper-small"
    language: str | None = "auto"


class SearchedDoc(BaseDoc):
    """Documents a retriever found for a query."""

    retrieved_docs: list[TextDoc]
    initial_query: str
    top_n: PositiveInt = 1


class SearchedMultimodalDoc(SearchedDoc):
    """Retrieved documents with per-document metadata."""

    metadata: list[dict[str, Any]]


class LVMSearchedMultimodalDoc(SearchedMultimodalDoc):
    """Retrieved multimodal documents plus the generation settings of a vision-language model."""

    max_new_tokens: MaxNewTokens = 512
    top_k: int = 10
    top_p: float = 0.95
    typical_p: float = 0.95
    temperature: float = 0.01
    stream: bool = False
    repetition_penalty: float = 1.03
    chat_template: str | None = None


class RerankedDoc(BaseDoc):
    """Documents in the order a reranker scored them."""

    reranked_docs: list[TextDoc]
    initial_query: str


class LLMParamsDoc(BaseDoc):
    """A query for an LLM with its generation settings and optional RAG documents."""

    model: str | None = None
    query: str
    max_tokens: Annotated[int, MaxTokens] = 1024
    max_new_tokens: Annotated[PositiveInt, MaxTokens] = 1024
    top_k: PositiveInt = 10
    top_p: NonNegativeFloat = 0.95
    typical_p: NonNegativeFloat = 0.95
    temperature: NonNegativeFloat = 0.01
    frequency_penalty: NonNegativeFloat = 0.0
    presence_penalty: NonNegativeFloat = 0.0
    repetition_penalty: NonNegativeFloat = 1.03
    stream: bool = True
    language: str = "auto"
    input_guardrail_params: LLMGuardInputGuardrailParams | None = None
    output_guardrail_params: LLMGuardOutputGuardrailParams | None = None
    chat_template: str | None = None
    documents: list[dict[str, str]] | list[str] | None = Field(default_factory=list)


class GeneratedDoc(BaseDoc):
    """Generated text with the prompt that produced it."""

    text: str
    prompt: str
    output_guardrail_params: LLMGuardOutputGuardrailParams | None = None


class LLMParams(BaseDoc):
    """Generation settings the orchestrator copies into the inputs of LLM and LVM nodes."""

    model: str | None = None
    max_tokens: int = 1024
    max_new_tokens: PositiveInt = 1024
    top_k: PositiveInt = 10
    top_p: NonNegativeFloat = 0.95
    typical_p: NonNegativeFloat = 0.95
    temperature: NonNegativeFloat = 0.01
    frequency_penalty: NonNegativeFloat = 0.0
    presence_penalty: NonNegativeFloat = 0.0
    repetition_penalty: NonNegativeFloat = 1.03
    stream: bool = True
    language: str = "auto"
    index_name: str | None = None
    chat_template: str | None = None


class RetrieverParms(BaseDoc):
    """Retrieval settings (OPEA's spelling, kept)."""

    search_type: str = "similarity"
    k: PositiveInt = 4
    distance_threshold: float | None = None
    fetch_k: PositiveInt = 20
    lambda_mult: NonNegativeFloat = 0.5
    score_threshold: NonNegativeFloat = 0.2


class RerankerParms(BaseDoc):
    """Reranking settings (OPEA's spelling, kept)."""

    top_n: PositiveInt = 1


class RAGASParams(BaseDoc):
    """Inputs of a RAGAS evaluation."""

    questions: list[TextDoc]
    answers: list[TextDoc]
    docs: list[TextDoc]
    ground_truths: list[TextDoc]


class RAGASScores(BaseDoc):
    """Scores of a RAGAS evaluation (`context_recallL` is OPEA's spelling)."""

    answer_relevancy: float
    faithfulness: float
    context_recallL: float  # OPEA's field name
    context_precision: float


class GraphDoc(BaseDoc):
    """A query for a knowledge-graph service."""

    text: str
    strtype: str | None = "query"
    max_new_tokens: int | None = 1024
    rag_index_name: str | None = "rag"
    rag_node_label: str | None = "Task"
    rag_text_node_properties: list[Any] | None = Field(default_factory=lambda: ["name", "description", "status"])
    rag_embedding_node_property: str | None = "embedding"


class LVMDoc(BaseDoc):
    """A prompt and image(s) for a vision-language model."""

    image: str | list[str]
    prompt: str
    max_new_tokens: MaxNewTokens = 512
    top_k: int = 10
    top_p: float = 0.95
    typical_p: float = 0.95
    temperature: float = 0.01
    repetition_penalty: float = 1.03
    stream: bool = False


class LVMVideoDoc(BaseDoc):
    """A prompt about a segment of a video."""

    video_url: str
    chunk_start: float
    chunk_duration: float
    prompt: str
    max_new_tokens: MaxNewTokens = 512


class SDInputs(BaseDoc):
    """Text-to-image settings."""

    prompt: str
    num_inference_steps: int = 50
    guidance_scale: float = 7.5
    num_images_per_prompt: int = 1
    seed: int = 42
    negative_prompt: str | list[str] | None = None
    height: int | None = None
    width: int | None = None
    lora_weight_name_or_path: str | None = None


class SDImg2ImgInputs(BaseDoc):
    """Image-to-image settings."""

    image: str
    prompt: str | list[str] | None = None
    height: int | None = None
    width: int | None = None
    strength: float = 0.8
    num_inference_steps: int | None = 50
    guidance_scale: float | None = 7.5
    negative_prompt: str | list[str] | None = None
    num_images_per_prompt: int = 1
    seed: int = 42
    lora_weight_name_or_path: str | None = None


class SDOutputs(BaseDoc):
    """Generated images."""

    images: list[Any]


class ImagePath(BaseDoc):
    """A path to an image."""

    image_path: str


class ImagesPath(BaseDoc):
    """Several image paths."""

    images_path: list[ImagePath]


class VideoPath(BaseDoc):
    """A path to a video."""

    video_path: str


class PrevQuestionDetails(BaseDoc):
    """One earlier turn of a conversation."""

    question: str
    answer: str


class PromptTemplateInput(BaseDoc):
    """Input of the prompt-template service."""

    data: dict[str, Any]
    conversation_history: list[PrevQuestionDetails] | None = None
    conversation_history_parse_type: str = "naive"
    system_prompt_template: str | None = None
    user_prompt_template: str | None = None


class TranslationInput(BaseDoc):
    """A text and the language to translate it into."""

    text: str
    target_language: str
