"""Wire models: OPEA's docarray-shaped documents and its OpenAI-style API models, on plain pydantic v2.

    base        BaseDoc (auto `id`), TopologyInfo
    docs        TextDoc, EmbedDoc, SearchedDoc, LLMParams, ... (`comps.cores.proto.docarray`)
    openai      ChatCompletionRequest/Response, CompletionRequest, ... (`comps.cores.proto.api_protocol`)
    rag         EmbeddingRequest/Response, RetrievalRequest/Response, RerankingRequest/Response
    audio       AudioChatCompletionRequest, AudioTranscriptionResponse, AudioSpeechRequest
    assistants  the Assistants API: AssistantsObject, ThreadObject, MessageObject, RunObject, ...
    finetuning  the fine-tuning and files API: FineTuningJobsRequest, FineTuningJob, FileObject, ...
                (its `Error` and `Metrics` are only in `megaservice.protocol.finetuning`: too generic here)
    forms       multipart-form requests: DataprepRequest and its backends' variants, AudioQnaRequest
    guardrails  LLM-Guard scanner settings

Each submodule is imported on first use of one of its names.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from megaservice.protocol.assistants import *  # noqa: F403
    from megaservice.protocol.audio import *  # noqa: F403
    from megaservice.protocol.base import BaseDoc as BaseDoc, TopologyInfo as TopologyInfo, UsageInfo as UsageInfo
    from megaservice.protocol.docs import *  # noqa: F403
    from megaservice.protocol.finetuning import (
        FileObject as FileObject,
        FineTuningJob as FineTuningJob,
        FineTuningJobCheckpoint as FineTuningJobCheckpoint,
        FineTuningJobIDRequest as FineTuningJobIDRequest,
        FineTuningJobList as FineTuningJobList,
        FineTuningJobListRequest as FineTuningJobListRequest,
        FineTuningJobsRequest as FineTuningJobsRequest,
        FineTuningJobWandbIntegration as FineTuningJobWandbIntegration,
        FineTuningJobWandbIntegrationObject as FineTuningJobWandbIntegrationObject,
        Hyperparameters as Hyperparameters,
        UploadFileRequest as UploadFileRequest,
    )
    from megaservice.protocol.forms import *  # noqa: F403
    from megaservice.protocol.guardrails import (
        LLMGuardInputGuardrailParams as LLMGuardInputGuardrailParams,
        LLMGuardOutputGuardrailParams as LLMGuardOutputGuardrailParams,
    )
    from megaservice.protocol.openai import *  # noqa: F403
    from megaservice.protocol.rag import *  # noqa: F403

_EXPORTS: dict[str, str] = {
    "BaseDoc": "megaservice.protocol.base",
    "TopologyInfo": "megaservice.protocol.base",
    "Audio2TextDoc": "megaservice.protocol.docs",
    "Audio2text": "megaservice.protocol.docs",
    "Base64ByteStrDoc": "megaservice.protocol.docs",
    "DocPath": "megaservice.protocol.docs",
    "DocSumDoc": "megaservice.protocol.docs",
    "EmbedDoc": "megaservice.protocol.docs",
    "EmbedMultimodalDoc": "megaservice.protocol.docs",
    "FactualityDoc": "megaservice.protocol.docs",
    "GeneratedDoc": "megaservice.protocol.docs",
    "GraphDoc": "megaservice.protocol.docs",
    "ImageDoc": "megaservice.protocol.docs",
    "ImagePath": "megaservice.protocol.docs",
    "ImagesPath": "megaservice.protocol.docs",
    "LLMParams": "megaservice.protocol.docs",
    "LLMParamsDoc": "megaservice.protocol.docs",
    "LVMDoc": "megaservice.protocol.docs",
    "LVMSearchedMultimodalDoc": "megaservice.protocol.docs",
    "LVMVideoDoc": "megaservice.protocol.docs",
    "MetadataTextDoc": "megaservice.protocol.docs",
    "MultimodalDoc": "megaservice.protocol.docs",
    "PIIRequestDoc": "megaservice.protocol.docs",
    "PIIResponseDoc": "megaservice.protocol.docs",
    "PrevQuestionDetails": "megaservice.protocol.docs",
    "PromptTemplateInput": "megaservice.protocol.docs",
    "RAGASParams": "megaservice.protocol.docs",
    "RAGASScores": "megaservice.protocol.docs",
    "RerankedDoc": "megaservice.protocol.docs",
    "RerankerParms": "megaservice.protocol.docs",
    "RetrieverParms": "megaservice.protocol.docs",
    "SDImg2ImgInputs": "megaservice.protocol.docs",
    "SDInputs": "megaservice.protocol.docs",
    "SDOutputs": "megaservice.protocol.docs",
    "ScoreDoc": "megaservice.protocol.docs",
    "SearchedDoc": "megaservice.protocol.docs",
    "SearchedMultimodalDoc": "megaservice.protocol.docs",
    "TextDoc": "megaservice.protocol.docs",
    "TextImageDoc": "megaservice.protocol.docs",
    "TranslationInput": "megaservice.protocol.docs",
    "VideoPath": "megaservice.protocol.docs",
    "ALLOWED_CHATCOMPLETION_ARGS": "megaservice.protocol.openai",
    "ALLOWED_COMPLETION_ARGS": "megaservice.protocol.openai",
    "ApiErrorCode": "megaservice.protocol.openai",
    "ArbPostHearingAssistantChatCompletionRequest": "megaservice.protocol.openai",
    "AudioChatCompletionRequest": "megaservice.protocol.audio",
    "AudioSpeechRequest": "megaservice.protocol.audio",
    "AudioTranscriptionResponse": "megaservice.protocol.audio",
    "ChatCompletionNamedFunction": "megaservice.protocol.openai",
    "ChatCompletionNamedToolChoiceParam": "megaservice.protocol.openai",
    "ChatCompletionRequest": "megaservice.protocol.openai",
    "ChatCompletionResponse": "megaservice.protocol.openai",
    "ChatCompletionResponseChoice": "megaservice.protocol.openai",
    "ChatCompletionResponseStreamChoice": "megaservice.protocol.openai",
    "ChatCompletionStreamResponse": "megaservice.protocol.openai",
    "ChatCompletionToolsParam": "megaservice.protocol.openai",
    "ChatMessage": "megaservice.protocol.openai",
    "CompletionRequest": "megaservice.protocol.openai",
    "CompletionResponse": "megaservice.protocol.openai",
    "CompletionResponseChoice": "megaservice.protocol.openai",
    "CompletionResponseStreamChoice": "megaservice.protocol.openai",
    "CompletionStreamResponse": "megaservice.protocol.openai",
    "DeltaMessage": "megaservice.protocol.openai",
    "DocSumChatCompletionRequest": "megaservice.protocol.openai",
    "EmbeddingRequest": "megaservice.protocol.rag",
    "EmbeddingResponse": "megaservice.protocol.rag",
    "EmbeddingResponseData": "megaservice.protocol.rag",
    "ErrorResponse": "megaservice.protocol.openai",
    "FunctionDefinition": "megaservice.protocol.openai",
    "RerankingRequest": "megaservice.protocol.rag",
    "RerankingResponse": "megaservice.protocol.rag",
    "RerankingResponseData": "megaservice.protocol.rag",
    "ResponseFormat": "megaservice.protocol.openai",
    "RetrievalRequest": "megaservice.protocol.rag",
    "RetrievalRequestArangoDB": "megaservice.protocol.rag",
    "RetrievalResponse": "megaservice.protocol.rag",
    "RetrievalResponseData": "megaservice.protocol.rag",
    "RouteEndpointDoc": "megaservice.protocol.openai",
    "ServiceCard": "megaservice.protocol.openai",
    "ServiceList": "megaservice.protocol.openai",
    "StreamOptions": "megaservice.protocol.openai",
    "Text2QueryRequest": "megaservice.protocol.openai",
    "TokenCheckRequest": "megaservice.protocol.rag",
    "TokenCheckRequestItem": "megaservice.protocol.rag",
    "TokenCheckResponse": "megaservice.protocol.rag",
    "TokenCheckResponseItem": "megaservice.protocol.rag",
    "UsageInfo": "megaservice.protocol.base",
    "check_requests": "megaservice.protocol.openai",
    "create_error_response": "megaservice.protocol.openai",
    "AssistantsObject": "megaservice.protocol.assistants",
    "Attachments": "megaservice.protocol.assistants",
    "CreateAssistantsRequest": "megaservice.protocol.assistants",
    "CreateMessagesRequest": "megaservice.protocol.assistants",
    "CreateRunResponse": "megaservice.protocol.assistants",
    "CreateThreadsRequest": "megaservice.protocol.assistants",
    "ListAssistantsRequest": "megaservice.protocol.assistants",
    "MessageContent": "megaservice.protocol.assistants",
    "MessageObject": "megaservice.protocol.assistants",
    "RunObject": "megaservice.protocol.assistants",
    "ThreadObject": "megaservice.protocol.assistants",
    "FileObject": "megaservice.protocol.finetuning",
    "FineTuningJob": "megaservice.protocol.finetuning",
    "FineTuningJobCheckpoint": "megaservice.protocol.finetuning",
    "FineTuningJobIDRequest": "megaservice.protocol.finetuning",
    "FineTuningJobList": "megaservice.protocol.finetuning",
    "FineTuningJobListRequest": "megaservice.protocol.finetuning",
    "FineTuningJobWandbIntegration": "megaservice.protocol.finetuning",
    "FineTuningJobWandbIntegrationObject": "megaservice.protocol.finetuning",
    "FineTuningJobsRequest": "megaservice.protocol.finetuning",
    "Hyperparameters": "megaservice.protocol.finetuning",
    "UploadFileRequest": "megaservice.protocol.finetuning",
    "ArangoDBDataprepRequest": "megaservice.protocol.forms",
    "AudioQnaRequest": "megaservice.protocol.forms",
    "DataprepRequest": "megaservice.protocol.forms",
    "Neo4jDataprepRequest": "megaservice.protocol.forms",
    "RedisDataprepRequest": "megaservice.protocol.forms",
    "LLMGuardInputGuardrailParams": "megaservice.protocol.guardrails",
    "LLMGuardOutputGuardrailParams": "megaservice.protocol.guardrails",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'megaservice.protocol' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
