"""Prompts built from retrieved documents: OPEA's RAG template, or the request's own `chat_template`.

    rag_prompt(question, documents)           OPEA's `ChatTemplate.generate_rag_prompt` text (its Chinese
                                              variant when at least 30 % of the context is CJK)
    fill(template, context=, question=)       a request's `chat_template`, whose only fields may be
                                              `{context}` and `{question}` (`{{`/`}}` are literal braces)
    document_texts(documents)                 the texts of OPEA's `documents` (strings, or `{"text": ...}`)

OPEA's Llama-3.1 variant (a raw prompt with the model's special tokens) is not used: the prompt goes
to the model server's chat API as a user message, and the server applies the model's own template.
"""

import re
import string
from collections.abc import Iterable
from typing import Any

from megaservice.exceptions import InputError

__all__ = ["RAG_TEMPLATE", "RAG_TEMPLATE_ZH", "document_texts", "fill", "rag_prompt", "template_fields"]

RAG_TEMPLATE = (
    "### You are a helpful, respectful and honest assistant to help the user with questions. "
    "Please refer to the search results obtained from the local knowledge base. "
    "But be careful to not incorporate the information that you think is not relevant to the question. "
    "If you don't know the answer to a question, please don't share false information.\n\n"
    "### Search results: {context}\n\n"
    "### Question: {question}\n\n"
    "### Answer:\n"
)
"""OPEA's RAG prompt (`comps/llms/src/text-generation/integrations/template.py`), its stray indentation removed."""

RAG_TEMPLATE_ZH = (  # Chinese punctuation on purpose (RUF001)
    "### 你将扮演一个乐于助人、尊重他人并诚实的助手，你的目标是帮助用户解答问题。"  # noqa: RUF001
    "有效地利用来自本地知识库的搜索结果。确保你的回答中只包含相关信息。"
    "如果你不确定问题的答案，请避免分享不准确的信息。\n"  # noqa: RUF001
    "### 搜索结果：{context}\n"  # noqa: RUF001
    "### 问题：{question}\n"  # noqa: RUF001
    "### 回答：\n"  # noqa: RUF001
)
"""OPEA's RAG prompt for a mostly Chinese context."""

_CJK = re.compile("[\u4e00-\u9fff]")
_FIELDS = frozenset({"context", "question"})


def rag_prompt(question: str, documents: Iterable[str]) -> str:
    """The RAG prompt for `question` over `documents` (joined by newlines), as OPEA words it."""
    context = "\n".join(documents)
    chinese = bool(context) and len(_CJK.findall(context)) / len(context) >= 0.3
    return (RAG_TEMPLATE_ZH if chinese else RAG_TEMPLATE).format(context=context, question=question)


def template_fields(template: str) -> set[str]:
    """The `{fields}` of a `chat_template` (`InputError` 422 if it is malformed or has others)."""
    try:
        found = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise InputError(f"chat_template is not a valid template: {exc}", status_code=422) from None
    unknown = found - _FIELDS
    if unknown:
        names = ", ".join("{" + name + "}" for name in sorted(unknown))
        raise InputError(
            f"chat_template may use only {{context}} and {{question}}; it has {names} (write {{{{ }}}} for a brace)",
            status_code=422,
        )
    return found


def fill(template: str, *, context: str, question: str) -> str:
    """`template` with its `{context}` and `{question}` replaced (`InputError` 422 if it has other fields)."""
    template_fields(template)
    return template.format(context=context, question=question)


def document_texts(documents: Any) -> list[str]:
    """The texts of OPEA's `documents` field: strings, or objects with a `text` (`InputError` 422 otherwise)."""
    if documents is None:
        return []
    if not isinstance(documents, list):
        raise InputError("documents must be a list of strings or of objects with a 'text'", status_code=422)
    texts = []
    for item in documents:
        text = item.get("text") if isinstance(item, dict) else item
        if not isinstance(text, str):
            raise InputError("documents must be a list of strings or of objects with a 'text'", status_code=422)
        texts.append(text)
    return texts
