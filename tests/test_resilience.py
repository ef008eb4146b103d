"""Resilience policies over real sockets: retries, the circuit breaker, fallback nodes, env configuration."""

import time

import aiohttp
import orjson
import pytest
from prometheus_client import REGISTRY

from megaservice import CircuitBreaker, ConfigurationError, Retry, ServiceOrchestrator, ServiceType, Timeout
from megaservice.exceptions import (
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from megaservice.resilience import Circuit
from megaservice.settings import node_prefix
from megaservice.testing import FakeLLM, FakeService, Fault, FaultyServer, serve, unused_url
from tests.helpers import gateway, node

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("upstream_client")]

FAST_RETRY = Retry(attempts=3, backoff=0.01, max_backoff=0.02)


def sample(name: str, node_name: str) -> float:
    return REGISTRY.get_sample_value(name, {"node": node_name}) or 0.0


async def ask(url: str, stream: bool = False) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{url}/v1/chat", json={"text": "q", "stream": stream}) as response:
            return response.status, await response.read()


# -- retries -----------------------------------------------------------------------------------


async def test_a_transient_failure_before_the_llm_is_retried():
    async with FaultyServer(Fault.STATUS, status=503, fail_first=2) as upstream:
        pipeline = ServiceOrchestrator(retry=FAST_RETRY).add(node("flaky", upstream.url))
        before = sample("pipeline_node_retries_total", "flaky/MicroService")
        async with serve(gateway(pipeline).app) as url:
            status, body = await ask(url)
    assert status == 200
    assert orjson.loads(body) == {"text": "q"}
    assert upstream.requests == 3
    assert sample("pipeline_node_retries_total", "flaky/MicroService") - before == 2


async def test_retries_stop_after_the_last_attempt():
    async with FaultyServer(Fault.STATUS, status=503) as upstream:
        pipeline = ServiceOrchestrator(retry=FAST_RETRY).add(node("down", upstream.url))
        async with serve(gateway(pipeline).app) as url:
            status, body = await ask(url)
    assert (status, orjson.loads(body)["node"]) == (502, "down")
    assert upstream.requests == 3


async def test_a_request_the_node_refuses_is_not_retried():
    async with FaultyServer(Fault.STATUS, status=422) as upstream:
        pipeline = ServiceOrchestrator(retry=FAST_RETRY).add(node("strict", upstream.url))
        async with serve(gateway(pipeline).app) as url:
            status, _ = await ask(url)
    assert status == 502
    assert upstream.requests == 1


async def test_the_llm_and_the_nodes_after_it_are_never_retried():
    async with (
        FaultyServer(Fault.STATUS, status=503, fail_first=1) as llm,
        FaultyServer(Fault.STATUS, status=503, fail_first=1) as after,
    ):
        pipeline = ServiceOrchestrator(retry=FAST_RETRY)
        first, second = node("llm", llm.url, ServiceType.LLM), node("after", after.url)
        pipeline.add(first).add(second).flow_to(first, second)
        async with serve(gateway(pipeline).app) as url:
            status1, body1 = await ask(url)  # the LLM fails once: not retried
            status2, body2 = await ask(url)  # the LLM answers, the node after it fails once: not retried
    assert (status1, orjson.loads(body1)["node"], llm.requests) == (502, "llm", 2)
    assert (status2, orjson.loads(body2)["node"], after.requests) == (502, "after", 1)


async def test_retry_classifies_failures_and_jitters_its_backoff():
    retry = Retry(attempts=4, backoff=0.1, max_backoff=0.3)
    args = {"node": "n", "url": "u"}
    assert retry.should_retry(UpstreamConnectError("x", **args))
    assert retry.should_retry(UpstreamTimeout("x", **args))
    assert retry.should_retry(UpstreamStatusError(status=503, body="", **args))
    assert not retry.should_retry(UpstreamStatusError(status=400, body="", **args))
    assert not retry.should_retry(UpstreamProtocolError("x", **args))
    delays = [[retry.delay(n) for _ in range(200)] for n in range(4)]
    for n, bound in enumerate([0.1, 0.2, 0.3, 0.3]):
        assert all(0 <= d <= bound for d in delays[n])
        assert max(delays[n]) > bound / 2  # jittered over the whole range, not a fixed wait
        assert len(set(delays[n])) > 100
    with pytest.raises(ConfigurationError):
        Retry(attempts=0)


