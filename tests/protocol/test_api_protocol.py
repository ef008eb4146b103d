import orjson
import pytest
from fastapi import Depends, FastAPI
from pydantic import ValidationError

from megaservice.protocol import (
    ApiErrorCode,
    ChatCompletionRequest,
    CreateMessagesRequest,
    CreateThreadsRequest,
    DataprepRequest,
    FineTuningJob,
    FineTuningJobsRequest,
    MessageContent,
    RedisDataprepRequest,
    check_requests,
)
from megaservice.testing import client_for

# Every name of OPEA's `comps.cores.proto.api_protocol` (GenAIComps 1.5) that OPEA code imports.
OPEA_API_PROTOCOL = [
    "ServiceCard",
    "ServiceList",
    "UsageInfo",
    "ResponseFormat",
    "StreamOptions",
    "FunctionDefinition",
    "ChatCompletionToolsParam",
    "ChatCompletionNamedFunction",
    "ChatCompletionNamedToolChoiceParam",
    "TokenCheckRequestItem",
    "TokenCheckRequest",
    "TokenCheckResponseItem",
    "TokenCheckResponse",
    "DataprepRequest",
    "Neo4jDataprepRequest",
    "RedisDataprepRequest",
    "ArangoDBDataprepRequest",
    "EmbeddingRequest",
    "EmbeddingResponseData",
    "EmbeddingResponse",
    "RetrievalRequest",
    "RetrievalRequestArangoDB",
    "RetrievalResponseData",
    "RetrievalResponse",
    "RerankingRequest",
    "RerankingResponseData",
    "RerankingResponse",
    "ChatCompletionRequest",
    "DocSumChatCompletionRequest",
    "AudioChatCompletionRequest",
    "AudioTranscriptionResponse",
    "AudioSpeechRequest",
    "ChatMessage",
    "ChatCompletionResponseChoice",
    "ChatCompletionResponse",
    "DeltaMessage",
    "ChatCompletionResponseStreamChoice",
    "ChatCompletionStreamResponse",
    "CompletionRequest",
    "CompletionResponseChoice",
    "CompletionResponse",
    "CompletionResponseStreamChoice",
    "CompletionStreamResponse",
    "AudioQnaRequest",
    "ErrorResponse",
    "ThreadObject",
    "AssistantsObject",
    "Attachments",
    "MessageContent",
    "MessageObject",
    "RunObject",
    "CreateAssistantsRequest",
    "CreateMessagesRequest",
    "CreateThreadsRequest",
    "CreateRunResponse",
    "ListAssistantsRequest",
    "ApiErrorCode",
    "create_error_response",
    "check_requests",
    "Hyperparameters",
    "FineTuningJobWandbIntegration",
    "FineTuningJobWandbIntegrationObject",
    "FineTuningJobsRequest",
    "Error",
    "FineTuningJob",
    "FineTuningJobIDRequest",
    "FineTuningJobListRequest",
    "FineTuningJobList",
    "UploadFileRequest",
    "FileObject",
    "Metrics",
    "FineTuningJobCheckpoint",
    "ALLOWED_CHATCOMPLETION_ARGS",
    "ALLOWED_COMPLETION_ARGS",
    "RouteEndpointDoc",
    "Text2QueryRequest",
    "ArbPostHearingAssistantChatCompletionRequest",
]


def test_every_opea_api_protocol_name_resolves_through_the_compat_alias() -> None:
    import megaservice.compat

    megaservice.compat.install()
    try:
        import comps.cores.proto.api_protocol as api_protocol  # type: ignore[import-not-found]

        missing = [name for name in OPEA_API_PROTOCOL if not hasattr(api_protocol, name)]
    finally:
        megaservice.compat.uninstall()
    assert missing == []


def test_fine_tuning_job_json_has_openai_defaults() -> None:
    job = FineTuningJob.model_validate(
        {"id": "ft-1", "created_at": 1, "hyperparameters": {}, "model": "m", "status": "queued", "training_file": "f"}
    )
    data = orjson.loads(job.model_dump_json())
    assert data["object"] == "fine_tuning.job"
    assert data["hyperparameters"] == {"batch_size": "auto", "learning_rate_multiplier": "auto", "n_epochs": "auto"}
    assert data["error"] is None and data["result_files"] is None


