"""The megaservice's OpenAI-compatible route, as the official openai client and LangChain's ChatOpenAI use it."""

from typing import Any

import openai
import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langchain_openai import ChatOpenAI

from megaservice.testing import FakeLLM, KnowledgeBase
from tests.gateway.conftest import DOCUMENTS, FACT, QUESTION, content, extra, run_stack

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("upstream_client")]


def client_for(stack) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{stack.url}/v1", api_key="unused", max_retries=0)


async def test_a_completion_answers_from_the_document_and_cites_it(stack):
    async with client_for(stack) as client:
        completion = await client.chat.completions.create(
            model="chatqna", messages=[{"role": "user", "content": QUESTION}]
        )
    answer = content(completion)
    assert "4417" in answer  # the FakeLLM repeats the first document of its prompt: the retrieved chunk
    sources = extra(completion)["sources"]
    assert [(s["source"], s["chunk"]) for s in sources] == [("zorblax.md", 0)]
    assert FACT in sources[0]["text"]
    assert sources[0]["index"] == 1
    prompt = stack.llm.requests[0]["messages"][-1]["content"]
    assert FACT in prompt and QUESTION in prompt  # OPEA's RAG prompt, made by the LLM service


async def test_a_stream_arrives_token_by_token_then_the_sources_then_done(stack):
    async with client_for(stack) as client:
        stream = await client.chat.completions.create(
            model="chatqna", messages=[{"role": "user", "content": QUESTION}], stream=True
        )
        chunks = [chunk async for chunk in stream]
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 5 and "4417" in "".join(pieces)
    last = chunks[-1]
    assert last.choices == []
    assert [(s["source"], s["chunk"]) for s in extra(last)["sources"]] == [("zorblax.md", 0)]
    assert last.id == chunks[0].id and last.model == chunks[0].model  # one completion, as OpenAI streams it


async def test_the_raw_stream_ends_with_the_sources_chunk_and_done(stack):
    async with stack.client() as http:
        body = {"messages": QUESTION, "stream": True}
        async with http.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            events = [event async for event in _events(response)]
    assert events[-1] == "[DONE]"
    assert '"choices":[]' in events[-2] and '"sources":[{' in events[-2]
    assert all(e.startswith("{") for e in events[:-1])


async def _events(response):
    buffer = ""
    async for text in response.aiter_text():
        buffer += text
        while "\n\n" in buffer:
            event, buffer = buffer.split("\n\n", 1)
            yield event.removeprefix("data: ")


async def test_the_conversation_reaches_the_llm_and_only_the_question_is_retrieved_for(stack):
    messages: list[Any] = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi, ask me about your documents."},
        {"role": "user", "content": QUESTION},
    ]
    async with client_for(stack) as client:
        await client.chat.completions.create(model="chatqna", messages=messages)
    sent = stack.llm.requests[0]["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]
    assert sent[:3] == messages[:3]
    assert QUESTION in sent[3]["content"] and FACT in sent[3]["content"]
    assert stack.kb.searches[0]["text"] == QUESTION


async def test_generation_fields_reach_the_llm_and_retrieval_fields_the_retriever(stack):
    async with client_for(stack) as client:
        await client.chat.completions.create(
            model="chatqna",
            messages=[{"role": "user", "content": QUESTION}],
            max_tokens=7,
            temperature=0,
            extra_body={"k": 2, "top_n": 2},
        )
    sent = stack.llm.requests[0]
    assert sent["max_tokens"] == 7 and sent["temperature"] == 0
    assert "k" not in sent and "top_n" not in sent and "documents" not in sent
    assert stack.kb.searches[0]["k"] == 2


async def test_top_n_documents_are_the_sources_each_named():
    kb = KnowledgeBase(documents={**DOCUMENTS, "more.md": "The Zorblax project launch was in spring."})
    async with run_stack(kb=kb) as stack, client_for(stack) as client:
        completion = await client.chat.completions.create(
            model="chatqna", messages=[{"role": "user", "content": QUESTION}], extra_body={"top_n": 2}
        )
    names = [s["source"] for s in extra(completion)["sources"]]
    assert names == ["zorblax.md", "more.md"]


async def test_the_models_list_names_the_pipeline(stack):
    async with client_for(stack) as client:
        models = await client.models.list()
    assert [m.id for m in models.data] == ["chatqna"]


async def test_the_pipeline_chooses_the_llm_model_not_the_client():
    llm = FakeLLM(models=["small", "big"])
    async with run_stack(llm=llm, model="big") as stack, client_for(stack) as client:
        completion = await client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": QUESTION}]
        )
    assert llm.requests[0]["model"] == "big"
    assert completion.model == "big"  # the model that answered, as OpenAI names the snapshot


