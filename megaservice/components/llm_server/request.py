"""An OpenAI chat completion request, checked and read into what the model needs (`ChatRequest`).

Every field of OpenAI's chat request is either honoured, ignored because it does not change the
answer, or refused with a 400 naming it; so are llama.cpp's own sampling fields. Anything else is
refused with a 400 naming the field (a misspelt `max_token` must not be silently dropped).

    honoured     messages, model, max_tokens / max_completion_tokens, temperature, top_p, stop, seed,
                 presence_penalty, frequency_penalty, logit_bias, response_format (json_object,
                 json_schema: constrained by a grammar), stream, stream_options.include_usage,
                 n (1 only), logprobs (false only), tool_choice ("none" only), tools (empty only)
    llama.cpp's  top_k, min_p, typical_p, repeat_penalty
    ignored      user, metadata, store, service_tier, parallel_tool_calls, prompt_cache_key,
                 safety_identifier, name (of a message)

Absent sampling fields take llama-cpp-python's chat defaults (`DEFAULTS`: temperature 0.2, top_p
0.95, top_k 40, min_p 0.05), the ones a small model needs to stay on topic; OpenAI's own defaults
(temperature 1, top_p 1) can be sent explicitly.
"""

from dataclasses import dataclass, field
from typing import Any, Literal

from megaservice.exceptions import InputError

__all__ = ["DEFAULTS", "HONOURED", "IGNORED", "ROLES", "ChatRequest", "read_chat_request"]

ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
"""The message roles accepted, and the role the chat template sees (OpenAI's `developer` is a system message)."""

DEFAULTS: dict[str, float] = {
    "temperature": 0.2,
    "top_p": 0.95,
    "top_k": 40,
    "min_p": 0.05,
    "typical_p": 1.0,
    "repeat_penalty": 1.0,
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
}
"""Sampling values used when the request has none (llama-cpp-python's `create_chat_completion` defaults)."""

_RANGES: dict[str, tuple[float, float]] = {
    "temperature": (0.0, 2.0),
    "top_p": (0.0, 1.0),
    "min_p": (0.0, 1.0),
    "typical_p": (0.0, 1.0),
    "repeat_penalty": (0.0, 10.0),
    "presence_penalty": (-2.0, 2.0),
    "frequency_penalty": (-2.0, 2.0),
}

HONOURED = frozenset(
    {
        "messages", "model", "max_tokens", "max_completion_tokens", "stop", "seed", "logit_bias", "response_format",
        "stream", "stream_options", "n", "logprobs", "tool_choice", "tools", "top_k", *_RANGES,
    }
)  # fmt: skip
"""Fields that change the answer (some only in the values documented above)."""
IGNORED = frozenset(
    {"user", "metadata", "store", "service_tier", "parallel_tool_calls", "prompt_cache_key", "safety_identifier"}
)
"""OpenAI fields accepted and ignored: they do not change the answer."""

_MAX_STOPS = 16
_MAX_LOGIT_BIAS = 300


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """What a chat completion request asks of the model."""

    messages: list[dict[str, str]]
    """`{"role", "content"}` pairs (roles as the chat template knows them, content as text)."""
    model: str | None = None
    """The model the client named (`None`: none)."""
    max_tokens: int | None = None
    """Most tokens to generate (`None`: up to the end of the context)."""
    sampling: dict[str, float] = field(default_factory=lambda: dict(DEFAULTS))
    """temperature, top_p, top_k, min_p, typical_p, repeat_penalty, presence_penalty, frequency_penalty."""
    seed: int | None = None
    """The sampler's seed (`None`: a random one)."""
    stop: tuple[str, ...] = ()
    """Generation ends before the first of these; it is not part of the answer."""
    logit_bias: dict[int, float] = field(default_factory=dict)
    """Added to the logits of these token ids (-100 bans a token, 100 forces it)."""
    response_format: Literal["text", "json_object", "json_schema"] = "text"
    """`json_object` / `json_schema`: the answer is constrained to JSON (to `schema`) by a grammar."""
    schema: dict[str, Any] | None = None
    """The JSON schema of `json_schema`."""
    stream: bool = False
    """Answer as server-sent events, token by token."""
    include_usage: bool = False
    """Streaming: end with a chunk carrying the token counts (`stream_options.include_usage`)."""


def read_chat_request(data: Any) -> ChatRequest:
    """The `ChatRequest` of a JSON body.

    Raises:
        InputError: 400 naming the field that is wrong, unknown or not supported.
    """
    if not isinstance(data, dict):
        raise InputError("the request body must be a JSON object", status_code=400)
    unknown = sorted(set(data) - HONOURED - IGNORED)
    if unknown:
        raise InputError(f"unknown field(s): {', '.join(unknown)}", status_code=400)
    _refuse_unsupported(data)
    sampling = dict(DEFAULTS)
    for name, (low, high) in _RANGES.items():
        value = data.get(name)
        if value is not None:
            sampling[name] = _number(name, value, low, high)
    top_k = data.get("top_k")
    if top_k is not None:
        sampling["top_k"] = _integer("top_k", top_k, minimum=0)
    response_format, schema = _response_format(data.get("response_format"))
    stream = data.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise InputError(f"stream must be true or false, got {stream!r}", status_code=400)
    model = data.get("model")
    if model is not None and not isinstance(model, str):
        raise InputError("model must be a string", status_code=400)
    seed = data.get("seed")
    return ChatRequest(
        messages=_messages(data.get("messages")),
        model=model or None,
        max_tokens=_max_tokens(data),
        sampling=sampling,
        seed=None if seed is None else _integer("seed", seed),
        stop=_stops(data.get("stop")),
        logit_bias=_logit_bias(data.get("logit_bias")),
        response_format=response_format,
        schema=schema,
        stream=bool(stream),
        include_usage=_include_usage(data.get("stream_options"), bool(stream)),
    )


