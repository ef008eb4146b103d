"""A node after the LLM in a streaming pipeline (an output guardrail): fed the answer sentence by sentence.

OPEA's way: the LLM's tokens are gathered into sentences; each complete sentence is POSTed to the
node as `{"text": sentence}`, and its `text` answer is re-streamed as OPEA token frames. The
node's answers replace the LLM's text, so a guardrail can redact or stop what passes.
"""

import re
from collections.abc import AsyncIterator

from megaservice import _compat
from megaservice._pipeline.call import answer_text, post
from megaservice._pipeline.plan import Node
from megaservice.client import UpstreamClient
from megaservice.metrics import OrchestratorMetrics
from megaservice.responses import aclose

__all__ = ["sentences", "through_node"]

# A sentence ends at OPEA's sentence marks (CJK ones included); a Latin one only before a space or the
# end of what has arrived, so "3.14" in one piece stays whole.
_SENTENCE_END = re.compile(r"[.?!](?=\s|$)|[。，！]")  # noqa: RUF001


async def through_node(
    client: UpstreamClient, metrics: OrchestratorMetrics, node: Node, source: AsyncIterator[list[bytes]]
) -> AsyncIterator[list[str]]:
    """Feed an LLM stream (`source`: batches of raw events) to `node` sentence by sentence; yield its answers."""
    url = node.url_for()
    buffered = ""
    try:
        async for batch in source:
            for raw in batch:
                text, done = _compat.event_text(raw)
                complete, buffered = sentences(buffered + text)
                if done and buffered:
                    complete.append(buffered)
                    buffered = ""
                for sentence in complete:
                    answer = await post(client, metrics, node, url, {"text": sentence}, retry=False)
                    yield _opea_frames(answer_text(answer, node.name, url))
                if done:
                    yield [_compat.DONE_FRAME]
                    return
        if buffered:
            answer = await post(client, metrics, node, url, {"text": buffered}, retry=False)
            yield _opea_frames(answer_text(answer, node.name, url))
    finally:
        await aclose(source)


def sentences(text: str) -> tuple[list[str], str]:
    """The complete sentences at the start of `text`, and the rest."""
    found = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        found.append(text[start : match.end()])
        start = match.end()
    return found, text[start:]


def _opea_frames(sentence: str) -> list[str]:
    return [_compat.opea_token_frame(token.replace("\\n", "\n")) for token in _compat.split_tokens(sentence)]
