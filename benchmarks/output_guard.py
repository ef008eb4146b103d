"""The output guard's cost: a megaservice streaming an LLM's answer through a guardrail node after the LLM, vs not.

    python benchmarks/output_guard.py                         # both parts, 3 rounds
    python benchmarks/output_guard.py --part cpu --rounds 5   # or: --part latency

Each piece runs in its own process (uvicorn on uvloop, as the services run): the fake LLM
(`megaservice.testing.FakeLLM`; its answer is sentences of 12 words, the last `s<k>.`), the real
guardrails service (`banned` substrings and a regex, `pii` masking: the cheap checks), and the
megaservice gateway (ServiceOrchestrator: `llm`, or `llm` → `guardrail_out`). The gateway gets CPU 0,
everything else the other cores. Configurations are measured back to back, round after round;
the figures are medians over the rounds.

* cpu: the LLM streams as fast as it can (no delay); `--streams` streams one after the other, then
  as many again with 8 at a time. Reported: the gateway's CPU µs per token with and without the
  guard, the difference (the output guard's cost per token in the megaservice), and the guardrails
  service's CPU per token (the checks and their HTTP, in their own process).
* latency: the LLM writes a token every `--token-ms` ms and stamps each sentence's last word with
  the time it sends it (the monotonic clock, which all processes of the machine share). For each
  sentence, the time from that send to the client receiving the word: without a guard, the relay's
  latency; with one, plus the sentence's check (the words before the last one wait longer, for the
  end of their sentence). Then the same with a slow guardrail (a fake that answers after
  `--slow-ms`), checking one sentence at a time (`STREAM_IN_FLIGHT=1`, OPEA's way: each sentence
  waits for the previous one's answer, so a guardrail slower than the LLM's sentences falls further
  behind with every sentence) and 8 at a time (the default).

Timings depend on what else the machine runs: write `uptime` next to them.
"""

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
from bench import cpu_seconds, free_port, pin, wait_port
from starlette.types import ASGIApp, Receive, Scope, Send

if TYPE_CHECKING:
    from megaservice import MicroService

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORDS = 12


def answer(sentences: int) -> list[str]:
    """The LLM's tokens: `sentences` sentences of `WORDS` words, sentence k ending with `s<k>.`."""
    filler = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "near", "the", "river"]
    return [token for k in range(sentences) for token in [*(f" {w}" for w in filler[: WORDS - 1]), f" s{k}."]]


def stamp() -> str:
    """The monotonic clock (the same in every process of the machine), in µs, as lowercase letters."""
    value, letters = time.perf_counter_ns() // 1000, []
    while value:
        value, digit = divmod(value, 26)
        letters.append(chr(97 + digit))
    return "".join(reversed(letters))


def unstamp(letters: str) -> float:
    """The seconds `stamp()` wrote."""
    value = 0
    for letter in letters:
        value = value * 26 + ord(letter) - 97
    return value / 1e6


class StampedLLM:
    """An OpenAI-compatible stream whose sentence k ends with `s<k><when it was sent, in letters>.`."""

    def __init__(self, sentences: int, token_delay: float) -> None:
        self.sentences = sentences
        self.token_delay = token_delay

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        words = answer(1)[:-1]
        for k in range(self.sentences):
            for token in [*words, None]:
                await asyncio.sleep(self.token_delay)
                content = token if token is not None else f" s{k}{stamp()}."
                chunk = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": content}}]}
                await send({"type": "http.response.body", "body": b"data: " + json.dumps(chunk).encode() + b"\n\n",
                            "more_body": True})  # fmt: skip
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})


# -- the processes --------------------------------------------------------------------------------


def serve_role(args: argparse.Namespace) -> None:
    import uvicorn

    from megaservice.testing import FakeGuardrail, FakeLLM

    app: ASGIApp
    if args.role == "llm":
        app = FakeLLM(answer(args.sentences), token_delay=args.token_ms / 1000, record=False)
    elif args.role == "stamped-llm":
        app = StampedLLM(args.sentences, args.token_ms / 1000)
    elif args.role == "slow-guard":
        app = FakeGuardrail(banned=(), delay=args.slow_ms / 1000, record=False)
    elif args.role == "guardrails":
        from megaservice.components.guardrails import GuardrailsSettings, create_service

        settings = GuardrailsSettings.from_env(
            {
                "GUARDRAILS_CHECKS": "banned,pii",
                "GUARDRAILS_BANNED_SUBSTRINGS": "backdoor,malware,password,exploit",
                "GUARDRAILS_BANNED_REGEXES": '["\\\\bsk-[A-Za-z0-9]{20,}"]',
            }
        )
        app = create_service(settings).app
    else:
        app = gateway(args.llm, args.guard).app
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


