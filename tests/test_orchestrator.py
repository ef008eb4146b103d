import asyncio
import contextlib
import time

import pytest
from prometheus_client import REGISTRY

from megaservice import (
    CircuitBreaker,
    ConfigurationError,
    LLMParams,
    ServiceOrchestrator,
    ServiceType,
    UpstreamConnectError,
    UpstreamStatusError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from megaservice.testing import FakeGuardrail, FakeLLM, FakeService, InProcess, serve
from tests.helpers import node

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("upstream_client")]


@pytest.fixture
async def nodes():
    """The fakes of a test, served in process (the DAG logic needs no socket; see test_client for those)."""
    async with InProcess() as served:
        yield served


class Append(FakeService):
    """Appends its suffix to `text`; optionally asks to skip downstream nodes."""

    def __init__(self, suffix: str, black_lists=None, **kwargs):
        super().__init__(**kwargs)
        self.suffix = suffix
        self.black_lists = black_lists or {}

    async def handle(self, request, scope, receive, send):
        text = request.get("text", "")
        answer = {"text": text + self.suffix}
        if text in self.black_lists:
            answer["downstream_black_list"] = self.black_lists[text]
        await self.send_json(send, answer)


def pending() -> float:
    return REGISTRY.get_sample_value("megaservice_request_pending") or 0.0


async def test_a_chain_passes_each_answer_to_the_next_node(nodes):
    async with nodes.serve(Append("opea ")) as a, nodes.serve(Append("project!")) as b:
        s1, s2 = node("s1", a), node("s2", b)
        orchestrator = ServiceOrchestrator(client=nodes.client).add(s1).add(s2)
        assert orchestrator.flow_to(s1, s2) is True
        results, graph = await orchestrator.schedule({"text": "hello, "})
    assert results["s2/MicroService"]["text"] == "hello, opea project!"
    assert graph.all_leaves() == ["s2/MicroService"]


async def test_independent_branches_run_concurrently(nodes):
    slow = [Append(f" {i}", delay=0.3) for i in range(3)]
    async with contextlib.AsyncExitStack() as stack:
        urls = [await stack.enter_async_context(nodes.serve(fake)) for fake in [Append("root"), *slow]]
        pipeline = [node(f"n{i}", url) for i, url in enumerate(urls)]
        orchestrator = ServiceOrchestrator(client=nodes.client)
        for n in pipeline:
            orchestrator.add(n)
        for child in pipeline[1:]:
            orchestrator.flow_to(pipeline[0], child)
        started = time.monotonic()
        results, graph = await orchestrator.schedule({"text": ""})
        elapsed = time.monotonic() - started
    assert elapsed < 0.8  # 3 x 0.3 s sequentially
    assert graph.all_leaves() == ["n1/MicroService", "n2/MicroService", "n3/MicroService"]
    assert [results[f"n{i}/MicroService"]["text"] for i in (1, 2, 3)] == ["root 0", "root 1", "root 2"]


async def test_fan_in_merges_parents_in_insertion_order(nodes):
    class Keyed(FakeService):
        def __init__(self, key, value):
            super().__init__()
            self.key, self.value = key, value

        async def handle(self, request, scope, receive, send):
            await self.send_json(send, {"shared": self.value, self.key: self.value})

    sink = FakeService()
    async with (
        nodes.serve(Append("")) as r,
        nodes.serve(Keyed("left", "L")) as a,
        nodes.serve(Keyed("right", "R")) as b,
        nodes.serve(sink) as c,
    ):
        root, left, right, join = node("root", r), node("left", a), node("right", b), node("join", c)
        orchestrator = ServiceOrchestrator(client=nodes.client).add(root).add(left).add(right).add(join)
        for parent, child in [(root, left), (root, right), (left, join), (right, join)]:
            orchestrator.flow_to(parent, child)
        results, _ = await orchestrator.schedule({"text": "x"})
    assert sink.requests == [{"shared": "R", "left": "L", "right": "R"}]
    assert len(results) == 4


@pytest.mark.parametrize(
    ("text", "black_list", "ran", "leaves"),
    [
        ("Hi", [], 4, 2),
        ("Bye", [".*"], 1, 1),
        ("Hola", ["s2"], 3, 1),
        ("Other", ["s3"], 2, 1),
    ],
)
async def test_downstream_black_list_prunes_the_runtime_graph(nodes, text, black_list, ran, leaves):
    # regression of OPEA's tests/cores/mega/test_runtime_graph.py semantics: s1 -> {s2, s3}, s3 -> s4
    async with contextlib.AsyncExitStack() as stack:
        fakes = [Append("!", black_lists={text: black_list}), Append(" s2"), Append(" s3"), Append(" s4")]
        urls = [await stack.enter_async_context(nodes.serve(fake)) for fake in fakes]
        s1, s2, s3, s4 = (node(f"s{i + 1}", url) for i, url in enumerate(urls))
        orchestrator = ServiceOrchestrator(client=nodes.client).add(s1).add(s2).add(s3).add(s4)
        orchestrator.flow_to(s1, s2)
        orchestrator.flow_to(s1, s3)
        orchestrator.flow_to(s3, s4)
        results, graph = await orchestrator.schedule({"text": text}, llm_parameters=LLMParams(stream=False))
        _, full_graph = await orchestrator.schedule({"text": "Hi"}, llm_parameters=LLMParams(stream=False))
    assert len(results) == ran
    assert len(graph.all_leaves()) == leaves
    assert len(full_graph.all_leaves()) == 2  # one request's pruning never leaks into the next
    assert orchestrator.downstream("s1/MicroService") == ["s2/MicroService", "s3/MicroService"]


