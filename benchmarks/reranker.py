"""What the reranker's default is worth: ranking quality on a labelled set, and pairs/s through the service.

    python benchmarks/reranker.py                       # quality, then speed (c=1 and c=8, 3 rounds of 6 s)
    python benchmarks/reranker.py --quality-only
    python benchmarks/reranker.py --cross-encoder /models/bge-reranker-base     # also score a real cross-encoder
    python benchmarks/reranker.py --tei http://localhost:8808                   # also score any TEI /rerank

Quality. benchmarks/data/rerank_relevance.jsonl holds 30 questions, each with 5 passages of its own
topic: 2 that answer it (grade 2) and 3 on the same topic that do not (grade 1, the hard negatives
a retriever returns); 3 passages of other questions are added to each (grade 0, seeded). Each
question's 8 candidates are ordered by:

    random        the mean over 200 seeded shuffles (no reranking at all)
    bm25          BM25 (k1 1.2, b 0.75; statistics over every passage of the file): a lexical retriever
    hybrid        bm25 and the embedding order fused by reciprocal rank (k 60), as a hybrid retriever does
    embedding     the reranker's default: the cosine of the packaged MiniLM's vectors (also the order of a
                  dense retriever that searched with the same model: reranking it changes nothing)

and, when given, a cross-encoder or a TEI server. Reported: MRR and precision@1 (an answering
passage first), recall@2 (share of the answering passages among the first two: what top_n=2 puts
in the prompt), nDCG@3 and nDCG@5 (gains 2^grade - 1). The service's answers on `/rerank` are
checked to give the same order as the in-process scores.

Speed. `python -m megaservice.components.reranker` (the `embedding` backend) in its own process;
c clients each post one question with its 8 candidates to `POST /rerank`, over keep-alive
connections. In process: the same backend object (`EmbeddingReranker` over the batched MiniLM),
c tasks calling `score()`. The two alternate, round after round; medians are reported, in
query/text pairs scored per second.
"""

import argparse
import asyncio
import http.client
import itertools
import json
import math
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from megaservice.client import Timeout, UpstreamClient  # noqa: E402
from megaservice.components.embedding.minilm import MiniLM  # noqa: E402
from megaservice.components.reranker import RerankerSettings, load_backend  # noqa: E402
from megaservice.components.reranker.embedding import LOCAL_MAX_BATCH  # noqa: E402

DATA = ROOT / "benchmarks" / "data" / "rerank_relevance.jsonl"
DISTRACTORS = 3
_WORD = re.compile(r"\w+")


class Question:
    """One question and its candidates: texts with grades (2 answers, 1 on topic, 0 off topic)."""

    def __init__(self, qid: str, query: str, texts: list[str], grades: list[int]) -> None:
        self.qid, self.query, self.texts, self.grades = qid, query, texts, grades


