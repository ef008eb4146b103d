"""What the megaservice refuses, and what happens when a node fails: guardrails, limits, down nodes."""

import ast

import anyio
import httpx
import openai
import orjson
import pytest
from typer.testing import CliRunner

from megaservice.cli import app
from megaservice.components.llm import LLMSettings, create_service as llm_service
from megaservice.gateway import create_gateway
from megaservice.limits import InputLimits, Limits
from megaservice.pipeline import parse_pipeline
from megaservice.settings import Settings
from megaservice.testing import FakeGuardrail, FakeLLM, FaultyServer, serve
from tests.gateway.conftest import QUESTION, extra, pipeline_yaml, run_stack

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("upstream_client")]

REFUSAL = FakeGuardrail.REFUSAL
INSULT = "Why is the Zorblax team so stupid?"


def client_for(stack) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{stack.url}/v1", api_key="unused", max_retries=0)


# -- a guardrail's refusal ---------------------------------------------------------------------------


async def test_a_refused_question_never_reaches_the_llm_and_the_client_gets_the_refusal(stack):
    async with client_for(stack) as client:
        completion = await client.chat.completions.create(
            model="chatqna", messages=[{"role": "user", "content": INSULT}]
        )
    choice = completion.choices[0]
    assert choice.message.content == REFUSAL
    assert choice.message.refusal == REFUSAL
    assert choice.finish_reason == "content_filter"
    assert extra(completion)["refused_by"] == "guardrail"
    assert extra(completion)["sources"] == []
    assert stack.llm.requests == [] and stack.kb.searches == []


async def test_a_refused_streamed_question_gets_the_refusal_as_a_stream(stack):
    async with client_for(stack) as client:
        stream = await client.chat.completions.create(
            model="chatqna", messages=[{"role": "user", "content": INSULT}], stream=True
        )
        chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == REFUSAL
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "content_filter"
    assert chunks[0].choices[0].delta.refusal == REFUSAL
    assert chunks[-1].choices == [] and extra(chunks[-1])["sources"] == []
    assert stack.llm.requests == []


async def test_a_refusal_on_the_opea_route_is_opeas_answer(stack):
    async with stack.client() as http:
        streamed = await http.post("/v1/chatqna", json={"messages": INSULT})
        whole = await http.post("/v1/chatqna", json={"messages": INSULT, "stream": False})
    frames = streamed.text.split("\n\n")[:-1]
    assert frames == [f"data: {REFUSAL.encode()!r}", "data: [DONE]"]
    assert whole.json()["choices"][0]["message"]["content"] == REFUSAL
    assert whole.json()["choices"][0]["metadata"] == {"refused_by": "guardrail"}
    assert stack.llm.requests == []


async def test_megaservice_ask_marks_a_refused_question_and_exits_3(stack):
    asked = await anyio.to_thread.run_sync(
        lambda: CliRunner().invoke(app, ["ask", INSULT, "--url", stack.url], env={"COLUMNS": "400", "NO_COLOR": "1"})
    )
    assert asked.exit_code == 3, asked.output
    assert asked.output.splitlines() == [REFUSAL, "refused by the guardrail: guardrail"]
    assert stack.llm.requests == []


async def test_a_question_a_guardrail_rewrites_goes_on_rewritten():
    async with run_stack(guardrail=FakeGuardrail(suffix=" (checked)")) as stack, client_for(stack) as client:
        await client.chat.completions.create(model="chatqna", messages=[{"role": "user", "content": QUESTION}])
    assert stack.kb.searches[0]["text"] == QUESTION + " (checked)"
    assert QUESTION + " (checked)" in stack.llm.requests[0]["messages"][-1]["content"]


# -- limits ---------------------------------------------------------------------------------------------


