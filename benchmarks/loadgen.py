"""Closed-loop load generator: `concurrency` clients, each sending its next request when the last one ended.

Prints one JSON line: requests completed inside the measuring window (after the warm-up), req/s,
latency percentiles, and for streams the time to the first token and the tokens received.

    python benchmarks/loadgen.py --url http://127.0.0.1:8900/v1/chatqna -c 32 --duration 10 --stream
"""

import argparse
import asyncio
import json
import time

import aiohttp
import orjson


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(url: str, concurrency: int, duration: float, warmup: float, stream: bool) -> dict[str, object]:
    body = orjson.dumps(
        {
            "model": "chatqna",
            "messages": [{"role": "user", "content": "What is a reranker?"}],
            "stream": stream,
            "max_tokens": 128,
        }
    )
    latencies: list[float] = []
    ttfts: list[float] = []
    tokens = 0
    errors: list[str] = []
    total = 0
    start = time.perf_counter()
    window_start = start + warmup
    window_end = window_start + duration
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=120)

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def client() -> None:
            nonlocal tokens, total
            while time.perf_counter() < window_end:
                sent = time.perf_counter()
                first = None
                count = 0
                try:
                    async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
                        if r.status != 200:
                            errors.append(f"HTTP {r.status}: {(await r.read())[:200]!r}")
                            continue
                        if stream:
                            async for line in r.content:
                                if line.startswith(b"data: ") and not line.startswith(b"data: [DONE]"):
                                    count += 1
                                    if first is None:
                                        first = time.perf_counter()
                        else:
                            answer = orjson.loads(await r.read())
                            if not answer["choices"][0]["message"]["content"]:
                                errors.append("empty answer")
                                continue
                except (aiohttp.ClientError, TimeoutError) as exc:
                    errors.append(repr(exc))
                    continue
                done = time.perf_counter()
                total += 1
                if stream and count == 0:
                    errors.append("stream without tokens")
                    continue
                if window_start <= sent and done <= window_end:
                    latencies.append(done - sent)
                    tokens += count
                    if first is not None:
                        ttfts.append(first - sent)

        await asyncio.gather(*(client() for _ in range(concurrency)))

    def ms(value: float | None) -> float | None:
        return None if value is None else round(value * 1000, 2)

    return {
        "completed": len(latencies),
        "completed_total": total,
        "rps": round(len(latencies) / duration, 1),
        "p50_ms": ms(percentile(latencies, 0.5)),
        "p90_ms": ms(percentile(latencies, 0.9)),
        "p99_ms": ms(percentile(latencies, 0.99)),
        "ttft_p50_ms": ms(percentile(ttfts, 0.5)),
        "ttft_p99_ms": ms(percentile(ttfts, 0.99)),
        "tokens_per_s": round(tokens / duration, 1),
        "errors": len(errors),
        "error_samples": errors[:3],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("-c", "--concurrency", type=int, default=1)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--stream", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(run(args.url, args.concurrency, args.duration, args.warmup, args.stream))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