def load(path: Path = DATA, distractors: int = DISTRACTORS, seed: int = 0) -> list[Question]:
    """The questions of `path`, each with `distractors` passages of other questions added as grade 0."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rng = random.Random(seed)
    questions = []
    for row in rows:
        texts = [p["text"] for p in row["passages"]]
        grades = [int(p["grade"]) for p in row["passages"]]
        others = [p["text"] for other in rows if other is not row for p in other["passages"]]
        texts += rng.sample(others, distractors)
        grades += [0] * distractors
        questions.append(Question(row["id"], row["query"], texts, grades))
    return questions


# -- metrics -------------------------------------------------------------------------------------


def _dcg(grades: Sequence[int], k: int) -> float:
    gain: float = sum((2**g - 1) / math.log2(i + 2) for i, g in enumerate(grades[:k]))
    return gain


def metrics(order: Sequence[int], grades: Sequence[int]) -> dict[str, float]:
    """MRR, P@1, R@2, nDCG@3 and nDCG@5 of `order` (candidate positions, best first)."""
    ranked = [grades[i] for i in order]
    first = next((r for r, g in enumerate(ranked) if g == 2), None)
    answering = sum(g == 2 for g in grades)
    ideal = sorted(grades, reverse=True)
    return {
        "MRR": 0.0 if first is None else 1.0 / (first + 1),
        "P@1": float(ranked[0] == 2),
        "R@2": sum(g == 2 for g in ranked[:2]) / answering,
        "nDCG@3": _dcg(ranked, 3) / _dcg(ideal, 3),
        "nDCG@5": _dcg(ranked, 5) / _dcg(ideal, 5),
    }


def mean_metrics(rows: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.fmean(row[key] for row in rows) for key in rows[0]}


def by_score(scores: Sequence[float]) -> list[int]:
    return sorted(range(len(scores)), key=lambda i: -scores[i])


# -- orders --------------------------------------------------------------------------------------


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


class BM25:
    """Okapi BM25 with document statistics over every passage of the set."""

    def __init__(self, corpus: list[str], k1: float = 1.2, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        docs = [_words(t) for t in corpus]
        self.average = statistics.fmean(len(d) for d in docs)
        frequency = Counter(w for d in docs for w in set(d))
        n = len(docs)
        self.idf = {w: math.log(1 + (n - f + 0.5) / (f + 0.5)) for w, f in frequency.items()}

    def scores(self, query: str, texts: list[str]) -> list[float]:
        asked = _words(query)
        found = []
        for text in texts:
            words = _words(text)
            counts = Counter(words)
            norm = self.k1 * (1 - self.b + self.b * len(words) / self.average)
            found.append(
                sum(self.idf.get(w, 0.0) * counts[w] * (self.k1 + 1) / (counts[w] + norm) for w in asked if counts[w])
            )
        return found


def fused(*orders: list[int], k: int = 60) -> list[int]:
    """Reciprocal rank fusion of several orders of the same candidates."""
    score: dict[int, float] = {}
    for order in orders:
        for rank, i in enumerate(order):
            score[i] = score.get(i, 0.0) + 1.0 / (k + rank + 1)
    return sorted(score, key=lambda i: -score[i])


def random_baseline(questions: list[Question], shuffles: int = 200) -> dict[str, float]:
    rng = random.Random(1)
    rows = []
    for q in questions:
        for _ in range(shuffles):
            order = list(range(len(q.texts)))
            rng.shuffle(order)
            rows.append(metrics(order, q.grades))
    return mean_metrics(rows)


def quality(args: argparse.Namespace, questions: list[Question]) -> dict[str, list[list[float]]]:
    """Print the quality table; return the embedding scores of each question (to check the service)."""
    model = MiniLM(threads=args.threads)
    model.load()
    bm25 = BM25([t for q in questions for t in q.texts[: len(q.texts) - DISTRACTORS]])
    embedding_scores = []
    table: dict[str, list[dict[str, float]]] = {"bm25": [], "hybrid": [], "embedding": []}
    for q in questions:
        vectors = model.embed([q.query, *q.texts])
        cosines = [float(x) for x in vectors[1:] @ vectors[0]]
        embedding_scores.append(cosines)
        lexical = by_score(bm25.scores(q.query, q.texts))
        dense = by_score(cosines)
        table["bm25"].append(metrics(lexical, q.grades))
        table["hybrid"].append(metrics(fused(lexical, dense), q.grades))
        table["embedding"].append(metrics(dense, q.grades))
    extra: dict[str, Callable[[str, list[str]], list[float]]] = {}
    if args.cross_encoder:
        extra["cross-encoder"] = cross_encoder_scorer(args.cross_encoder)
    if args.tei:
        extra["tei"] = tei_scorer(args.tei)
    for name, scorer in extra.items():
        table[name] = [metrics(by_score(scorer(q.query, q.texts)), q.grades) for q in questions]
    results = {"random (no rerank)": random_baseline(questions)} | {k: mean_metrics(v) for k, v in table.items()}
    keys = list(next(iter(results.values())))
    print(
        f"{len(questions)} questions, {len(questions[0].texts)} candidates each (2 answer, 3 on topic, 3 off topic)\n"
    )
    print("| order | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for name, values in results.items():
        print(f"| {name} | " + " | ".join(f"{values[k]:.3f}" for k in keys) + " |")
    wins = sum(e["P@1"] > b["P@1"] for e, b in zip(table["embedding"], table["bm25"], strict=True))
    losses = sum(e["P@1"] < b["P@1"] for e, b in zip(table["embedding"], table["bm25"], strict=True))
    print(
        f"\nP@1, embedding vs bm25, per question: {wins} better, {losses} worse, {len(questions) - wins - losses} equal"
    )
    return {"embedding": embedding_scores}


def cross_encoder_scorer(path: str) -> Callable[[str, list[str]], list[float]]:
    from megaservice.components.reranker.cross_encoder import CrossEncoderModel

    model = CrossEncoderModel(path)
    model.load()
    return lambda query, texts: model.logits([(query, t) for t in texts])


def tei_scorer(url: str) -> Callable[[str, list[str]], list[float]]:
    def score(query: str, texts: list[str]) -> list[float]:
        host, _, port = url.removeprefix("http://").rstrip("/").partition(":")
        connection = http.client.HTTPConnection(host, int(port or 80), timeout=60)
        connection.request(
            "POST", "/rerank", orjson.dumps({"query": query, "texts": texts}), {"content-type": "application/json"}
        )
        ranks = orjson.loads(connection.getresponse().read())
        scores = [0.0] * len(texts)
        for rank in ranks:
            scores[rank["index"]] = rank["score"]
        return scores

    return score


# -- speed ---------------------------------------------------------------------------------------


async def through_service(
    url: str, questions: list[Question], concurrency: int, seconds: float, pid: int
) -> tuple[float, float, float, list[Any]]:
    """(pairs per second, median latency in ms, service CPU ms per pair, the answers of one pass), c clients."""
    client = UpstreamClient()
    timeout = Timeout(total=60)
    headers = {"content-type": "application/json"}
    latencies: list[float] = []
    pairs = 0
    stop = 0.0
    bodies = [orjson.dumps({"query": q.query, "texts": q.texts}) for q in questions]
    first_pass = [await client.post("reranker", url, b, headers=headers, timeout=timeout) for b in bodies]

    async def worker(offset: int, record: bool) -> None:
        nonlocal pairs
        i = offset
        while time.perf_counter() < stop:
            sent = time.perf_counter()
            await client.post("reranker", url, bodies[i % len(bodies)], headers=headers, timeout=timeout)
            if record:
                latencies.append(time.perf_counter() - sent)
                pairs += len(questions[i % len(questions)].texts)
            i += concurrency

    try:
        stop = time.perf_counter() + 1.0  # warm-up
        await asyncio.gather(*(worker(k, False) for k in range(concurrency)))
        cpu = cpu_seconds(pid)
        started = time.perf_counter()
        stop = started + seconds
        await asyncio.gather(*(worker(k, True) for k in range(concurrency)))
        elapsed = time.perf_counter() - started
        cpu = cpu_seconds(pid) - cpu
    finally:
        await client.aclose()
    answers = [orjson.loads(body) for _, body in first_pass]
    return pairs / elapsed, statistics.median(latencies) * 1000, cpu * 1000 / pairs, answers


async def in_process(backend: Any, questions: list[Question], concurrency: int, seconds: float) -> tuple[float, float]:
    """(pairs per second, CPU ms per pair) of `concurrency` tasks calling the backend's `score()`."""
    pairs = 0
    stop = 0.0

    async def worker(offset: int, record: bool) -> None:
        nonlocal pairs
        i = offset
        while time.perf_counter() < stop:
            q = questions[i % len(questions)]
            await backend.score(q.query, q.texts)
            if record:
                pairs += len(q.texts)
            i += concurrency

    stop = time.perf_counter() + 1.0
    await asyncio.gather(*(worker(k, False) for k in range(concurrency)))
    cpu = time.process_time()
    started = time.perf_counter()
    stop = started + seconds
    await asyncio.gather(*(worker(k, True) for k in range(concurrency)))
    return pairs / (time.perf_counter() - started), (time.process_time() - cpu) * 1000 / pairs


