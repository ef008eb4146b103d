"""Texts per second through the embedding service, against the same model called in process.

    python benchmarks/embedding_service.py                          # c=1 and c=32, 3 rounds of 8 s each
    python benchmarks/embedding_service.py --concurrency 1 8 32 --seconds 10 --rounds 5
    python benchmarks/embedding_service.py --batch-sweep            # the model alone: cost per text by batch size

In process: the packaged MiniLM (`MiniLM.embed`) in a loop, on batches of min(c, max batch) texts,
what the service's batcher makes of c concurrent one-text requests (`--max-batch`, by default the
`local` backend's, is given to the service as `EMBEDDING_MAX_BATCH`). Through the service:
`python -m megaservice.components.embedding` (the `local` backend) in its own process, and c
clients here, each posting one text per request to `POST /v1/embeddings` over keep-alive
connections (megaservice's pooled client: httptools, little CPU). The two alternate, round after
round, so a change of the machine's load hits both; the medians are reported. Texts: 1024
sentences of 5-60 words from Python's own documentation, in mixed order. The target: the service
at 0.9x the in-process rate or better.
"""

import argparse
import asyncio
import http.client
import os
import re
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from megaservice.client import Timeout, UpstreamClient  # noqa: E402
from megaservice.components.embedding.local import MAX_BATCH  # noqa: E402
from megaservice.components.embedding.minilm import MiniLM  # noqa: E402


