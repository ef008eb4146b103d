"""A fake LLM judge: an OpenAI-compatible chat server that answers a guardrail's yes/no question.

    judge = FakeJudge(flagged=("stupid", "lazy"))       # "yes" when the judged text has one of these words
    async with serve(judge) as url: ...                 # BIAS_JUDGE_ENDPOINT / SAFETY_GUARD_ENDPOINT = url

The judged text is what a guardrail's question puts between `<text>` and `</text>`, or the last
message of a conversation (Llama Guard's way). `llama_guard=True` answers as Llama Guard does
(`safe`, or `unsafe` and a category code); `answer` fixes the reply whatever is asked (e.g. one
that is not a verdict). Every request body is kept in `requests`.
"""

import re
import time
from collections.abc import Sequence
from typing import Any

from starlette.types import Receive, Scope, Send

from megaservice.testing.fakes import FakeService

__all__ = ["FakeJudge"]

_TEXT = re.compile(r"<text>\n(.*)\n</text>", re.DOTALL)
_WORD = re.compile(r"\w+")


class FakeJudge(FakeService):
    """`POST /v1/chat/completions` (non-streaming) judging the text by its words.

    **Parameters:**

    * **flagged** - words (any case) that make the judge say yes / unsafe.
    * **llama_guard** - answer `safe`, or `unsafe` and a category code on the next line, instead of no / yes.
    * **category** - the Llama Guard category code of a flagged text (default `S10`, hate).
    * **answer** - a fixed reply, whatever is asked.
    * **status**, **delay**, **record** - as every fake (`FakeService`).
    """

    def __init__(
        self,
        flagged: Sequence[str] = ("stupid",),
        *,
        llama_guard: bool = False,
        category: str = "S10",
        answer: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.flagged = {word.lower() for word in flagged}
        self.llama_guard = llama_guard
        self.category = category
        self.answer = answer

    @staticmethod
    def judged_text(request: Any) -> str:
        """The text a request asks about."""
        messages = request.get("messages") or [{"content": ""}]
        content = str(messages[-1].get("content", ""))
        found = _TEXT.search(content)
        return found.group(1) if found else content

    def verdict(self, text: str) -> str:
        """The judge's reply about `text`."""
        if self.answer is not None:
            return self.answer
        bad = bool({word.lower() for word in _WORD.findall(text)} & self.flagged)
        if self.llama_guard:
            return f"unsafe\n{self.category}" if bad else "safe"
        return "Yes." if bad else "No."

    async def handle(self, request: Any, scope: Scope, receive: Receive, send: Send) -> None:  # noqa: D102
        reply = self.verdict(self.judged_text(request))
        await self.send_json(
            send,
            {
                "id": "chatcmpl-judge",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": request.get("model") or "fake-judge",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 0, "completion_tokens": 1, "total_tokens": 0},
            },
        )
