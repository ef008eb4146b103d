"""A fake Text Embeddings Inference reranker that answers as TEI does: its routes, limits and error bodies.

    tei = FakeTEIReranker()                               # scores: shared words (see `overlap_logits`)
    async with serve(tei) as url:                         # megaservice.testing.serve: a real socket
        ...  # point TEI_RERANKING_ENDPOINT at url; tei.calls lists (query, texts) of each /rerank call

`POST /rerank`: `{"query", "texts", "raw_scores"?, "return_text"?, "truncate"?}` → `[{"index", "score",
"text"?}]` for every text, highest score first; scores are the sigmoid of the model's logits unless
`raw_scores`. Refused as TEI refuses: no texts (400, `Empty`), more than `max_client_batch_size` texts
(413, `Validation`), a pair longer than `max_input_length` tokens without truncation (413), a body of
the wrong shape (422). `GET /info` describes a reranker, `GET /health` is 200. `FakeService`'s `status`
(answer every call with that error) and `delay` (seconds before answering) make a failing or slow TEI.
"""

import math
import re
from collections.abc import Callable
from typing import Any

from starlette.types import Receive, Scope, Send

from megaservice.testing.fakes import FakeService

__all__ = ["FakeTEIReranker", "overlap_logits"]

_WORD = re.compile(r"\w+")
Logits = Callable[[str, list[str]], list[float]]
"""(query, texts) → one logit per text (higher: more relevant)."""


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def overlap_logits(query: str, texts: list[str]) -> list[float]:
    """A deterministic stand-in for a cross-encoder: 8 x (share of the query's words in the text) - 4."""
    asked = set(_words(query))
    return [8.0 * len(asked & set(_words(text))) / (len(asked) or 1) - 4.0 for text in texts]


class FakeTEIReranker(FakeService):
    """A TEI server running a reranker model.

    **Parameters:**

    * **logits** - the model: (query, texts) → one logit per text (default: `overlap_logits`).
    * **model_id** - what `/info` names.
    * **max_client_batch_size** - most texts per call (TEI's default, 32); more is a 413.
    * **max_input_length** - most tokens of a query/text pair (a token here: a word, plus 3 special tokens).
    * **auto_truncate** - whether a request without `truncate` is cut (TEI's `--auto-truncate`) or refused.
    """

    def __init__(
        self,
        *,
        logits: Logits = overlap_logits,
        model_id: str = "fake/tei-reranker",
        max_client_batch_size: int = 32,
        max_input_length: int = 512,
        auto_truncate: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.logits = logits
        self.model_id = model_id
        self.max_client_batch_size = max_client_batch_size
        self.max_input_length = max_input_length
        self.auto_truncate = auto_truncate
        self.calls: list[tuple[str, list[str]]] = []
        """The query and texts of every `/rerank` call the model answered, in order."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """`GET /info` and `GET /health` here; the rest through `FakeService` (status, delay, recording)."""
        if scope["type"] == "http" and scope["method"] == "GET" and self.status < 300 and scope["path"] == "/info":
            await self.send_json(send, self.info())
            return
        await super().__call__(scope, receive, send)

    def info(self) -> dict[str, Any]:
        """TEI's `/info` of a reranker."""
        return {
            "model_id": self.model_id,
            "model_sha": None,
            "model_dtype": "float32",
            "model_type": {"reranker": {"id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}}},
            "max_concurrent_requests": 512,
            "max_input_length": self.max_input_length,
            "max_batch_tokens": 16384,
            "max_batch_requests": None,
            "max_client_batch_size": self.max_client_batch_size,
            "auto_truncate": self.auto_truncate,
            "tokenization_workers": 1,
            "version": "1.7.0",
            "sha": None,
            "docker_label": None,
        }

    async def handle(self, request: Any, scope: Scope, receive: Receive, send: Send) -> None:
        """`POST /rerank`."""
        if scope["path"].rstrip("/") != "/rerank":
            await self.send_json(send, {"error": "not found", "error_type": "NotFound"}, status=404)
            return
        refusal = self._refusal(request)
        if refusal is not None:
            status, error_type, message = refusal
            await self.send_json(send, {"error": message, "error_type": error_type}, status=status)
            return
        query, texts = request["query"], request["texts"]
        self.calls.append((query, list(texts)))
        logits = [float(x) for x in self.logits(query, texts)]
        scores = logits if request.get("raw_scores", False) else [1.0 / (1.0 + math.exp(-x)) for x in logits]
        order = sorted(range(len(texts)), key=lambda i: -scores[i])
        ranks = []
        for i in order:
            rank: dict[str, Any] = {"index": i, "score": scores[i]}
            if request.get("return_text", False):
                rank["text"] = texts[i]
            ranks.append(rank)
        await self.send_json(send, ranks)

    def _refusal(self, request: Any) -> tuple[int, str, str] | None:
        """`(status, error_type, message)` of what TEI refuses in `request`, or `None`."""
        if not isinstance(request, dict) or not isinstance(request.get("query"), str):
            return 422, "Validation", "Failed to deserialize the JSON body: missing or invalid field `query`"
        texts = request.get("texts")
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            return 422, "Validation", "Failed to deserialize the JSON body: `texts` must be a list of strings"
        for flag in ("raw_scores", "return_text", "truncate"):
            if flag in request and not isinstance(request[flag], bool):
                return 422, "Validation", f"Failed to deserialize the JSON body: `{flag}` must be a boolean"
        if not texts:
            return 400, "Empty", "`texts` cannot be empty"
        if len(texts) > self.max_client_batch_size:
            return (
                413,
                "Validation",
                f"batch size {len(texts)} > maximum allowed batch size {self.max_client_batch_size}",
            )
        truncate = request.get("truncate", self.auto_truncate)
        if not truncate:
            query_tokens = len(_words(request["query"]))
            longest = max(query_tokens + len(_words(t)) + 3 for t in texts)
            if longest > self.max_input_length:
                return (
                    413,
                    "Validation",
                    f"Input validation error: `inputs` must have less than {self.max_input_length} tokens. "
                    f"Given: {longest}",
                )
        return None
