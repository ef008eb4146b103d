"""From what a client sent to the body the model server gets: checked, prompt built, OPEA's fields left out.

Three kinds of request are answered, told apart by their fields (as OPEA's `Union` does):

    messages                      OpenAI's chat request (OPEA's `ChatCompletionRequest`)
    query                         OPEA's `LLMParamsDoc` (a question, maybe RAG `documents`)
    initial_query, retrieved_docs OPEA's `SearchedDoc` (a retriever's answer)

Each is checked with OPEA's wire model (`megaservice.protocol`) plus what that model leaves out
(an empty or malformed `messages`, an unknown role, `max_tokens` below 1), so a bad request is a
422 saying what is wrong before the model server is called. Then the fields go out by one rule:

* OpenAI's chat fields (`OPENAI_FIELDS`) go as the client sent them; absent ones are the model
  server's defaults (OPEA filled in its own: `max_tokens` 1024, `temperature` 0.01, ...);
* OPEA's own fields (`OPEA_FIELDS`: pipeline state such as `documents`, `k`, `top_n`, `id`, and the
  `LLMParams` an OPEA pipeline adds to every LLM call: `top_k`, `typical_p`, `repetition_penalty`,
  `max_new_tokens`, ...) are never sent; `documents` and `chat_template` make the prompt;
* any other field passes through unchanged: a model server's own extension the client asked for
  (vLLM's `min_p` or `guided_json`, llama.cpp's `cache_prompt`, the openai client's `extra_body`);
  the server refuses what it does not know, and that 4xx reaches the client.

`null` fields are not sent (some OpenAI-compatible servers refuse them, as OPEA noted).
"""

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel

from megaservice.components.llm.prompt import document_texts, fill, rag_prompt
from megaservice.exceptions import InputError
from megaservice.protocol.docs import LLMParamsDoc, SearchedDoc
from megaservice.protocol.openai import ChatCompletionNamedToolChoiceParam, ChatCompletionRequest, Tokens

__all__ = ["OPEA_FIELDS", "OPENAI_FIELDS", "ROLES", "Upstream", "build_request"]

OPENAI_FIELDS = frozenset(
    {
        "audio", "frequency_penalty", "function_call", "functions", "logit_bias", "logprobs",
        "max_completion_tokens", "max_tokens", "messages", "metadata", "modalities", "model", "n",
        "parallel_tool_calls", "prediction", "presence_penalty", "prompt_cache_key", "reasoning_effort",
        "response_format", "safety_identifier", "seed", "service_tier", "stop", "store", "stream",
        "stream_options", "temperature", "tool_choice", "tools", "top_logprobs", "top_p", "user", "verbosity",
        "web_search_options",
    }
)  # fmt: skip
"""The fields of OpenAI's chat completion request."""

OPEA_FIELDS = frozenset(
    {
        "add_generation_prompt", "add_special_tokens", "audio_path", "best_of", "chat_template", "dimensions",
        "distance_threshold", "documents", "downstream_black_list", "echo", "embedding", "encoding_format",
        "fetch_k", "id", "image_path", "index_name", "initial_query", "input", "input_guardrail_params", "k",
        "lambda_mult", "language", "max_new_tokens", "output_guardrail_params", "query", "repetition_penalty",
        "request_type", "reranked_docs", "retrieved_docs", "score_threshold", "search_type", "suffix", "timeout",
        "top_k", "top_n", "typical_p",
    }
)  # fmt: skip
"""The fields of OPEA's `ChatCompletionRequest`, `LLMParamsDoc`, `LLMParams` and `SearchedDoc` that OpenAI's
request does not have (`chat_template_kwargs` excepted: a model-server option, passed through)."""

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
"""The message roles accepted."""

_WIDER = ("max_completion_tokens", "response_format", "seed", "tool_choice")
"""OpenAI fields that OPEA's `ChatCompletionRequest` lacks or narrows (`_OpenAIExtras` checks them)."""


class _ResponseFormat(BaseModel):
    type: Literal["text", "json_object", "json_schema"]


class _OpenAIExtras(BaseModel):
    """OpenAI's values of the `_WIDER` fields (OPEA's model refuses `tool_choice: "auto"`, `json_schema`, seed 0)."""

    max_completion_tokens: Tokens = None
    response_format: _ResponseFormat | None = None
    seed: int | None = None
    tool_choice: Literal["none", "auto", "required"] | ChatCompletionNamedToolChoiceParam | None = None


@dataclass(frozen=True, slots=True)
class Upstream:
    """What goes to the model server for one request."""

    body: dict[str, Any]
    """The OpenAI chat request."""
    stream: bool
    """Whether the answer is streamed."""