def sentences(n: int = 1024) -> list[str]:
    """n deterministic English sentences of 5-60 words from the stdlib's pydoc topics."""
    from pydoc_data.topics import topics

    pool = set()
    for key in sorted(topics):
        for sentence in re.split(r"(?<=[.!?])\s+(?=[A-Z])", " ".join(topics[key].split())):
            words = sentence.split()
            if 5 <= len(words) <= 60 and sum(w.isalpha() for w in words) >= 0.6 * len(words):
                pool.add(sentence)
    ordered = sorted(pool)
    step = max(1, len(ordered) // n)
    return ordered[::step][:n]


def in_process(model: MiniLM, texts: list[str], batch: int, seconds: float) -> tuple[float, float]:
    """(texts per second, CPU ms per text) of `model.embed` on batches of `batch` texts."""
    model.embed(texts[:batch])
    done = 0
    cpu = time.process_time()
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        start = done % (len(texts) - batch)
        model.embed(texts[start : start + batch])
        done += batch
    return done / (time.perf_counter() - started), (time.process_time() - cpu) * 1000 / done


async def through_service(url: str, texts: list[str], concurrency: int, seconds: float) -> tuple[float, float, int]:
    """(texts per second, median latency in ms, requests sent) of `concurrency` clients posting one text each."""
    client = UpstreamClient()
    timeout = Timeout(total=60)
    headers = {"content-type": "application/json"}
    latencies: list[float] = []
    done = 0
    sent_in_all = 0
    stop = 0.0

    async def worker(offset: int, record: bool) -> None:
        nonlocal done, sent_in_all
        i = offset
        while time.perf_counter() < stop:
            body = orjson.dumps({"input": texts[i % len(texts)]})
            sent = time.perf_counter()
            await client.post("embedding", url, body, headers=headers, timeout=timeout)
            sent_in_all += 1
            if record:
                latencies.append(time.perf_counter() - sent)
                done += 1
            i += concurrency

    try:
        stop = time.perf_counter() + 1.0  # warm-up: connections open, the batcher running
        await asyncio.gather(*(worker(k, False) for k in range(concurrency)))
        started = time.perf_counter()
        stop = started + seconds
        await asyncio.gather(*(worker(k, True) for k in range(concurrency)))
        elapsed = time.perf_counter() - started
    finally:
        await client.aclose()
    return done / elapsed, statistics.median(latencies) * 1000, sent_in_all


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def batch_sweep(rounds: int) -> None:
    """The model alone: texts/s and CPU ms per text by batch size, threads, and text length (medians of rounds)."""
    long_texts = sentences(256)
    kinds = {"short (8 words)": [" ".join(t.split()[:8]) for t in long_texts], "sentences (5-60 words)": long_texts}
    models = {threads: MiniLM(threads=threads) for threads in (1, 2)}
    for model in models.values():
        model.load()
    found: dict[tuple[str, int, int], list[tuple[float, float]]] = {}
    for _ in range(rounds):
        for kind, texts in kinds.items():
            for threads, model in models.items():
                for batch in (1, 2, 4, 8, 32):
                    batches = [texts[i : i + batch] for i in range(0, 128, batch)]
                    model.embed(batches[0])
                    cpu, started = time.process_time(), time.perf_counter()
                    for part in batches:
                        model.embed(part)
                    wall = time.perf_counter() - started
                    found.setdefault((kind, threads, batch), []).append(
                        (128 / wall, (time.process_time() - cpu) * 1000 / 128)
                    )
    print("| texts | threads | batch | texts/s | CPU ms/text |")
    print("|---|---|---|---|---|")
    for (kind, threads, batch), values in found.items():
        rate = statistics.median(v[0] for v in values)
        cpu_ms = statistics.median(v[1] for v in values)
        print(f"| {kind} | {threads} | {batch} | {rate:.0f} | {cpu_ms:.1f} |")
    print(f"\nload average (1, 5, 15 min) at the end: {os.getloadavg()}; {rounds} rounds of 128 texts each")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(port: int, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"the service exited with {process.returncode}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            connection.request("GET", "/v1/ready")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    sys.exit("the service did not get ready")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-batch", type=int, default=MAX_BATCH, help="the service's EMBEDDING_MAX_BATCH")
    parser.add_argument("--threads", type=int, default=2, help="the model's threads (EMBEDDING_THREADS)")
    parser.add_argument("--batch-sweep", action="store_true", help="measure the model alone by batch size, and stop")
    args = parser.parse_args()
    if args.batch_sweep:
        batch_sweep(args.rounds)
        return

    texts = sentences()
    port = free_port()
    environ = {**os.environ, "EMBEDDING_HOST": "127.0.0.1", "EMBEDDING_PORT": str(port), "HF_HUB_OFFLINE": "1"}
    environ["EMBEDDING_MAX_BATCH"] = str(args.max_batch)
    environ["EMBEDDING_THREADS"] = str(args.threads)
    command = [sys.executable, "-m", "megaservice.components.embedding"]
    service = subprocess.Popen(command, cwd=ROOT, env=environ, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    load_before = os.getloadavg()
    try:
        wait_ready(port, service)
        model = MiniLM(threads=args.threads)
        model.load()
        url = f"http://127.0.0.1:{port}/v1/embeddings"
        results: dict[int, dict[str, list[float]]] = {
            c: {"inproc": [], "service": [], "p50": [], "inproc_cpu": [], "service_cpu": []} for c in args.concurrency
        }
        for round_ in range(args.rounds):
            for c in args.concurrency:
                rate, inproc_cpu = in_process(model, texts, min(c, args.max_batch), args.seconds)
                cpu = cpu_seconds(service.pid)
                served, p50, requests = asyncio.run(through_service(url, texts, c, args.seconds))
                results[c]["service_cpu"].append((cpu_seconds(service.pid) - cpu) * 1000 / requests)
                results[c]["inproc_cpu"].append(inproc_cpu)
                results[c]["inproc"].append(rate)
                results[c]["service"].append(served)
                results[c]["p50"].append(p50)
                print(f"round {round_ + 1} c={c}: in process {rate:.0f}/s, service {served:.0f}/s, p50 {p50:.1f} ms")
    finally:
        service.terminate()
        service.wait(10)
    load_after = os.getloadavg()
    print()
    print(
        "| concurrency | in process: batch | texts/s | CPU ms/text | service: texts/s | CPU ms/text | p50 ms "
        "| service / in process: texts/s | CPU per text |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for c, measured in results.items():
        m = {key: statistics.median(values) for key, values in measured.items()}
        print(
            f"| {c} | {min(c, args.max_batch)} | {m['inproc']:.0f} | {m['inproc_cpu']:.1f} | {m['service']:.0f} "
            f"| {m['service_cpu']:.1f} | {m['p50']:.1f} | {m['service'] / m['inproc']:.2f} "
            f"| {m['service_cpu'] / m['inproc_cpu']:.2f} |"
        )
    print(f"\nload average (1, 5, 15 min) before: {load_before}, after: {load_after}; {os.cpu_count()} CPUs")
    print(f"{args.rounds} rounds of {args.seconds:g} s per measure; {len(texts)} texts")


if __name__ == "__main__":
    main()