async def test_a_question_over_the_length_limit_is_a_422_naming_it():
    settings = Settings(input_limits=InputLimits(max_question_chars=40))
    async with run_stack(settings=settings) as stack, stack.client() as http:
        response = await http.post("/v1/chat/completions", json={"messages": "x" * 41})
        opea = await http.post("/v1/chatqna", json={"messages": "x" * 41})
        fine = await http.post("/v1/chat/completions", json={"messages": "What is the Zorblax launch code?"})
    assert response.status_code == 422 == opea.status_code
    assert "MEGASERVICE_MAX_QUESTION_CHARS" in response.json()["detail"]
    assert "41 characters; at most 40" in response.json()["detail"]
    assert fine.status_code == 200
    assert len(stack.llm.requests) == 1


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"messages": QUESTION, "max_tokens": 10**6}, "MEGASERVICE_MAX_TOKENS"),
        ({"messages": [{"role": "user", "content": QUESTION}] * 3}, "MEGASERVICE_MAX_MESSAGES"),
        ({"messages": []}, "non-empty"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
        ({"messages": [{"role": "assistant", "content": "hi"}]}, "no user message"),
        ({"messages": "   "}, "empty"),
        ({"messages": QUESTION, "k": 0}, "`k` must be from 1 to 1000, got 0"),
        ({"messages": QUESTION, "stream": "yes"}, "stream"),
        ({"prompt": QUESTION}, "`messages` is required"),
    ],
)
async def test_a_bad_or_oversized_request_is_a_422_saying_what_is_wrong(body, named):
    settings = Settings(input_limits=InputLimits(max_messages=2))
    async with run_stack(settings=settings) as stack, stack.client() as http:
        response = await http.post("/v1/chat/completions", json=body)
    assert response.status_code == 422
    assert named in response.json()["detail"]
    assert stack.llm.requests == [] and stack.kb.searches == []


@pytest.mark.parametrize("route", ["/v1/chat/completions", "/v1/chatqna"])
@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"search_type": "bogus"}, '`search_type` "bogus" is not one of similarity, '),
        ({"k": 100000}, "`k` must be from 1 to 1000, got 100000"),
        ({"fetch_k": 1001, "search_type": "mmr"}, "`fetch_k` must be from 1 to 1000, got 1001"),
        ({"search_type": "mmr", "lambda_mult": 5}, "`lambda_mult` must be between 0 and 1, got 5.0"),
        ({"k": "many"}, "k: Input should be a valid integer"),
    ],
)
async def test_a_retrieval_parameter_the_retriever_refuses_is_a_422_before_any_node_is_called(route, fields, message):
    # ux review D3: these were a 502 blaming the retriever (its 422, relayed as a node's failure)
    async with run_stack() as stack, stack.client() as http:
        response = await http.post(route, json={"messages": QUESTION, "stream": False, **fields})
        fine = await http.post(route, json={"messages": QUESTION, "stream": False, "k": "2", "lambda_mult": 1})
    assert response.status_code == 422, response.text
    assert message in response.json()["detail"]
    assert response.json()["error"]["message"] == response.json()["detail"]
    assert fine.status_code == 200, fine.text  # OPEA's request reads "2" as 2, as before
    assert len(stack.kb.searches) == len(stack.llm.requests) == 1  # only `fine` reached them


async def test_a_body_over_the_size_limit_is_a_413():
    settings = Settings(limits=Limits(max_body_bytes=1000))
    async with run_stack(settings=settings) as stack, stack.client() as http:
        response = await http.post("/v1/chat/completions", json={"messages": "x" * 2000})
    assert response.status_code == 413


@pytest.mark.parametrize("route", ["/v1/chat/completions", "/v1/chatqna"])
async def test_every_4xx_of_the_chat_routes_has_openais_error_object(route):
    # ux review D12: a body that is not JSON, one over the limit (with its Content-Length), the LLM's
    # pydantic 422 had only `detail`
    settings = Settings(limits=Limits(max_body_bytes=1000))
    async with run_stack(settings=settings) as stack, stack.client() as http:
        answers = {
            "not json": await http.post(route, content=b"not json", headers={"content-type": "application/json"}),
            "empty": await http.post(route, content=b"", headers={"content-type": "application/json"}),
            "not utf-8": await http.post(route, content=b'{"messages": "\xff"}'),
            "too large": await http.post(route, json={"messages": "x" * 2000}),
        }
        if route == "/v1/chat/completions":  # /v1/chatqna passes OPEA's fields only: no `stop`
            answers["llm refuses"] = await http.post(route, json={"messages": QUESTION, "stop": 5})
    expected = {"not json": 400, "empty": 400, "not utf-8": 400, "too large": 413, "llm refuses": 422}
    assert {what: answer.status_code for what, answer in answers.items()} == {w: expected[w] for w in answers}
    for what, answer in answers.items():
        error = answer.json()["error"]
        assert error["type"] == "invalid_request_error", what
        assert error["message"] and "detail" in answer.json(), what
    assert answers["not json"].json()["error"]["message"].startswith("request body is not valid JSON")
    if "llm refuses" in answers:
        assert answers["llm refuses"].json()["error"]["message"].startswith("stop")


