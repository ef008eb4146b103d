"""Checks per second of each guardrails check, one at a time and under concurrency (in process, CPU only).

    python benchmarks/guardrails.py                      # every check, 1 and 64 concurrent callers
    python benchmarks/guardrails.py --checks pii,bias --concurrency 1,16,64 --seconds 5

Texts are the 315 sentences of the bias test set (1-53 words), cycled. Each check is called
through the guardrails backend (`Guardrails.check(text, only=[name])`), so batching across
concurrent callers is included. `llm-judge` asks the fake judge of `megaservice.testing` on a
loopback socket: its number is our overhead per judged text, not a model's speed. `http` is the
whole service with its default checks (banned, pii, toxicity), over a real socket with the pooled
client. It runs on uvloop, as the services do: on asyncio's default loop, a call from this process
to an app served in it with `megaservice.testing.serve` waits ~45 ms. Say what the machine's load
was (`uptime`) next to the numbers.
"""

import argparse
import asyncio
import json
import os
import statistics
import time
from collections.abc import Awaitable, Callable

from megaservice.client import Timeout, UpstreamClient, dumps
from megaservice.components.bias.head import HEAD_FILE
from megaservice.components.guardrails import GuardrailsSettings, create_service, load_backend
from megaservice.testing import FakeJudge, serve

CHECKS = ("banned", "pii", "toxicity", "bias", "llm-judge", "http")


def texts() -> list[str]:
    lines = (HEAD_FILE.parent / "data" / "test.jsonl").read_text().splitlines()
    return [json.loads(line)["text"] for line in lines if line.strip()]


async def drive(
    call: Callable[[str], Awaitable[None]], corpus: list[str], concurrency: int, seconds: float
) -> tuple[float, float]:
    """(calls per second, median latency in ms) of `concurrency` callers looping for `seconds`."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    counter = iter(range(10**9))

    async def caller() -> None:
        while time.perf_counter() < deadline:
            text = corpus[next(counter) % len(corpus)]
            started = time.perf_counter()
            await call(text)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return len(latencies) / elapsed, statistics.median(latencies) * 1000


async def bench_check(
    name: str, corpus: list[str], levels: list[int], seconds: float
) -> list[tuple[str, int, float, float]]:
    async with serve(FakeJudge(flagged=("lazy",), record=False)) as judge_url:
        settings = GuardrailsSettings.from_env(
            {
                "GUARDRAILS_CHECKS": "banned,pii,toxicity" if name == "http" else name,
                "GUARDRAILS_BANNED_SUBSTRINGS": "backdoor,malware,virus,password,exploit",
                "GUARDRAILS_BANNED_REGEXES": '["\\\\bsk-[A-Za-z0-9]{20,}", "(?i)ignore (all )?previous instructions"]',
                "SAFETY_GUARD_ENDPOINT": judge_url,
            }
        )
        backend = load_backend(settings)
        await backend.load()
        if name == "http":
            async with serve(create_service(settings, backend).app) as url:
                client = UpstreamClient()
                timeout = Timeout(connect=5, read=60, total=60)
                headers = {"content-type": "application/json"}

                async def call(text: str) -> None:
                    await client.post(
                        "guardrails", url + "/v1/guardrails", dumps({"text": text}), headers=headers, timeout=timeout
                    )

                await drive(call, corpus, 4, 1.0)  # warm up
                rows = [(name, level, *await drive(call, corpus, level, seconds)) for level in levels]
                await client.aclose()
        else:

            async def call(text: str) -> None:
                await backend.check(text, only=(name,))

            await drive(call, corpus, 4, 1.0)  # warm up
            rows = [(name, level, *await drive(call, corpus, level, seconds)) for level in levels]
        await backend.aclose()
        return rows


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checks", default=",".join(CHECKS), help="comma list of " + ", ".join(CHECKS))
    parser.add_argument("--concurrency", default="1,64", help="comma list of concurrent callers")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per measurement")
    args = parser.parse_args()
    corpus = texts()
    levels = [int(x) for x in args.concurrency.split(",")]
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} cores)")
    print("| check | concurrent callers | checks/s | median latency (ms) |\n|---|---:|---:|---:|")
    for name in args.checks.split(","):
        for check, level, rate, p50 in await bench_check(name, corpus, levels, args.seconds):
            print(f"| `{check}` | {level} | {rate:,.0f} | {p50:.2f} |", flush=True)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    import uvloop  # what the services run on (uvicorn[standard]); the default loop adds ~45 ms per in-process call

    uvloop.run(main())