# -- circuit breaker ---------------------------------------------------------------------------


class Clock:
    """A clock a test steps by hand (circuit breakers take it instead of sleeping)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_circuit_opens_refuses_lets_one_trial_through_and_closes():
    clock = Clock()
    changes: list[bool] = []
    circuit = Circuit(CircuitBreaker(failures=2, reset_after=10), "n", clock=clock, on_change=changes.append)
    circuit.check("u")
    circuit.record(False)
    circuit.check("u")
    circuit.record(False)  # second failure in a row: open
    with pytest.raises(UpstreamUnavailable, match=r"n failed 2 times in a row; not calling it for another 10\.0 s"):
        circuit.check("u")
    clock.now += 9.9
    with pytest.raises(UpstreamUnavailable):
        circuit.check("u")
    clock.now += 0.2
    circuit.check("u")  # the trial
    with pytest.raises(UpstreamUnavailable):
        circuit.check("u")  # only one trial at a time
    circuit.record(True)
    circuit.check("u")
    assert changes == [True, False]


async def test_a_cancelled_call_says_nothing_about_the_node():
    clock = Clock()
    circuit = Circuit(CircuitBreaker(failures=1, reset_after=1), "n", clock=clock)
    circuit.record(False)
    clock.now += 2
    circuit.check("u")  # the trial...
    circuit.record(None)  # ...was cancelled: the circuit stays open, and another trial may go
    circuit.check("u")
    circuit.record(False)
    with pytest.raises(UpstreamUnavailable):
        circuit.check("u")


async def test_the_circuit_opens_after_failures_fails_fast_and_closes_after_a_good_trial():
    name = "breaker/MicroService"
    clock = Clock()
    async with FaultyServer(Fault.HANG) as upstream:
        breaker = CircuitBreaker(failures=2, reset_after=0.5)
        pipeline = ServiceOrchestrator(breaker=breaker, timeout=Timeout(first_byte=0.2))
        pipeline.clock = clock
        pipeline.add(node("breaker", upstream.url))
        async with serve(gateway(pipeline).app) as url:
            assert [(await ask(url))[0] for _ in range(2)] == [504, 504]
            assert sample("pipeline_node_circuit_open", name) == 1
            started = time.monotonic()
            status, body = await ask(url)
            refused_in = time.monotonic() - started
            assert (status, orjson.loads(body)["type"], upstream.requests) == (503, "upstream_unavailable", 2)
            assert refused_in < 0.15  # not another 0.2 s wait on the node
            upstream.fault = Fault.OK  # the node recovers
            clock.now += 0.55
            assert (await ask(url))[0] == 200  # the trial call
            assert (await ask(url))[0] == 200
    assert upstream.requests == 4
    assert sample("pipeline_node_circuit_open", name) == 0


async def test_a_failed_trial_opens_the_circuit_again_and_4xx_answers_do_not_count():
    clock = Clock()
    async with FaultyServer(Fault.STATUS, status=500) as upstream:
        pipeline = ServiceOrchestrator(breaker=CircuitBreaker(failures=1, reset_after=0.2))
        pipeline.clock = clock
        pipeline.add(node("b2", upstream.url))
        async with serve(gateway(pipeline).app) as url:
            assert (await ask(url))[0] == 502  # opens
            assert (await ask(url))[0] == 503
            clock.now += 0.25
            assert (await ask(url))[0] == 502  # the trial fails: open again
            assert (await ask(url))[0] == 503
            assert upstream.requests == 2
            upstream.status = 404
            clock.now += 0.25
            assert [(await ask(url))[0] for _ in range(3)] == [502, 502, 502]  # 4xx: the node is up
            assert upstream.requests == 5


# -- fallback ----------------------------------------------------------------------------------


async def test_a_failing_node_is_answered_by_its_fallback():
    backup = FakeService()
    async with serve(backup) as backup_url:
        primary = node("primary", unused_url(), fallback=node("backup", backup_url))
        pipeline = ServiceOrchestrator().add(primary)
        before = sample("pipeline_node_fallbacks_total", "primary/MicroService")
        async with serve(gateway(pipeline).app) as url:
            status, body = await ask(url)
    assert (status, orjson.loads(body)) == (200, {"text": "q"})
    assert backup.requests == [{"text": "q"}]
    assert sample("pipeline_node_fallbacks_total", "primary/MicroService") - before == 1


async def test_a_failing_llm_stream_is_served_by_the_fallback_llm():
    backup = FakeLLM(tokens=["from", " backup"])
    async with FaultyServer(Fault.STATUS, status=503) as primary, serve(backup) as backup_url:
        llm = node("llm", primary.url, ServiceType.LLM, fallback=node("llm2", backup_url, ServiceType.LLM))
        async with serve(gateway(ServiceOrchestrator().add(llm)).app) as url:
            status, body = await ask(url, stream=True)
    assert status == 200
    assert b'"content":"from"' in body
    assert body.rstrip().endswith(b"data: [DONE]")
    assert backup.completed == 1


async def test_the_fallback_is_not_called_when_the_request_was_wrong():
    backup = FakeService()
    async with FaultyServer(Fault.STATUS, status=400) as upstream, serve(backup) as backup_url:
        pipeline = ServiceOrchestrator().add(node("p", upstream.url, fallback=node("b", backup_url)))
        async with serve(gateway(pipeline).app) as url:
            status, body = await ask(url)
    assert (status, orjson.loads(body)["upstream_status"]) == (502, 400)
    assert backup.requests == []


# -- configuration from the environment --------------------------------------------------------


async def test_policies_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("MEGASERVICE_RETRIES", "2")
    monkeypatch.setenv("MEGASERVICE_RETRY_BACKOFF", "0.01")
    monkeypatch.setenv("MEGASERVICE_NODE_SLOW_FIRST_BYTE_TIMEOUT", "0.2")
    backup = FakeService()
    async with (
        FaultyServer(Fault.STATUS, status=503) as flaky,
        FaultyServer(Fault.HANG) as slow,
        serve(backup) as backup_url,
    ):
        monkeypatch.setenv("MEGASERVICE_NODE_GONE_FALLBACK_URL", f"{backup_url}/v1/node")
        retried = ServiceOrchestrator().add(node("flaky", flaky.url))
        timed = ServiceOrchestrator().add(node("slow", slow.url))
        rescued = ServiceOrchestrator().add(node("gone", unused_url()))
        async with (
            serve(gateway(retried).app) as u1,
            serve(gateway(timed).app) as u2,
            serve(gateway(rescued).app) as u3,
        ):
            assert (await ask(u1))[0] == 502
            started = time.monotonic()
            assert (await ask(u2))[0] == 504
            waited = time.monotonic() - started
            assert (await ask(u3))[0] == 200
    assert flaky.requests == 3
    assert slow.requests == 3  # retried too: MEGASERVICE_RETRIES applies to every pre-LLM node
    assert waited < 2
    assert backup.requests == [{"text": "q"}]


async def test_a_node_argument_in_code_beats_the_environment(monkeypatch):
    monkeypatch.setenv("MEGASERVICE_NODE_FLAKY_RETRIES", "3")
    async with FaultyServer(Fault.STATUS, status=503) as flaky:
        pipeline = ServiceOrchestrator().add(node("flaky", flaky.url, retry=Retry(attempts=2, backoff=0.01)))
        async with serve(gateway(pipeline).app) as url:
            assert (await ask(url))[0] == 502
    assert flaky.requests == 2


async def test_environment_values_are_checked(monkeypatch):
    assert node_prefix("opea_service@embedding/MicroService") == "MEGASERVICE_NODE_OPEA_SERVICE_EMBEDDING_"
    monkeypatch.setenv("MEGASERVICE_TOTAL_TIMEOUT", "soon")
    with pytest.raises(ConfigurationError, match="MEGASERVICE_TOTAL_TIMEOUT"):
        ServiceOrchestrator()
    monkeypatch.setenv("MEGASERVICE_TOTAL_TIMEOUT", "0")
    monkeypatch.setenv("MEGASERVICE_BREAKER_FAILURES", "3")
    monkeypatch.setenv("MEGASERVICE_RETRIES", "-1")
    with pytest.raises(ConfigurationError, match="MEGASERVICE_RETRIES"):
        ServiceOrchestrator()
    monkeypatch.delenv("MEGASERVICE_RETRIES")
    pipeline = ServiceOrchestrator()
    assert pipeline.timeout.total is None
    assert pipeline.breaker == CircuitBreaker(failures=3)