def gateway(llm_url: str, guard_url: str | None) -> "MicroService":
    from fastapi import Request

    from megaservice import LLMParams, MicroService, ServiceOrchestrator, ServiceRoleType, ServiceType

    def remote(name: str, url: str, kind: ServiceType, path: str) -> MicroService:
        port = int(url.rsplit(":", 1)[1])
        return MicroService(
            name, host="127.0.0.1", port=port, endpoint=path, use_remote_service=True, service_type=kind
        )

    orchestrator = ServiceOrchestrator()
    llm = remote("llm", llm_url, ServiceType.LLM, "/v1/chat/completions")
    orchestrator.add(llm)
    if guard_url:
        guard = remote("guardrail_out", guard_url, ServiceType.GUARDRAIL, "/v1/guardrails")
        orchestrator.add(guard).flow_to(llm, guard)
    service = MicroService("Gateway", service_role=ServiceRoleType.MEGASERVICE, port=0, endpoint="/v1/chat")

    async def handle(request: Request) -> Any:
        data = await request.json()
        results, _ = await orchestrator.schedule({"text": data["text"]}, llm_parameters=LLMParams(stream=True))
        return next(iter(r for r in results.values() if hasattr(r, "body_iterator")))

    service.add_route("/v1/chat", handle, methods=["POST"])
    return service


class Stack:
    """The processes of one benchmark: started once, stopped at the end."""

    def __init__(self, pin_gateway: bool) -> None:
        cores = os.cpu_count() or 1
        self.gateway_cpus, self.other_cpus = (
            ({0}, set(range(1, cores))) if cores >= 2 and pin_gateway else (set(), set())
        )
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *options: str, cpus: set[int], env: dict[str, str] | None = None) -> tuple[str, int]:
        port = free_port()
        cmd = [sys.executable, str(Path(__file__).resolve()), *options, "--port", str(port)]
        environ = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        proc = subprocess.Popen(cmd, cwd=HERE, env=environ)
        pin(proc.pid, cpus)
        self.procs.append(proc)
        wait_port(port, proc)
        return f"http://127.0.0.1:{port}", proc.pid

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.wait(10)


# -- the client -----------------------------------------------------------------------------------


async def stream(session: aiohttp.ClientSession, url: str, sentences: int) -> list[float]:
    """One request; the seconds from sending it to the arrival of each sentence's last word."""
    marks = [f"s{k}.".encode() for k in range(sentences)]
    arrived: list[float] = []
    seen = b""
    started = time.perf_counter()
    async with session.post(url + "/v1/chat", json={"text": "q"}) as response:
        assert response.status == 200, await response.text()
        async for chunk in response.content.iter_any():
            now = time.perf_counter()
            seen = seen[-16:] + chunk
            while len(arrived) < sentences and marks[len(arrived)] in seen:
                arrived.append(now - started)
                seen = seen[seen.index(marks[len(arrived) - 1]) + 1 :]
    assert len(arrived) == sentences, f"{len(arrived)} of {sentences} sentences arrived"
    return arrived


_STAMPED = re.compile(rb"s(\d+)([a-z]+)\.")


async def stamped_stream(session: aiohttp.ClientSession, url: str, sentences: int) -> list[float]:
    """One request; for each sentence, the seconds from the LLM sending its last word to the client receiving it."""
    held: list[float] = []
    buffer = b""
    async with session.post(url + "/v1/chat", json={"text": "q"}) as response:
        assert response.status == 200, await response.text()
        async for chunk in response.content.iter_any():
            now = time.perf_counter()
            buffer += chunk
            end = 0
            for match in _STAMPED.finditer(buffer):
                assert int(match[1]) == len(held), "sentences out of order"
                held.append(now - unstamp(match[2].decode()))
                end = match.end()
            buffer = buffer[end:][-256:]
    assert len(held) == sentences, f"{len(held)} of {sentences} sentences arrived"
    return held


