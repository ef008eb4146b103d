"""Benchmark the LLM service against calling its model server directly: added TTFT and tokens/s.

Starts a fake OpenAI-compatible server (`backends.py --role llm`, FakeLLM on uvicorn) and the LLM
service in front of it (`python -m megaservice.components.llm`), each in its own process, then
streams the same chat request to both, alternately, round after round:

    python benchmarks/llm_service.py                                  # 20 ms/token and 0 ms/token
    python benchmarks/llm_service.py --token-ms 0 --tokens 512 -c 8   # one profile, 8 streams at once

For each profile and target it reports the time to the first token (p50, p99), the tokens per
second of each stream after its first token (p50: the relay's rate), the tokens per second of the
whole run (`c` streams at once, every token counted: the per-request cost included), the requests
per second, and the CPU time per stream of the service and of the fake server; then the service's
added TTFT (p50 service - p50 direct) and its tok/s ratios, medians of the per-round values.

On a machine with two or more cores the service gets CPU 0 and everything else the other cores
(`--no-pin`: any CPU), so that its own cost is what is measured. Timings depend on what else the
machine runs: write `uptime` next to them.
"""

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from bench import cpu_seconds, free_port, pin, stop, wait_port

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BODY = {"model": "fake", "messages": [{"role": "user", "content": "Tell me a story."}], "stream": True}


@dataclass
class Run:
    """One target's measurements in one round."""

    ttft: list[float] = field(default_factory=list)
    decode: list[float] = field(default_factory=list)
    """Each stream's tokens per second after its first token."""
    tokens: int = 0
    requests: int = 0
    seconds: float = 0.0
    service_cpu: float = 0.0
    """CPU seconds the LLM service process used during the run."""
    fake_cpu: float = 0.0
    """CPU seconds the fake model server used during the run (for scale: a uvicorn app streaming)."""

    @property
    def tok_s(self) -> float:
        """Every token of the run over the run's wall time."""
        return self.tokens / self.seconds

    def p(self, q: int) -> float:
        return statistics.quantiles(self.ttft, n=100, method="inclusive")[q - 1] if len(self.ttft) > 1 else self.ttft[0]


async def one_stream(session: aiohttp.ClientSession, url: str, run: Run) -> None:
    started = time.perf_counter()
    first = last = None
    tokens = 0
    async with session.post(url, json=BODY) as response:
        response.raise_for_status()
        async for data in response.content.iter_any():
            count = data.count(b"data: {")
            if count:
                last = time.perf_counter() - started
                if first is None:
                    first = last
            tokens += count
    assert first is not None and last is not None, "no token came"
    run.ttft.append(first)
    if tokens > 1 and last > first:
        run.decode.append((tokens - 1) / (last - first))
    run.tokens += tokens
    run.requests += 1


async def measure(url: str, requests: int, concurrency: int, service_pid: int, fake_pid: int) -> Run:
    run = Run()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(concurrency):  # warm the connections (and the service's pool)
            await one_stream(session, url, Run())
        queue = iter(range(requests))

        async def worker() -> None:
            for _ in queue:
                await one_stream(session, url, run)

        started, cpu, fake_cpu = time.perf_counter(), cpu_seconds(service_pid), cpu_seconds(fake_pid)
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        run.seconds = time.perf_counter() - started
        run.service_cpu = cpu_seconds(service_pid) - cpu
        run.fake_cpu = cpu_seconds(fake_pid) - fake_cpu
    return run