def test_fine_tuning_job_rejects_an_unknown_status() -> None:
    with pytest.raises(ValidationError, match="status"):
        FineTuningJob(id="ft-1", created_at=1, hyperparameters={}, model="m", status="paused", training_file="f")  # type: ignore[arg-type]


def test_fine_tuning_request_takes_numbers_or_auto() -> None:
    request = FineTuningJobsRequest.model_validate(
        {"model": "m", "training_file": "f", "hyperparameters": {"n_epochs": 3, "batch_size": "auto"}}
    )
    assert request.hyperparameters is not None
    assert request.hyperparameters.n_epochs == 3
    with pytest.raises(ValidationError, match="n_epochs"):
        FineTuningJobsRequest.model_validate({"model": "m", "training_file": "f", "hyperparameters": {"n_epochs": "x"}})


def test_thread_request_takes_text_or_content_parts() -> None:
    request = CreateThreadsRequest.model_validate(
        {"messages": [{"content": "hello"}, {"role": "assistant", "content": [{"text": "hi"}]}]}
    )
    assert request.messages is not None
    first, second = request.messages
    assert (first.role, first.content) == ("user", "hello")
    assert second.content == [MessageContent(type="text", text="hi")]
    assert CreateMessagesRequest(content="x").assistant_id is None


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("n", 0, "0 is less than the minimum of 1 - 'n'"),
        ("temperature", 2.5, "2.5 is greater than the maximum of 2 - 'temperature'"),
        ("top_p", 1.5, "1.5 is greater than the maximum of 1 - 'top_p'"),
    ],
)
def test_check_requests_names_the_first_value_out_of_range(field: str, value: float, message: str) -> None:
    request = ChatCompletionRequest.model_construct(**{**ChatCompletionRequest(messages="q").__dict__, field: value})
    response = check_requests(request)
    assert response is not None
    assert response.status_code == 403  # the first three digits of PARAM_OUT_OF_RANGE (40302)
    assert orjson.loads(response.body) == {
        "object": "error",
        "message": message,
        "code": ApiErrorCode.PARAM_OUT_OF_RANGE,
    }


def test_check_requests_accepts_a_valid_request() -> None:
    assert check_requests(ChatCompletionRequest(messages="q", temperature=1.0, top_p=0.5, top_k=1)) is None


pytestmark = pytest.mark.anyio


async def test_dataprep_request_reads_a_multipart_form() -> None:
    app = FastAPI()

    @app.post("/v1/dataprep/ingest")
    async def ingest(request: RedisDataprepRequest = Depends()) -> dict[str, object]:
        files = request.files if isinstance(request.files, list) else [request.files]
        return {
            "names": [f.filename for f in files if f is not None],
            "sizes": [len(await f.read()) for f in files if f is not None],
            "chunk_size": request.chunk_size,
            "chunk_overlap": request.chunk_overlap,
            "index_name": request.index_name,
        }

    async with client_for(app) as client:
        files = [("files", ("a.txt", b"alpha", "text/plain")), ("files", ("b.txt", b"beta!!", "text/plain"))]
        response = await client.post("/v1/dataprep/ingest", files=files, data={"chunk_size": "300", "index_name": "i"})
    assert response.status_code == 200
    assert response.json() == {
        "names": ["a.txt", "b.txt"],
        "sizes": [5, 6],
        "chunk_size": 300,
        "chunk_overlap": 100,
        "index_name": "i",
    }


async def test_dataprep_request_rejects_a_non_number_chunk_size() -> None:
    app = FastAPI()

    @app.post("/ingest")
    async def ingest(request: DataprepRequest = Depends()) -> dict[str, object]:
        return {"chunk_size": request.chunk_size}

    async with client_for(app) as client:
        response = await client.post("/ingest", data={"chunk_size": "big"})
    assert response.status_code == 422
    assert "chunk_size" in response.text