async def test_langchain_chat_openai_invokes_and_streams_with_history(stack):
    chat = ChatOpenAI(base_url=f"{stack.url}/v1", api_key="unused", model="chatqna", max_retries=0)  # type: ignore[arg-type]
    history = [HumanMessage("Hello"), AIMessage("Hi."), HumanMessage(QUESTION)]
    answer = await chat.ainvoke(history)
    pieces = [str(chunk.content) async for chunk in chat.astream(history)]
    assert "4417" in answer.content
    assert len([p for p in pieces if p]) > 5 and "".join(pieces) == answer.content
    assert all([m["role"] for m in r["messages"]] == ["user", "assistant", "user"] for r in stack.llm.requests)


async def test_no_document_found_skips_the_reranker_and_the_llm_answers_without_sources():
    kb = KnowledgeBase(documents={})
    async with run_stack(kb=kb) as stack, client_for(stack) as client:
        completion = await client.chat.completions.create(
            model="chatqna", messages=[{"role": "user", "content": QUESTION}]
        )
    assert extra(completion)["sources"] == []
    assert completion.choices[0].message.content == " I have no documents about that."
    assert stack.llm.requests[0]["messages"] == [{"role": "user", "content": QUESTION}]


async def test_a_flow_without_a_reranker_cites_every_retrieved_document():
    kb = KnowledgeBase(documents={**DOCUMENTS, "more.md": "The Zorblax project launch was in spring."})
    async with run_stack(kb=kb, flow=("embedding", "retriever", "llm")) as stack, client_for(stack) as client:
        completion = await client.chat.completions.create(
            model="chatqna", messages=[{"role": "user", "content": QUESTION}]
        )
    assert {s["source"] for s in extra(completion)["sources"]} == {"zorblax.md", "more.md"}


async def test_a_flow_of_just_the_llm_answers_the_conversation():
    async with run_stack(flow=("llm",)) as stack, client_for(stack) as client:
        stream = await client.chat.completions.create(
            model="chatqna", messages=[{"role": "user", "content": "Hi"}], stream=True
        )
        chunks = [chunk async for chunk in stream]
    assert extra(chunks[-1])["sources"] == []
    assert stack.llm.requests[0]["messages"] == [{"role": "user", "content": "Hi"}]


async def test_an_embedding_node_answering_openais_shape_tei_or_an_embeddoc_feeds_the_retriever():
    from megaservice.testing import FakeOpenAIEmbeddings, FakeService

    class TEIList(FakeService):
        async def handle(self, request, scope, receive, send):
            await self.send_json(send, [[0.5, 0.5]])

    class EmbedDoc(FakeService):
        async def handle(self, request, scope, receive, send):
            await self.send_json(send, {"text": request["input"], "embedding": [0.25, 0.75]})

    for embedding, vector_length in ((FakeOpenAIEmbeddings(dim=12), 12), (TEIList(), 2), (EmbedDoc(), 2)):
        async with run_stack(embedding=embedding) as stack, client_for(stack) as client:
            completion = await client.chat.completions.create(
                model="chatqna", messages=[{"role": "user", "content": QUESTION}]
            )
        assert stack.kb.searches[0]["text"] == QUESTION
        assert len(stack.kb.searches[0]["embedding"]) == vector_length
        assert extra(completion)["sources"][0]["source"] == "zorblax.md"
        assert embedding.requests == [{"input": QUESTION}]


async def test_an_embedding_node_answering_no_vector_is_a_502_naming_it():
    from megaservice.testing import FakeService

    async with run_stack(embedding=FakeService()) as stack, stack.client() as http:
        response = await http.post("/v1/chat/completions", json={"messages": QUESTION})
    assert response.status_code == 502
    assert response.json()["node"] == "embedding" and "no embedding" in response.json()["message"]
