"""What a chat request may ask for: how many messages, how many tokens to generate.

The wire models check these when they validate (`ChatCompletionRequest`, `CompletionRequest`,
`LLMParamsDoc`), so every service that parses a request with them refuses an oversized one with a
4xx saying which limit it broke, before any node is called. The limits come from the environment
(`MEGASERVICE_MAX_MESSAGES`, default 1000; `MEGASERVICE_MAX_TOKENS`, default 32768; 0 turns one
off) or from `set_input_limits()`.
"""

import os
from dataclasses import dataclass, replace
from typing import Any

from pydantic import AfterValidator

__all__ = ["InputLimits", "MaxTokens", "MessagesLimit", "get_input_limits", "set_input_limits"]


@dataclass(frozen=True, slots=True)
class InputLimits:
    """Upper bounds on what one request may ask for (`None`: no bound)."""

    max_messages: int | None = 1000
    """Messages in one chat request."""
    max_tokens: int | None = 32768
    """Tokens one request may ask the LLM to generate (`max_tokens`, `max_new_tokens`)."""

    @classmethod
    def from_env(cls) -> "InputLimits":
        """The defaults, with `MEGASERVICE_MAX_MESSAGES` / `MEGASERVICE_MAX_TOKENS` applied."""
        limits = cls()
        for name, attribute in (("MEGASERVICE_MAX_MESSAGES", "max_messages"), ("MEGASERVICE_MAX_TOKENS", "max_tokens")):
            value = os.environ.get(name, "").strip()
            if value:
                number = int(value)
                limits = replace(limits, **{attribute: number if number > 0 else None})
        return limits


_current = InputLimits.from_env()


def get_input_limits() -> InputLimits:
    """The limits the wire models check now."""
    return _current


def set_input_limits(limits: InputLimits | None = None, **changes: Any) -> InputLimits:
    """Replace the limits (or change some fields); return the previous ones."""
    global _current
    previous = _current
    _current = replace(limits or _current, **changes)
    return previous


def _check_messages(messages: Any) -> Any:
    limit = _current.max_messages
    if limit is not None and isinstance(messages, list) and len(messages) > limit:
        raise ValueError(f"{len(messages)} messages; at most {limit} are accepted")
    return messages


def _check_tokens(tokens: Any) -> Any:
    limit = _current.max_tokens
    if limit is not None and isinstance(tokens, int) and tokens > limit:
        raise ValueError(f"asks for {tokens} tokens; at most {limit} are accepted")
    return tokens


MessagesLimit = AfterValidator(_check_messages)
"""Annotate a messages field with this to apply `max_messages`."""
MaxTokens = AfterValidator(_check_tokens)
"""Annotate a token-count field with this to apply `max_tokens`."""
