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
* latency: the LLM writes a token every `--token-ms` ms. For each sentence, the time from the
  request to the client receiving its last word, with the guard minus without: the latency the
  guard adds per unit (a sentence waits for its end and its check). Then the same with a slow
  guardrail (a fake that answers after `--slow-ms`), checking one sentence at a time
  (`STREAM_IN_FLIGHT=1`, OPEA's way: each sentence waits for the previous one's answer) and 8 at a
  time (the default).

Timings depend on what else the machine runs: write `uptime` next to them.
"""

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
from bench import cpu_seconds, free_port, pin, wait_port

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORDS = 12


def answer(sentences: int) -> list[str]:
    """The LLM's tokens: `sentences` sentences of `WORDS` words, sentence k ending with `s<k>.`."""
    filler = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "near", "the", "river"]
    return [token for k in range(sentences) for token in [*(f" {w}" for w in filler[: WORDS - 1]), f" s{k}."]]


# -- the processes --------------------------------------------------------------------------------


def serve_role(args: argparse.Namespace) -> None:
    import uvicorn

    from megaservice.testing import FakeGuardrail, FakeLLM

    if args.role == "llm":
        app = FakeLLM(answer(args.sentences), token_delay=args.token_ms / 1000, record=False)
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


def gateway(llm_url: str, guard_url: str | None):
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

    async def handle(request: Request):
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


async def run_streams(url: str, sentences: int, count: int, concurrency: int) -> list[list[float]]:
    async with aiohttp.ClientSession() as session:
        results: list[list[float]] = []

        async def worker(n: int) -> None:
            for _ in range(n):
                arrived = await stream(session, url, sentences)
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
        plain_us, guarded_us, service_us = [], [], []
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

    async def source():
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
        "--role", "llm", "--sentences", str(sentences), "--token-ms", str(args.token_ms), cpus=stack.other_cpus
    )
    guard, _ = stack.start("--role", "guardrails", cpus=stack.other_cpus)
    slow, _ = stack.start("--role", "slow-guard", "--slow-ms", str(args.slow_ms), cpus=stack.other_cpus)
    one_at_a_time = {"MEGASERVICE_NODE_GUARDRAIL_OUT_STREAM_IN_FLIGHT": "1"}
    targets = {
        "no guard": stack.start("--role", "gateway", "--llm", llm, cpus=stack.gateway_cpus)[0],
        "guardrails service": stack.start("--role", "gateway", "--llm", llm, "--guard", guard, cpus=stack.gateway_cpus)[
            0
        ],
        f"{args.slow_ms:g} ms guardrail, 1 in flight": stack.start(
            "--role", "gateway", "--llm", llm, "--guard", slow, cpus=stack.gateway_cpus, env=one_at_a_time
        )[0],
        f"{args.slow_ms:g} ms guardrail, 8 in flight": stack.start(
            "--role", "gateway", "--llm", llm, "--guard", slow, cpus=stack.gateway_cpus
        )[0],
    }
    for url in targets.values():
        asyncio.run(run_streams(url, sentences, 1, 1))  # warm up
    runs: dict[str, list[list[float]]] = {name: [] for name in targets}
    for _ in range(args.rounds):
        for name, url in targets.items():
            runs[name] += asyncio.run(run_streams(url, sentences, args.streams_latency, 1))
    base = [statistics.median(run[k] for run in runs["no guard"]) for k in range(sentences)]
    ms = args.token_ms * WORDS
    print(f"\n## latency: {sentences} sentences of {WORDS} tokens, one every {ms:g} ms ({args.token_ms:g} ms/token)\n")
    print("| guard | first sentence (ms) | added per sentence, p50 (ms) | p90 (ms) | last sentence (ms) |")
    print("|---|---:|---:|---:|---:|")
    for name, run in runs.items():
        at = [statistics.median(r[k] for r in run) for k in range(sentences)]
        added = sorted(at[k] - base[k] for k in range(sentences))
        p90 = added[int(0.9 * (len(added) - 1))]
        print(f"| {name} | {at[0] * 1000:.1f} | {statistics.median(added) * 1000:.1f} | {p90 * 1000:.1f} | "
              f"{at[-1] * 1000:.1f} |", flush=True)  # fmt: skip


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