def profile(args: argparse.Namespace, token_ms: float, logs: Path, procs: list[subprocess.Popen[bytes]]) -> str:
    cores = os.cpu_count() or 1
    service_cpus, other_cpus = ({0}, set(range(1, cores))) if cores >= 2 and args.pin else (set(), set())
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MEGASERVICE_ACCESS_LOG": "0", "HF_HUB_OFFLINE": "1"}

    def start(cmd: list[str], name: str, cpus: set[int], extra: dict[str, str]) -> subprocess.Popen[bytes]:
        log = (logs / f"{name}-{token_ms:g}ms.log").open("wb")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env={**env, **extra})
        pin(proc.pid, cpus)
        procs.append(proc)
        return proc

    fake_port, service_port = free_port(), free_port()
    fake = [sys.executable, str(HERE / "backends.py"), "--role", "llm", "--port", str(fake_port)]
    fake += ["--tokens", str(args.tokens), "--token-ms", str(token_ms), "--prefill-ms", str(args.prefill_ms)]
    fake_llm = start(fake, "fake-llm", other_cpus, {})
    wait_port(fake_port, fake_llm)
    service = [sys.executable, "-m", "megaservice.components.llm", "--host", "127.0.0.1", "--port", str(service_port)]
    llm_service = start(service, "llm-service", service_cpus, {"LLM_ENDPOINT": f"http://127.0.0.1:{fake_port}"})
    wait_port(service_port, llm_service)
    targets = {
        "direct": f"http://127.0.0.1:{fake_port}/v1/chat/completions",
        "service": f"http://127.0.0.1:{service_port}/v1/chat/completions",
    }
    requests = args.requests or (10 if token_ms else 200) * args.concurrency
    runs: dict[str, list[Run]] = {name: [] for name in targets}
    for round_ in range(args.rounds):
        order = list(targets) if round_ % 2 == 0 else list(reversed(targets))
        for name in order:
            run = asyncio.run(measure(targets[name], requests, args.concurrency, llm_service.pid, fake_llm.pid))
            runs[name].append(run)
            print(
                f"{token_ms:g} ms/token r{round_} {name:8} TTFT p50 {run.p(50) * 1000:7.2f} ms  "
                f"{run.tok_s:9.0f} tok/s  {run.requests / run.seconds:7.1f} req/s  "
                f"CPU ms/stream: service {run.service_cpu * 1000 / run.requests:.2f}, "
                f"fake {run.fake_cpu * 1000 / run.requests:.2f}",
                file=sys.stderr,
                flush=True,
            )
    stop(procs)
    procs.clear()
    return table(args, token_ms, requests, runs)


def table(args: argparse.Namespace, token_ms: float, requests: int, runs: dict[str, list[Run]]) -> str:
    head = (
        f"#### {token_ms:g} ms/token, {args.tokens} tokens, {args.prefill_ms:g} ms before the headers; "
        f"{requests} streams per run, {args.concurrency} at once, {args.rounds} rounds"
    )
    lines = [
        head,
        "",
        "| target | TTFT p50 ms | TTFT p99 ms | tok/s (all streams) | decode tok/s per stream, p50 | req/s "
        "| service CPU ms/stream | fake server CPU ms/stream |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, mine in runs.items():
        p50 = statistics.median(r.p(50) for r in mine) * 1000
        p99 = statistics.median(r.p(99) for r in mine) * 1000
        tok_s = statistics.median(r.tok_s for r in mine)
        decode = (
            statistics.median(statistics.median(r.decode) for r in mine if r.decode)
            if any(r.decode for r in mine)
            else 0.0
        )
        req_s = statistics.median(r.requests / r.seconds for r in mine)
        cpu = statistics.median(r.service_cpu * 1000 / r.requests for r in mine) if name == "service" else 0.0
        cpu_cell = f"{cpu:.2f}" if name == "service" else "-"
        fake = statistics.median(r.fake_cpu * 1000 / r.requests for r in mine)
        lines.append(
            f"| {name} | {p50:.2f} | {p99:.2f} | {tok_s:.0f} | {decode:.0f} | {req_s:.1f} | {cpu_cell} | {fake:.2f} |"
        )
    pairs = list(zip(runs["service"], runs["direct"], strict=True))
    added = statistics.median(s.p(50) - d.p(50) for s, d in pairs)
    ratio = statistics.median(s.tok_s / d.tok_s for s, d in pairs)
    decoded = [statistics.median(s.decode) / statistics.median(d.decode) for s, d in pairs if s.decode and d.decode]
    decode_note = f"**{statistics.median(decoded):.3f}** per stream after the first token (p50), " if decoded else ""
    lines += [
        "",
        f"added TTFT p50: **{added * 1000:.2f} ms**; tok/s service/direct: {decode_note}"
        f"{ratio:.3f} all streams over the run's time",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--token-ms", default="20,0", help="comma-separated ms between two tokens, one profile each")
    parser.add_argument("--tokens", type=int, default=128, help="tokens per answer")
    parser.add_argument("--prefill-ms", type=float, default=0.0, help="ms before the fake's headers")
    parser.add_argument("--requests", type=int, default=0, help="streams per run (default: 10 or 200 per client)")
    parser.add_argument("-c", "--concurrency", type=int, default=1, help="streams at once")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="let the processes run on any CPU")
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args()
    logs = Path(args.out) / time.strftime("llm-service-%Y%m%d-%H%M%S")
    logs.mkdir(parents=True, exist_ok=True)
    cores = os.cpu_count() or 1
    pin(os.getpid(), set(range(1, cores)) if cores >= 2 and args.pin else set())
    procs: list[subprocess.Popen[bytes]] = []
    try:
        tables = [profile(args, float(ms), logs, procs) for ms in args.token_ms.split(",")]
    finally:
        stop(procs)
    print("\n\n".join(tables))
    print(f"\nlogs: {logs}")


if __name__ == "__main__":
    main()