async def test_the_openai_client_sees_a_limit_as_a_bad_request_naming_it():
    settings = Settings(input_limits=InputLimits(max_tokens=100))
    async with run_stack(settings=settings) as stack, client_for(stack) as client:
        with pytest.raises(openai.UnprocessableEntityError, match="MEGASERVICE_MAX_TOKENS"):
            await client.chat.completions.create(
                model="chatqna", messages=[{"role": "user", "content": QUESTION}], max_tokens=101
            )


# -- failing nodes --------------------------------------------------------------------------------------


@pytest.mark.parametrize("node", ["guardrail", "embedding", "retriever", "reranker", "llm"])
async def test_a_node_that_is_down_is_a_502_naming_it_streamed_or_not(node):
    async with run_stack(down=[node]) as stack, stack.client() as http:
        whole = await http.post("/v1/chat/completions", json={"messages": QUESTION})
        streamed = await http.post("/v1/chat/completions", json={"messages": QUESTION, "stream": True})
        opea = await http.post("/v1/chatqna", json={"messages": QUESTION})
    for response in (whole, streamed, opea):
        assert response.status_code == 502
        assert response.json()["node"] == node
        assert node in response.json()["message"]


async def test_the_openai_client_sees_a_down_node_as_a_server_error_naming_it():
    async with run_stack(down=["retriever"]) as stack, client_for(stack) as client:
        with pytest.raises(openai.InternalServerError, match="retriever"):
            await client.chat.completions.create(model="chatqna", messages=[{"role": "user", "content": QUESTION}])


async def test_a_node_answering_an_error_is_a_502_naming_it():
    async with run_stack(guardrail=FakeGuardrail(status=500)) as stack, stack.client() as http:
        response = await http.post("/v1/chat/completions", json={"messages": QUESTION})
    assert response.status_code == 502
    assert response.json()["node"] == "guardrail"
    assert response.json()["upstream_status"] == 500


async def test_the_llms_refusal_of_a_request_reaches_the_client_as_its_4xx():
    llm = FakeLLM(models=["small"])
    async with run_stack(llm=llm, model="huge") as stack, client_for(stack) as client:
        with pytest.raises(openai.NotFoundError, match="huge"):
            await client.chat.completions.create(model="chatqna", messages=[{"role": "user", "content": QUESTION}])


async def test_an_llm_whose_model_server_fails_is_a_502_naming_the_llm_node():
    async with run_stack(llm=FakeLLM(status=500)) as stack, stack.client() as http:
        response = await http.post("/v1/chat/completions", json={"messages": QUESTION, "stream": True})
    assert response.status_code == 502
    assert response.json()["node"] == "llm"


async def test_a_stream_failing_midway_ends_with_the_llm_services_error_which_the_openai_client_raises():
    async with FaultyServer("stall") as model_server:
        llm = llm_service(LLMSettings(endpoint=model_server.url, read_timeout=0.3)).app
        async with serve(llm) as llm_url:
            pipeline = parse_pipeline(pipeline_yaml({"llm": llm_url}, ("llm",)), environ={})
            async with serve(create_gateway(pipeline, Settings()).app) as url:
                async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0) as client:
                    stream = await client.chat.completions.create(
                        model="chatqna", messages=[{"role": "user", "content": "hi"}], stream=True
                    )
                    pieces = []
                    with pytest.raises(openai.APIError, match="did not answer in time"):
                        async for chunk in stream:
                            pieces.append(chunk.choices[0].delta.content)  # noqa: PERF401  # kept when it raises
    assert pieces == ["partial"]


