"""Soak: the ChatQnA megaservice under steady load for minutes; print errors and its memory over time.

Starts the five fake backends and `pipeline.py --package megaservice` (the same processes as
`bench.py`), then runs `--clients` concurrent clients for `--minutes`, half streaming and half
not, each sending its next request as soon as the last one finished. Every `--every` seconds it
prints the requests and errors of the interval and the megaservice's RSS. At the end it prints the
RSS growth from the end of minute 1 to the end (the target: under 10 %) and the error count (the
target: 0).

    python benchmarks/soak.py --minutes 10 --clients 256
"""

import argparse
import asyncio
import collections
import os
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import orjson
from backends import PATHS
from bench import ROLES, free_port, stop, wait_port

HERE = Path(__file__).resolve().parent


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def soak(url: str, pid: int, clients: int, minutes: float, every: float) -> int:
    bodies = [
        orjson.dumps({"messages": [{"role": "user", "content": f"What is a reranker? ({i})"}], "stream": i % 2 == 0})
        for i in range(clients)
    ]
    done = 0
    errors: collections.Counter[str] = collections.Counter()
    start = time.monotonic()
    end = start + minutes * 60
    samples: list[tuple[float, float]] = []
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:

        async def client(body: bytes) -> None:
            nonlocal done
            while time.monotonic() < end:
                try:
                    async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
                        data = await r.read()
                        if r.status != 200:
                            errors[f"HTTP {r.status}"] += 1
                        elif b"event: error" in data:
                            errors["error event"] += 1
                        else:
                            done += 1
                except (aiohttp.ClientError, TimeoutError) as exc:
                    errors[type(exc).__name__] += 1

        async def report() -> None:
            last_done, last_errors = 0, 0
            while time.monotonic() < end:
                await asyncio.sleep(every)
                elapsed = time.monotonic() - start
                rss = rss_mib(pid)
                samples.append((elapsed, rss))
                failed = sum(errors.values())
                print(
                    f"{elapsed:7.0f} s  {(done - last_done) / every:7.1f} req/s  "
                    f"errors {failed - last_errors:4d}  rss {rss:6.1f} MiB",
                    flush=True,
                )
                last_done, last_errors = done, failed

        await asyncio.gather(report(), *(client(body) for body in bodies))
    after_minute_1 = [rss for elapsed, rss in samples if elapsed >= 60] or [rss for _, rss in samples]
    base, final = after_minute_1[0], samples[-1][1]
    print(f"\nrequests: {done}  errors: {sum(errors.values())} {dict(errors) or ''}")
    print(
        f"rss: {base:.1f} MiB at the end of minute 1, {final:.1f} MiB at the end, "
        f"peak {max(r for _, r in samples):.1f} MiB; growth {100 * (final - base) / base:+.1f} %"
    )
    return sum(errors.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=256)
    parser.add_argument("--every", type=float, default=15.0, help="seconds between two reports")
    parser.add_argument("--tokens", type=int, default=32, help="tokens the fake LLM answers")
    args = parser.parse_args()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        urls = {}
        for role in ROLES:
            port = free_port()
            cmd = [sys.executable, "backends.py", "--role", role, "--port", str(port)]
            if role == "llm":
                cmd += ["--tokens", str(args.tokens)]
            procs.append(subprocess.Popen(cmd, cwd=HERE, stdout=subprocess.DEVNULL))
            wait_port(port, procs[-1])
            urls[role] = f"http://127.0.0.1:{port}{PATHS[role]}"
        port = free_port()
        spec = ",".join(f"{role}={url}" for role, url in urls.items())
        cmd = [sys.executable, "pipeline.py", "--package", "megaservice", "--port", str(port), "--backends", spec]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        target = subprocess.Popen(cmd, cwd=HERE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        procs.append(target)
        wait_port(port, target)
        print(f"soak: {args.clients} clients for {args.minutes} min against the megaservice (pid {target.pid})")
        failed = asyncio.run(
            soak(f"http://127.0.0.1:{port}/v1/chatqna", target.pid, args.clients, args.minutes, args.every)
        )
    finally:
        stop(procs)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