def build_request(data: Any, model: str | None) -> Upstream:
    """The model server's request for the client's `data`; `model` is used when the request names none.

    Raises:
        InputError: 422 saying what is wrong with `data`.
        pydantic.ValidationError: `data` does not fit OPEA's wire model (the service answers 422).
    """
    if not isinstance(data, dict):
        raise InputError("the request body must be a JSON object", status_code=422)
    if "messages" in data:
        messages = _chat_messages(data)
    elif "query" in data:
        messages = _params_doc_messages(data)
    elif "initial_query" in data or "retrieved_docs" in data:
        messages = _searched_doc_messages(data)
    else:
        raise InputError(
            "expected an OpenAI chat request ('messages'), OPEA's LLMParamsDoc ('query') "
            "or OPEA's SearchedDoc ('initial_query' and 'retrieved_docs')",
            status_code=422,
        )
    body = {key: value for key, value in data.items() if value is not None and key not in OPEA_FIELDS}
    body["messages"] = messages
    asked = data.get("model")
    chosen = asked if isinstance(asked, str) and asked else model
    if chosen:
        body["model"] = chosen
    else:
        body.pop("model", None)
    if "query" in data and "messages" not in data:
        body.setdefault("stream", True)  # an LLMParamsDoc streams unless told not to (OPEA)
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise InputError(f"stream must be true or false, got {stream!r}", status_code=422)
    return Upstream(body, stream)


def _chat_messages(data: dict[str, Any]) -> list[dict[str, Any]]:
    messages = data["messages"]
    if not isinstance(messages, str):
        _check_messages(messages)  # before the model: its errors say less about a message
    wider = {k: data[k] for k in _WIDER if k in data}
    ChatCompletionRequest.model_validate({k: v for k, v in data.items() if k not in wider} if wider else data)
    if wider:
        _OpenAIExtras.model_validate(wider)
    documents = document_texts(data.get("documents"))
    template = data.get("chat_template")
    if isinstance(messages, str):
        if not messages.strip():
            raise InputError("messages must not be empty", status_code=422)
        return [{"role": "user", "content": _prompt(messages, documents, template)}]
    first = messages[0]
    content = first.get("content")
    if first["role"] == "system" and isinstance(content, str) and "{context}" in content:
        context = "\n".join(documents)
        return [{**first, "content": content.replace("{context}", context)}, *messages[1:]]
    if isinstance(template, str):
        system = fill(template, context="\n".join(documents), question=_last_user_text(messages))
        if first["role"] == "system" and isinstance(content, str):
            return [{**first, "content": f"{system}\n\n{content}"}, *messages[1:]]
        return [{"role": "system", "content": system}, *messages]
    if documents:
        return _with_rag_prompt(messages, documents)
    return messages  # type: ignore[no-any-return]  # checked to be a list of message objects


def _params_doc_messages(data: dict[str, Any]) -> list[dict[str, Any]]:
    doc = LLMParamsDoc.model_validate(data)
    if doc.max_tokens < 1:
        raise InputError(f"max_tokens must be at least 1, got {doc.max_tokens}", status_code=422)
    if not doc.query.strip():
        raise InputError("query must not be empty", status_code=422)
    return [{"role": "user", "content": _prompt(doc.query, document_texts(doc.documents), doc.chat_template)}]


def _searched_doc_messages(data: dict[str, Any]) -> list[dict[str, Any]]:
    doc = SearchedDoc.model_validate(data)
    texts: list[str] = []
    for found in doc.retrieved_docs:
        if isinstance(found.text, list):
            texts.extend(found.text)
        elif found.text:
            texts.append(found.text)
    template = data.get("chat_template")
    return [{"role": "user", "content": _prompt(doc.initial_query, texts, template)}]


def _prompt(question: str, documents: list[str], template: Any) -> str:
    """The user prompt: the request's template filled in, else OPEA's RAG prompt, else the question."""
    if template is not None:
        if not isinstance(template, str):
            raise InputError("chat_template must be a string", status_code=422)
        return fill(template, context="\n".join(documents), question=question)
    return rag_prompt(question, documents) if documents else question


def _check_messages(messages: Any) -> None:
    if not isinstance(messages, list) or not messages:
        raise InputError("messages must be a non-empty list of messages (or a string)", status_code=422)
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise InputError(f"messages[{index}] must be an object with a role and a content", status_code=422)
        role = message.get("role")
        if role not in ROLES:
            raise InputError(
                f"messages[{index}].role must be one of {', '.join(sorted(ROLES))}; got {role!r}", status_code=422
            )
        content = message.get("content")
        if content is None and role != "assistant":  # an assistant's tool call may have no content
            raise InputError(f"messages[{index}] ({role}) has no content", status_code=422)
        if content is not None and not isinstance(content, str | list):
            raise InputError(
                f"messages[{index}].content must be a string or a list of parts, got {type(content).__name__}",
                status_code=422,
            )


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message["role"] == "user":
            return _text(message.get("content"))
    return ""


def _with_rag_prompt(messages: list[dict[str, Any]], documents: list[str]) -> list[dict[str, Any]]:
    """`messages` with the last user message replaced by OPEA's RAG prompt over `documents`."""
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        if message["role"] == "user":
            rag = {**message, "content": rag_prompt(_text(message.get("content")), documents)}
            return [*messages[:index], rag, *messages[index + 1 :]]
    return messages