@pytest.mark.parametrize("route", ["/v1/chat/completions", "/v1/chatqna"])
async def test_the_llm_services_error_midway_names_the_llm_node_as_the_pipeline_does(route):
    # the LLM service names its own upstream `model-server`, a name the pipeline does not have (UX report D9)
    async with FaultyServer("reset") as model_server:
        llm = llm_service(LLMSettings(endpoint=model_server.url)).app
        async with serve(llm) as llm_url:
            pipeline = parse_pipeline(pipeline_yaml({"llm": llm_url}, ("llm",)), environ={})
            async with serve(create_gateway(pipeline, Settings()).app) as url, httpx.AsyncClient(base_url=url) as http:
                with anyio.fail_after(10):
                    text = (await http.post(route, json={"messages": "hi", "stream": True})).text
    head, _, event = text.partition("event: error\ndata: ")
    assert "partial" in head
    error = orjson.loads(event)
    assert error["node"] == "llm"
    assert error["message"].startswith("llm: connection to model-server failed"), error
    assert error["error"]["message"] == error["message"]


async def test_streams_of_several_questions_at_once_each_get_their_own_answer(stack):
    import asyncio

    stack.llm.tokens = None  # answers echo their question's document
    questions = [QUESTION, "How many hours of sun do tomatoes need?"] * 4
    async with stack.client() as http:

        async def ask(question: str) -> str:
            response = await http.post("/v1/chatqna", json={"messages": question})
            frames = response.text.split("\n\n")[:-2]
            return b"".join(ast.literal_eval(f.removeprefix("data: ")) for f in frames).decode()

        answers = await asyncio.gather(*(ask(q) for q in questions))
    for question, answer in zip(questions, answers, strict=True):
        assert ("4417" in answer) == (question == QUESTION)
        assert ("six hours" in answer) == (question != QUESTION)


class PartialBlackList(FakeGuardrail):
    """A guardrail whose black list skips the retriever only: the LLM still answers, nothing is refused."""

    async def handle(self, request, scope, receive, send):
        await self.send_json(send, {"text": request["text"], "downstream_black_list": ["^embedding"]})


async def test_a_black_list_that_lets_the_llm_run_is_no_refusal():
    async with run_stack(guardrail=PartialBlackList(), flow=("guardrail", "embedding", "llm")) as stack:
        stack.pipeline.megaservice.flow = ["guardrail -> embedding", "guardrail -> llm"]
        from megaservice.testing import serve

        async with serve(create_gateway(stack.pipeline, Settings()).app) as url, stack.client() as http:
            http.base_url = url
            answer = (await http.post("/v1/chat/completions", json={"messages": QUESTION})).json()
    assert answer["choices"][0]["finish_reason"] == "stop"
    assert "refused_by" not in answer
    assert len(stack.llm.requests) == 1


@pytest.mark.parametrize("fault", ["reset", "stall"])
async def test_the_llm_node_failing_midway_ends_the_stream_with_an_error_the_openai_client_raises(fault):
    from megaservice.resilience import Timeout

    settings = Settings(timeout=Timeout(read=0.3))
    async with FaultyServer(fault) as model_server:
        pipeline = parse_pipeline(pipeline_yaml({"llm": model_server.url}, ("llm",)), environ={})
        async with serve(create_gateway(pipeline, settings).app) as url:
            async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0) as client:
                stream = await client.chat.completions.create(
                    model="chatqna", messages=[{"role": "user", "content": "hi"}], stream=True
                )
                pieces = []
                with pytest.raises(openai.APIError, match="llm"):
                    async for chunk in stream:
                        pieces.append(chunk.choices[0].delta.content)  # noqa: PERF401  # kept when it raises
            async with httpx.AsyncClient(base_url=url) as http:
                opea = (await http.post("/v1/chatqna", json={"messages": "hi"})).text
    assert pieces == ["partial"]
    assert opea.startswith("data: b'partial'\n\nevent: error\ndata: {")
    assert "[DONE]" not in opea