def _refuse_unsupported(data: dict[str, Any]) -> None:
    """OpenAI fields this server has no answer for, unless they hold the value that asks for nothing."""
    if data.get("n") not in (None, 1):
        raise InputError("n must be 1: this server generates one choice per request", status_code=400)
    if data.get("logprobs") not in (None, False):
        raise InputError("logprobs are not supported by this server", status_code=400)
    if data.get("tools") not in (None, []):
        raise InputError("tools are not supported by this server's model", status_code=400)
    if data.get("tool_choice") not in (None, "none"):
        raise InputError("tool_choice must be 'none': this server's model does not call tools", status_code=400)


def _messages(messages: Any) -> list[dict[str, str]]:
    if not isinstance(messages, list) or not messages:
        raise InputError("messages must be a non-empty list of messages", status_code=400)
    read: list[dict[str, str]] = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise InputError(f"messages[{index}] must be an object with a role and a content", status_code=400)
        role = message.get("role")
        if role not in ROLES:
            if role in ("tool", "function"):
                problem = "tool results are not supported by this server's model"
            else:
                problem = f"must be one of {', '.join(ROLES)}"
            raise InputError(f"messages[{index}].role {role!r}: {problem}", status_code=400)
        if message.get("tool_calls") or message.get("function_call"):
            raise InputError(f"messages[{index}]: tool calls are not supported by this server", status_code=400)
        read.append({"role": ROLES[role], "content": _content(index, message.get("content"))})
    return read


def _content(index: int, content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts: list[str] = []
        for number, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise InputError(
                    f"messages[{index}].content[{number}]: only text parts are supported (got {kind!r})",
                    status_code=400,
                )
            texts.append(part["text"])
        return "\n".join(texts)
    if content is None:
        raise InputError(f"messages[{index}] has no content", status_code=400)
    raise InputError(
        f"messages[{index}].content must be a string or a list of text parts, got {type(content).__name__}",
        status_code=400,
    )


def _max_tokens(data: dict[str, Any]) -> int | None:
    name = "max_completion_tokens" if data.get("max_completion_tokens") is not None else "max_tokens"
    value = data.get(name)
    return None if value is None else _integer(name, value, minimum=1)


def _stops(stop: Any) -> tuple[str, ...]:
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise InputError("stop must be a string or a list of strings", status_code=400)
    if len(stops) > _MAX_STOPS:
        raise InputError(f"stop has {len(stops)} sequences; at most {_MAX_STOPS}", status_code=400)
    return tuple(s for s in stops if s)


def _logit_bias(bias: Any) -> dict[int, float]:
    if bias is None:
        return {}
    if not isinstance(bias, dict):
        raise InputError("logit_bias must be an object mapping token ids to numbers", status_code=400)
    if len(bias) > _MAX_LOGIT_BIAS:
        raise InputError(f"logit_bias has {len(bias)} entries; at most {_MAX_LOGIT_BIAS}", status_code=400)
    read: dict[int, float] = {}
    for key, value in bias.items():
        try:
            token = int(key)
        except ValueError:
            raise InputError(f"logit_bias: {key!r} is not a token id", status_code=400) from None
        read[token] = _number(f"logit_bias[{key}]", value, -100.0, 100.0)
    return read


def _response_format(value: Any) -> tuple[Literal["text", "json_object", "json_schema"], dict[str, Any] | None]:
    if value is None:
        return "text", None
    kind = value.get("type") if isinstance(value, dict) else None
    if kind in ("text", "json_object"):
        return kind, None
    if kind == "json_schema":
        holder = value.get("json_schema")
        schema = holder.get("schema") if isinstance(holder, dict) else None
        if not isinstance(schema, dict):
            raise InputError("response_format.json_schema.schema must be a JSON schema object", status_code=400)
        return "json_schema", schema
    raise InputError("response_format.type must be text, json_object or json_schema", status_code=400)


def _include_usage(options: Any, stream: bool) -> bool:
    if options is None:
        return False
    if not isinstance(options, dict):
        raise InputError("stream_options must be an object", status_code=400)
    if not stream:
        raise InputError("stream_options is only allowed with stream: true", status_code=400)
    include = options.get("include_usage", False)
    if not isinstance(include, bool):
        raise InputError("stream_options.include_usage must be true or false", status_code=400)
    return include


def _number(name: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"{name} must be a number, got {value!r}", status_code=400)
    if not low <= value <= high:
        raise InputError(f"{name} must be between {low:g} and {high:g}, got {value!r}", status_code=400)
    return float(value)


def _integer(name: str, value: Any, *, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{name} must be an integer, got {value!r}", status_code=400)
    if minimum is not None and value < minimum:
        raise InputError(f"{name} must be at least {minimum}, got {value}", status_code=400)
    return value
