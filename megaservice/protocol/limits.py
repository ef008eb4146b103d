"""What a chat request may ask for: how many messages, how many tokens to generate.

The wire models check these when they validate (`ChatCompletionRequest`, `CompletionRequest`,
`LLMParamsDoc`), so every service that parses a request with them refuses an oversized one with a
4xx saying which limit it broke, before any node is called. The limits come from the environment
on first use (`megaservice.limits.InputLimits`) or from `set_input_limits()`.
"""

from dataclasses import replace
from typing import Any

from pydantic import AfterValidator

from megaservice.limits import InputLimits

__all__ = ["InputLimits", "MaxTokens", "MessagesLimit", "get_input_limits", "set_input_limits"]

_current: InputLimits | None = None
"""The limits in force; read from the environment on first use (`megaservice.settings`)."""


def get_input_limits() -> InputLimits:
    """The limits the wire models check now (the environment's, until `set_input_limits()`)."""
    global _current
    if _current is None:
        _current = InputLimits.from_env()
    return _current


def set_input_limits(limits: InputLimits | None = None, **changes: Any) -> InputLimits:
    """Replace the limits (or change some fields); return the previous ones."""
    global _current
    previous = get_input_limits()
    _current = replace(limits or previous, **changes)
    return previous


def _check_messages(messages: Any) -> Any:
    limit = (_current or get_input_limits()).max_messages
    if limit is not None and isinstance(messages, list) and len(messages) > limit:
        raise ValueError(f"{len(messages)} messages; at most {limit} are accepted")
    return messages


def _check_tokens(tokens: Any) -> Any:
    limit = (_current or get_input_limits()).max_tokens
    if limit is not None and isinstance(tokens, int) and tokens > limit:
        raise ValueError(f"asks for {tokens} tokens; at most {limit} are accepted")
    return tokens


MessagesLimit = AfterValidator(_check_messages)
"""Annotate a messages field with this to apply `max_messages`."""
MaxTokens = AfterValidator(_check_tokens)
"""Annotate a token-count field with this to apply `max_tokens`."""