async def test_a_short_circuited_streaming_request_is_still_answered_as_sse(nodes):
    async with nodes.serve(FakeGuardrail(banned=["stupid"])) as g, nodes.serve(FakeLLM()) as llm_url:
        guard, llm = node("guardrail", g), node("llm", llm_url, ServiceType.LLM)
        orchestrator = ServiceOrchestrator(client=nodes.client).add(guard).add(llm)
        orchestrator.flow_to(guard, llm)
        results, graph = await orchestrator.schedule({"text": "a stupid question"})
        stream = results["guardrail/MicroService"]
        frames = [chunk async for chunk in stream.body_iterator]
    assert frames == [f"data: {FakeGuardrail.REFUSAL.encode()!r}\n\n", "data: [DONE]\n\n"]
    assert graph.all_leaves() == ["guardrail/MicroService"]


async def test_llm_parameters_reach_llm_nodes_only(nodes):
    plain, llm_fake = FakeService(), FakeLLM(tokens=["ok"])
    async with nodes.serve(plain) as p, nodes.serve(llm_fake) as l_url:
        first, llm = node("first", p), node("llm", l_url, ServiceType.LLM)
        orchestrator = ServiceOrchestrator(client=nodes.client).add(first).add(llm)
        orchestrator.flow_to(first, llm)
        await orchestrator.schedule({"text": "q"}, llm_parameters=LLMParams(stream=False, max_tokens=7, top_k=3))
    assert plain.requests == [{"text": "q"}]
    sent = llm_fake.requests[0]
    assert (sent["max_tokens"], sent["top_k"], sent["stream"]) == (7, 3, False)
    assert "id" not in sent


async def test_hooks_work_as_subclass_overrides(nodes):
    class Hooked(ServiceOrchestrator):
        def align_inputs(self, inputs, cur_node, runtime_graph, llm_parameters_dict, **kwargs):
            return {**inputs, "text": inputs["text"] + kwargs["extra"]}

        def align_outputs(self, data, cur_node, inputs, runtime_graph, llm_parameters_dict, **kwargs):
            return {"text": data["text"].upper()}

    async with nodes.serve(Append("!")) as a:
        orchestrator = Hooked(client=nodes.client).add(node("s", a))
        results, _ = await orchestrator.schedule({"text": "hi"}, extra="?")
    assert results["s/MicroService"]["text"] == "HI?!"


async def test_hooks_work_when_assigned_to_the_class(nodes, monkeypatch):
    def align_outputs(self, data, cur_node, inputs, runtime_graph, llm_parameters_dict, **kwargs):
        return {"text": f"{cur_node}:{data['text']}"}

    monkeypatch.setattr(ServiceOrchestrator, "align_outputs", align_outputs)
    async with nodes.serve(Append("!")) as a:
        results, _ = await ServiceOrchestrator(client=nodes.client).add(node("s", a)).schedule({"text": "hi"})
    assert results["s/MicroService"]["text"] == "s/MicroService:hi!"


async def test_a_failing_node_raises_an_error_naming_it_and_nothing_stays_pending(nodes):
    before = pending()
    async with nodes.serve(Append("ok")) as a, nodes.serve(FakeService(status=500)) as b:
        first, broken = node("first", a), node("broken", b)
        orchestrator = ServiceOrchestrator(client=nodes.client).add(first).add(broken)
        orchestrator.flow_to(first, broken)
        with pytest.raises(UpstreamStatusError) as caught:
            await orchestrator.schedule({"text": "x"})
    assert caught.value.node == "broken"
    assert caught.value.upstream_status == 500
    assert "fake failure" in caught.value.body
    assert pending() == before


async def test_a_refused_connection_names_the_node():
    with pytest.raises(UpstreamConnectError) as caught:
        await ServiceOrchestrator().add(node("gone", "http://127.0.0.1:9")).schedule({"text": "x"})
    assert caught.value.node == "gone"


async def test_upstream_errors_name_the_node_as_it_was_named_not_its_id(nodes):
    async with nodes.serve(FakeService(status=500)) as url:
        orchestrator = ServiceOrchestrator(client=nodes.client, breaker=CircuitBreaker(failures=1, reset_after=60))
        orchestrator.add(node("retriever", url))
        with pytest.raises(UpstreamStatusError) as failed:
            await orchestrator.schedule({"text": "x"})
        with pytest.raises(UpstreamUnavailable) as refused:  # the circuit is open now
            await orchestrator.schedule({"text": "x"})
    for caught in (failed, refused):
        assert caught.value.node == "retriever"
        assert str(caught.value).startswith("retriever ") and "MicroService" not in str(caught.value)
    assert "retriever/MicroService" in orchestrator.services  # the node's id stays OPEA's


