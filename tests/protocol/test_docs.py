import re

import orjson
import pytest
from pydantic import ValidationError

from megaservice import EmbedDoc, LLMParams, SearchedDoc, TextDoc
from megaservice.protocol import ChatCompletionRequest, EmbeddingRequest, RetrieverParms

HEX32 = re.compile(r"^[0-9a-f]{32}$")


def test_textdoc_json_matches_docarray():
    data = orjson.loads(TextDoc(text="hi").model_dump_json())
    assert list(data) == ["downstream_black_list", "id", "text"]
    assert data["downstream_black_list"] == []
    assert HEX32.match(data["id"])
    assert data["text"] == "hi"


def test_every_doc_gets_its_own_id():
    assert TextDoc(text="a").id != TextDoc(text="a").id


def test_searched_doc_nests_text_docs():
    doc = SearchedDoc(retrieved_docs=[TextDoc(text="d")], initial_query="q")
    data = doc.model_dump()
    assert list(data) == ["id", "retrieved_docs", "initial_query", "top_n"]
    assert data["retrieved_docs"][0]["text"] == "d"
    assert data["top_n"] == 1


def test_llm_params_dict_has_opea_fields_without_a_deprecation_warning():
    params = LLMParams(max_tokens=17).dict()
    assert params["max_tokens"] == 17
    assert params["stream"] is True
    assert {"id", "model", "top_k", "index_name", "chat_template"} <= set(params)


def test_opea_spellings_are_kept():
    assert RetrieverParms(k=8).k == 8


def test_embed_doc_validates_k():
    with pytest.raises(ValidationError):
        EmbedDoc(text="t", embedding=[0.1], k=0)


def test_chat_completion_request_defaults_match_opea():
    request = ChatCompletionRequest(messages="hi")
    assert request.stream is False
    assert request.temperature == 0.01
    assert request.k == 4
    assert request.top_n == 1
    assert request.request_type == "chat"


def test_embedding_request_rejects_unknown_encoding():
    with pytest.raises(ValidationError):
        EmbeddingRequest(input="x", encoding_format="hex")