async def run_in_process(
    threads: int, max_batch: int, cache_texts: int, questions: list[Question], concurrency: int, seconds: float
) -> tuple[float, float]:
    settings = RerankerSettings.from_env(
        {"RERANK_THREADS": str(threads), "RERANK_MAX_BATCH": str(max_batch), "RERANK_CACHE_TEXTS": str(cache_texts)}
    )
    backend = load_backend(settings)
    await backend.start()
    try:
        return await in_process(backend, questions, concurrency, seconds)
    finally:
        await backend.aclose()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(port: int, process: "subprocess.Popen[bytes]", timeout: float = 60.0) -> None:
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


def agrees(answer: list[dict[str, Any]], scores: list[float], tolerance: float = 2e-3) -> bool:
    """Whether the service's ranks follow the in-process scores (a swap within `tolerance` allowed: the int8
    model quantises each batch's activations as a whole, so batch makeup moves a cosine by ~1e-4)."""
    order = [r["index"] for r in answer]
    return sorted(order) == list(range(len(scores))) and all(
        scores[a] >= scores[b] - tolerance for a, b in itertools.pairwise(order)
    )


def speed(args: argparse.Namespace, questions: list[Question], expected: list[list[float]]) -> None:
    port = free_port()
    environ = {**os.environ, "RERANK_HOST": "127.0.0.1", "RERANK_PORT": str(port), "HF_HUB_OFFLINE": "1"}
    environ["RERANK_THREADS"] = str(args.threads)
    environ["RERANK_MAX_BATCH"] = str(args.max_batch)
    environ["RERANK_CACHE_TEXTS"] = str(args.cache_texts)
    command = [sys.executable, "-m", "megaservice.components.reranker"]
    service = subprocess.Popen(command, cwd=ROOT, env=environ, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    load_before = os.getloadavg()
    results: dict[int, dict[str, list[float]]] = {
        c: {"inproc": [], "service": [], "p50": [], "inproc_cpu": [], "service_cpu": []} for c in args.concurrency
    }
    try:
        wait_ready(port, service)
        url = f"http://127.0.0.1:{port}/rerank"
        for round_ in range(args.rounds):
            for c in args.concurrency:
                rate, inproc_cpu = asyncio.run(
                    run_in_process(args.threads, args.max_batch, args.cache_texts, questions, c, args.seconds)
                )
                served, p50, service_cpu, answers = asyncio.run(
                    through_service(url, questions, c, args.seconds, service.pid)
                )
                results[c]["service_cpu"].append(service_cpu)
                results[c]["inproc_cpu"].append(inproc_cpu)
                if not all(agrees(answer, scores) for answer, scores in zip(answers, expected, strict=True)):
                    sys.exit("the service's order differs from the in-process scores")
                results[c]["inproc"].append(rate)
                results[c]["service"].append(served)
                results[c]["p50"].append(p50)
                print(
                    f"round {round_ + 1} c={c}: in process {rate:.0f} pairs/s, service {served:.0f} pairs/s,", end=" "
                )
                print(f"p50 {p50:.1f} ms")
    finally:
        service.terminate()
        service.wait(10)
    print()
    print(
        "| concurrency | in process: pairs/s | CPU ms/pair | service: pairs/s | CPU ms/pair | p50 ms (8 pairs) "
        "| service / in process: pairs/s | CPU per pair |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for c, measured in results.items():
        m = {key: statistics.median(values) for key, values in measured.items()}
        print(
            f"| {c} | {m['inproc']:.0f} | {m['inproc_cpu']:.1f} | {m['service']:.0f} | {m['service_cpu']:.1f} "
            f"| {m['p50']:.1f} | {m['service'] / m['inproc']:.2f} | {m['service_cpu'] / m['inproc_cpu']:.2f} |"
        )
    print(f"\nload average (1, 5, 15 min) before: {load_before}, after: {os.getloadavg()}; {os.cpu_count()} CPUs")
    print(f"{args.rounds} rounds of {args.seconds:g} s per measure; the service's ranks follow the in-process scores")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quality-only", action="store_true")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--seconds", type=float, default=6.0, help="measured seconds per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="the model's threads (RERANK_THREADS)")
    parser.add_argument(
        "--max-batch", type=int, default=LOCAL_MAX_BATCH, help="texts per model call (RERANK_MAX_BATCH)"
    )
    parser.add_argument(
        "--cache-texts",
        type=int,
        default=0,
        help="RERANK_CACHE_TEXTS for both sides; 0 (here) embeds every candidate every time, which is what this "
        "measures (the service's default keeps 8192 texts' vectors, and this set's 240 candidates would all hit)",
    )
    parser.add_argument("--cross-encoder", help="also score this cross-encoder (a folder or a cached model name)")
    parser.add_argument("--tei", help="also score the /rerank of this TEI server (http://host:port)")
    args = parser.parse_args()
    questions = load()
    scores = quality(args, questions)
    if not args.quality_only:
        print()
        speed(args, questions, scores["embedding"])


if __name__ == "__main__":
    main()