async def test_timeouts_are_configurable_per_node(nodes):
    async with nodes.serve(Append("late", delay=2)) as a:
        slow = node("slow", a, timeout=0.2)
        started = time.monotonic()
        with pytest.raises(UpstreamTimeout) as caught:
            await ServiceOrchestrator(client=nodes.client, timeout=30).add(slow).schedule({"text": "x"})
    assert time.monotonic() - started < 1.5
    assert caught.value.status_code == 504


async def test_a_failure_in_one_branch_cancels_its_siblings(nodes):
    sibling = Append("slow", delay=5)
    async with nodes.serve(Append("")) as r, nodes.serve(FakeService(status=503)) as b, nodes.serve(sibling) as s:
        root, broken, slow = node("root", r), node("broken", b), node("slow", s)
        orchestrator = ServiceOrchestrator(client=nodes.client).add(root).add(broken).add(slow)
        orchestrator.flow_to(root, broken)
        orchestrator.flow_to(root, slow)
        started = time.monotonic()
        with pytest.raises(UpstreamStatusError):
            await orchestrator.schedule({"text": "x"})
    assert time.monotonic() - started < 2


async def test_flow_to_refuses_cycles_and_unknown_services(nodes):
    async with nodes.serve(Append("")) as a:
        s1, s2, outsider = node("s1", a), node("s2", a), node("outsider", a)
        orchestrator = ServiceOrchestrator(client=nodes.client).add(s1).add(s2)
        orchestrator.flow_to(s1, s2)
        with pytest.raises(ConfigurationError, match="cycle"):
            orchestrator.flow_to(s2, s1)
        with pytest.raises(ConfigurationError, match="add\\(\\) it first"):
            orchestrator.flow_to(s1, outsider)
        with pytest.raises(ConfigurationError, match="already exists"):
            orchestrator.add(node("s1", a))


async def test_connections_are_pooled_across_requests():
    fake = Append("")
    async with serve(fake) as a:
        orchestrator = ServiceOrchestrator().add(node("s", a))
        for _ in range(5):
            await orchestrator.schedule({"text": "x"})
    peers = {h.get("x-peer") for h in fake.headers}
    assert peers == {None}  # headers only; the connection count is checked below through the scope
    assert len(fake.requests) == 5


async def test_concurrent_requests_do_not_share_state(nodes):
    async with nodes.serve(Append("!", delay=0.05)) as a:
        orchestrator = ServiceOrchestrator(client=nodes.client).add(node("s", a))
        outcomes = await asyncio.gather(*(orchestrator.schedule({"text": str(i)}) for i in range(20)))
    assert [results["s/MicroService"]["text"] for results, _ in outcomes] == [f"{i}!" for i in range(20)]


async def test_execute_runs_one_node_with_the_hooks_as_schedule_does(nodes):
    seen = []

    class Hooked(ServiceOrchestrator):
        def align_inputs(self, inputs, cur_node, runtime_graph, llm_parameters_dict, **kwargs):
            seen.append((cur_node, kwargs))
            return {**inputs, "text": inputs["text"].upper()}

    async with nodes.serve(Append("!")) as a, nodes.serve(Append("?")) as b:
        s1, s2 = node("s1", a), node("s2", b)
        orchestrator = Hooked(client=nodes.client).add(s1).add(s2)
        orchestrator.flow_to(s1, s2)
        data, stored_as = await orchestrator.execute(
            None, time.monotonic(), "s2/MicroService", {"text": "hi"}, orchestrator, LLMParams(), flag=1
        )
    assert (data["text"], stored_as) == ("HI?", "s2/MicroService")
    assert seen == [("s2/MicroService", {"flag": 1})]


async def test_execute_streams_an_llm_node(nodes):
    async with nodes.serve(FakeLLM(tokens=["a", "b"])) as llm_url:
        llm = node("llm", llm_url, ServiceType.LLM)
        orchestrator = ServiceOrchestrator(client=nodes.client).add(llm)
        stream, stored_as = await orchestrator.execute(
            None, time.monotonic(), "llm/MicroService", {"text": "q"}, orchestrator, LLMParams(stream=True)
        )
        frames = [chunk async for chunk in stream.body_iterator]
    assert stored_as == "llm/MicroService"
    assert [b'"content":"a"' in frames[0], b'"content":"b"' in frames[1], frames[2]] == [
        True,
        True,
        b"data: [DONE]\n\n",
    ]


async def test_execute_names_an_unknown_node(nodes):
    orchestrator = ServiceOrchestrator(client=nodes.client)
    with pytest.raises(ConfigurationError, match="nope"):
        await orchestrator.execute(None, time.monotonic(), "nope", {"text": "q"}, orchestrator)
