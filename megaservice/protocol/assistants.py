"""The Assistants API models of OPEA's `api_protocol` (assistants, threads, messages, runs)."""

from fastapi import UploadFile
from pydantic import BaseModel, Field

from megaservice.protocol.openai import ChatCompletionToolsParam

__all__ = [
    "AssistantsObject",
    "Attachments",
    "CreateAssistantsRequest",
    "CreateMessagesRequest",
    "CreateRunResponse",
    "CreateThreadsRequest",
    "ListAssistantsRequest",
    "MessageContent",
    "MessageObject",
    "RunObject",
    "ThreadObject",
]

_DEFAULT_MODEL = "Intel/neural-chat-7b-v3-3"


class ThreadObject(BaseModel):
    """A conversation thread."""

    id: str
    object: str = "thread"
    created_at: int


class AssistantsObject(BaseModel):
    """An assistant: a model with instructions and tools."""

    id: str
    object: str = "assistant"
    created_at: int
    name: str | None = None
    description: str | None = None
    model: str | None = _DEFAULT_MODEL
    instructions: str | None = None
    tools: list[ChatCompletionToolsParam] | None = None


class Attachments(BaseModel):
    """Files attached to a message."""

    file_list: list[UploadFile] = Field(default_factory=list)


class MessageContent(BaseModel):
    """One part of a message's content."""

    type: str = "text"
    text: str | None = None


class MessageObject(BaseModel):
    """A message in a thread."""

    id: str
    object: str = "thread.message"
    created_at: int
    thread_id: str
    role: str
    status: str | None = None
    content: list[MessageContent]
    assistant_id: str | None = None
    run_id: str | None = None
    attachments: Attachments | None = None


class RunObject(BaseModel):
    """One run of an assistant on a thread."""

    id: str
    object: str = "run"
    created_at: int
    thread_id: str
    assistant_id: str
    status: str | None = None
    last_error: str | None = None


class CreateAssistantsRequest(BaseModel):
    """Body of a request creating an assistant."""

    model: str | None = None
    name: str | None = None
    description: str | None = None
    instructions: str | None = None
    tools: list[ChatCompletionToolsParam] | None = None


class CreateMessagesRequest(BaseModel):
    """Body of a request adding a message to a thread."""

    role: str = "user"
    content: str | list[MessageContent]
    attachments: Attachments | None = None
    assistant_id: str | None = None


class CreateThreadsRequest(BaseModel):
    """Body of a request creating a thread, optionally with its first messages."""

    messages: list[CreateMessagesRequest] | None = None


class CreateRunResponse(BaseModel):
    """Body of a request starting a run (named as OPEA names it)."""

    assistant_id: str


class ListAssistantsRequest(BaseModel):
    """Paging of an assistant listing."""

    limit: int = 10
    order: str | None = "desc"