async def run_streams(
    url: str, sentences: int, count: int, concurrency: int, *, stamped: bool = False
) -> list[list[float]]:
    one = stamped_stream if stamped else stream
    async with aiohttp.ClientSession() as session:
        results: list[list[float]] = []

        async def worker(n: int) -> None:
            for _ in range(n):
                arrived = await one(session, url, sentences)
                results.append(arrived)

        share = [count // concurrency + (1 if i < count % concurrency else 0) for i in range(concurrency)]
        await asyncio.gather(*(worker(n) for n in share))
        return results


# -- the parts --------------------------------------------------------------------------------------


def part_cpu(args: argparse.Namespace, stack: Stack) -> None:
    sentences = args.sentences
    tokens = sentences * WORDS
    llm, _ = stack.start("--role", "llm", "--sentences", str(sentences), "--token-ms", "0", cpus=stack.other_cpus)
    guard, guard_pid = stack.start("--role", "guardrails", cpus=stack.other_cpus)
    plain, plain_pid = stack.start("--role", "gateway", "--llm", llm, cpus=stack.gateway_cpus)
    guarded, guarded_pid = stack.start("--role", "gateway", "--llm", llm, "--guard", guard, cpus=stack.gateway_cpus)
    for url in (plain, guarded):
        asyncio.run(run_streams(url, sentences, 5, 1))  # warm up
    print(f"\n## cpu: {args.streams} streams of {tokens} tokens ({sentences} sentences), no token delay\n")
    print(
        "| streams at once | gateway µs/token, no guard | with guard | added by the guard "
        "| guardrails service µs/token |"
    )
    print("|---:|---:|---:|---:|---:|")
    for concurrency in (1, 8):
        plain_us: list[float] = []
        guarded_us: list[float] = []
        service_us: list[float] = []
        for _ in range(args.rounds):
            for url, pid, out in ((plain, plain_pid, plain_us), (guarded, guarded_pid, guarded_us)):
                before, service_before = cpu_seconds(pid), cpu_seconds(guard_pid)
                asyncio.run(run_streams(url, sentences, args.streams, concurrency))
                out.append((cpu_seconds(pid) - before) / (args.streams * tokens) * 1e6)
                if url == guarded:
                    service_us.append((cpu_seconds(guard_pid) - service_before) / (args.streams * tokens) * 1e6)
        p, g, s = statistics.median(plain_us), statistics.median(guarded_us), statistics.median(service_us)
        print(f"| {concurrency} | {p:.1f} | {g:.1f} | {g - p:.1f} | {s:.1f} |", flush=True)
    print("\nOf which the guard's own work (node stubbed in process, no HTTP), CPU µs/token, median of the rounds:")
    for per_read in (1, WORDS):
        cost = statistics.median(machinery_us_per_token(sentences, per_read) for _ in range(args.rounds))
        print(f"- {per_read} event(s) per network read: {cost:.1f}", flush=True)


def machinery_us_per_token(sentences: int, per_read: int, streams: int = 200) -> float:
    """CPU µs per token of the guard's own work (`_pipeline.guard.through_node`), the node stubbed in process.

    The LLM's events come `per_read` at a time (what one network read brings); the stub answers
    each sentence with itself at once, so no HTTP is counted: what is left is parsing the events,
    cutting sentences, the task per sentence, the ordering and the OPEA frames.
    """
    import orjson

    from megaservice import MicroService
    from megaservice._pipeline.guard import through_node
    from megaservice._pipeline.plan import Node
    from megaservice.metrics import get_metrics
    from megaservice.resilience import Timeout

    class Stub:
        async def post(self, name: str, url: str, body: bytes, **_: object) -> tuple[str, bytes]:
            return "application/json", orjson.dumps({"text": orjson.loads(body)["text"], "downstream_black_list": []})

    def chunk(token: str) -> bytes:
        payload = {"object": "chat.completion.chunk", "model": "fake-llm", "choices": [{"delta": {"content": token}}]}
        return b"data: " + orjson.dumps(payload) + b"\n\n"

    events = [chunk(token) for token in answer(sentences)] + [b"data: [DONE]\n\n"]
    metrics = get_metrics()
    url = "http://127.0.0.1:9/v1/guardrails"
    service = MicroService("stub", host="127.0.0.1", port=9, endpoint="/v1/guardrails", use_remote_service=True)
    node = Node("stub", service, False, url, {}, metrics.node_latency.labels("stub"), Timeout())

    async def source() -> AsyncIterator[list[bytes]]:
        for i in range(0, len(events), per_read):
            yield events[i : i + per_read]

    async def run(count: int) -> None:
        for _ in range(count):
            async for _ in through_node(Stub(), metrics, node, source()):  # type: ignore[arg-type]
                pass

    async def measure() -> float:
        await run(20)
        started = time.process_time()
        await run(streams)
        return (time.process_time() - started) / (streams * sentences * WORDS) * 1e6

    import uvloop

    return uvloop.run(measure())


def part_latency(args: argparse.Namespace, stack: Stack) -> None:
    sentences = args.sentences
    llm, _ = stack.start(
        "--role", "stamped-llm", "--sentences", str(sentences), "--token-ms", str(args.token_ms), cpus=stack.other_cpus
    )
    guard, _ = stack.start("--role", "guardrails", cpus=stack.other_cpus)
    slow, _ = stack.start("--role", "slow-guard", "--slow-ms", str(args.slow_ms), cpus=stack.other_cpus)
    one_at_a_time = {"MEGASERVICE_NODE_GUARDRAIL_OUT_STREAM_IN_FLIGHT": "1"}

    def gateway_to(guard_url: str | None, env: dict[str, str] | None = None) -> str:
        options = ["--role", "gateway", "--llm", llm, *(["--guard", guard_url] if guard_url else [])]
        return stack.start(*options, cpus=stack.gateway_cpus, env=env)[0]

    targets = {
        "no guard": gateway_to(None),
        "guardrails service (banned, regex, pii)": gateway_to(guard),
        f"a {args.slow_ms:g} ms guardrail, 1 sentence in flight (OPEA's way)": gateway_to(slow, one_at_a_time),
        f"a {args.slow_ms:g} ms guardrail, 8 in flight (default)": gateway_to(slow),
    }
    for url in targets.values():
        asyncio.run(run_streams(url, sentences, 1, 1, stamped=True))  # warm up
    held: dict[str, list[float]] = {name: [] for name in targets}
    for _ in range(args.rounds):
        for name, url in targets.items():
            for run in asyncio.run(run_streams(url, sentences, args.streams_latency, 1, stamped=True)):
                held[name] += run
    base = statistics.median(held["no guard"])
    ms = args.token_ms * WORDS
    print(f"\n## latency: {sentences} sentences of {WORDS} tokens, one every {ms:g} ms ({args.token_ms:g} ms/token)\n")
    print("From the LLM sending a sentence's last word to the client receiving it, over every sentence:\n")
    print("| target | p50 (ms) | p90 (ms) | max (ms) | added per sentence, p50 (ms) |")
    print("|---|---:|---:|---:|---:|")
    for name, values in held.items():
        values.sort()
        p50, p90 = statistics.median(values), values[int(0.9 * (len(values) - 1))]
        print(f"| {name} | {p50 * 1000:.1f} | {p90 * 1000:.1f} | {values[-1] * 1000:.1f} | "
              f"{(p50 - base) * 1000:.1f} |", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("cpu", "latency", "both"), default="both")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sentences", type=int, default=20, help="sentences in the LLM's answer")
    parser.add_argument("--streams", type=int, default=40, help="cpu: streams per configuration and round")
    parser.add_argument("--streams-latency", type=int, default=3, help="latency: streams per target and round")
    parser.add_argument("--token-ms", type=float, default=10.0, help="latency: ms between two tokens")
    parser.add_argument("--slow-ms", type=float, default=150.0, help="latency: the slow guardrail's answer time")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the gateway to CPU 0")
    parser.add_argument("--role", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--llm", help=argparse.SUPPRESS)
    parser.add_argument("--guard", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role:
        serve_role(args)  # uvicorn picks uvloop, as the services do
        return
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} cores)")
    for part, run in (("cpu", part_cpu), ("latency", part_latency)):
        if args.part in (part, "both"):
            stack = Stack(pin_gateway=not args.no_pin)
            try:
                run(args, stack)
            finally:
                stack.stop()
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
