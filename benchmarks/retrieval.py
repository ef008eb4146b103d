"""Retrieval latency through the retriever service against the raw SQL over the same pool, and HNSW recall@10.

    # the corpus and its MiniLM vectors, made by pgvector_recall.py (corpus, then embed)
    python benchmarks/retrieval.py --corpus /work/scratch/embed/corpus.jsonl --vectors /work/scratch/embed \\
        --sizes 10000 100000

Per size: an embedded PostgreSQL 18 + pgvector 0.8 (megaservice.testing.postgres, Unix socket) gets
a collection of that many chunks, stored through `Store.replace_file` (files of 1000 chunks, into
the HNSW index as dataprep stores them). Then, for 200 held-out queries (first sentences of chunks
never stored), in `--rounds` passes, each query sent five ways back to back, in every order in
turn (the same query twice in a row finds its index pages in cache: each way goes before each
other one for half of the queries):

* service: `POST /v1/retrieval` with an EmbedDoc (`k`=4, similarity) to the retriever served on a
  loopback socket by uvicorn in this process (on uvloop, TCP_NODELAY, as `megaservice serve` runs it), through
  megaservice's pooled HTTP client; the
  retriever's store is the one the raw queries use, so both share one connection pool;
* raw SQL: the statement the store runs (`ORDER BY embedding <=> $1 LIMIT 4`, same columns),
  on a connection of that pool, rows fetched;
* HTTP floor: the same POST, same client, to a `MicroService` served the same way whose route
  reads the body and answers a stored retriever answer at once (no parsing, no database): what
  any HTTP service costs here, the part of the retriever's extra time no retriever code can cut;
* two lower bounds for any retriever over HTTP, the same POST to the least a retriever can do (parse
  the body, the vector as float32, the raw statement on the same pool, the 4 texts back as JSON):
  "least, MicroService" is that handler as a `MicroService` route, "least, bare ASGI" the same
  handler as a bare ASGI callable under the same uvicorn (no framework at all).

It prints p50/p99 of each and its ratio to raw (target: service ≤ 1.2x raw), and recall@10 of the
store's search against exact top-10 (numpy over the same vectors) for several `hnsw.ef_search`
(target ≥ 0.95), with their p50. Everything runs at c=1 on this machine's two cores, shared with
whatever else runs: the load average is printed with each table.
"""

import argparse
import asyncio
import atexit
import contextlib
import dataclasses
import itertools
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import uvicorn
from psycopg import sql
from starlette.requests import Request
from starlette.responses import Response

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from pgvector_recall import N_QUERIES, exact_topk, pct, read_corpus, recall, split_corpus  # noqa: E402

from megaservice.client import Timeout, UpstreamClient  # noqa: E402
from megaservice.components._store import Chunk, Store, StoreSettings  # noqa: E402
from megaservice.components._store.queries import nearest  # noqa: E402
from megaservice.components.embedding.minilm import DIMENSION, MODEL_ID  # noqa: E402
from megaservice.components.retriever import RetrieverSettings, create_service  # noqa: E402
from megaservice.components.retriever.pgvector import PgvectorBackend  # noqa: E402
from megaservice.microservice import MicroService  # noqa: E402
from megaservice.testing.postgres import EmbeddedPostgres  # noqa: E402

FILE_CHUNKS = 1000
K = 4


@contextlib.asynccontextmanager
async def serve_tcp(app: Any) -> AsyncIterator[str]:
    """Serve `app` with uvicorn in this loop on a loopback port; yield its URL.

    The socket is made with `IPPROTO_TCP`: asyncio sets TCP_NODELAY only on such sockets, and without
    it a response written in two parts waits for the client's delayed ACK (40 ms). `megaservice serve`
    runs on uvloop, which sets it anyway.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
    server.config.setup_event_loop = lambda: None  # type: ignore[method-assign]
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()


def vectors(folder: Path, size: int, noise: float) -> np.ndarray:
    """`size` chunk vectors: the embedded ones, and beyond them (with `--noise`) perturbed copies of them.

    A copy is an embedded vector plus Gaussian noise of `noise` per component, normalised again (0.06
    gives a cosine of about 0.7 to its original): as many points as asked, spread around the real
    ones, for latency at sizes the machine had no time to embed. Recall is reported on both kinds.
    """
    found = sorted(folder.glob("chunks-*.npy"), key=lambda p: int(p.stem.split("-")[1]))
    path = next((p for p in found if int(p.stem.split("-")[1]) >= size), found[-1] if found else folder / "chunks.npy")
    real: np.ndarray = np.load(path)
    if len(real) >= size:
        return real[:size]
    if noise <= 0:
        sys.exit(f"only {len(real)} vectors in {folder} (give --noise to extend them)")
    rng = np.random.default_rng(1)
    extra = real[rng.integers(0, len(real), size - len(real))]
    extra = extra + rng.normal(0, noise, extra.shape).astype(np.float32)
    extra /= np.linalg.norm(extra, axis=1, keepdims=True)
    print(f"{len(real)} embedded vectors, {size - len(real)} perturbed copies (noise {noise})")
    return np.concatenate([real, extra]).astype(np.float32)


def loop_factory(name: str) -> Any:
    """The event loop the benchmark runs on: uvloop, as `megaservice serve` runs services, or asyncio's."""
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop


def load_average() -> str:
    return f"{os.getloadavg()[0]:.1f}"


async def fill(store: Store, docs: list[dict[str, Any]], vecs: np.ndarray) -> float:
    """Store the chunks as files of FILE_CHUNKS; seconds taken."""
    started = time.perf_counter()
    for start in range(0, len(docs), FILE_CHUNKS):
        part = docs[start : start + FILE_CHUNKS]
        chunks = [
            Chunk(d["text"], i, {"kind": d["source"], "corpus_id": d["id"], "bucket": d["id"] % 100})
            for i, d in enumerate(part)
        ]
        await store.replace_file(f"file-{start // FILE_CHUNKS:04d}", chunks, vecs[start : start + FILE_CHUNKS])
    return time.perf_counter() - started


async def hnsw_index(store: Store, *, drop: bool) -> float:
    """Drop the collection's HNSW index, or build it again as the store makes it; seconds taken."""
    assert store.collection is not None
    table = store.collection.chunks_table
    started = time.perf_counter()
    async with store.pool.connection() as conn:
        if drop:
            await conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(f"{table}_hnsw")))
        else:
            await conn.execute("SET maintenance_work_mem = '1GB'")
            await conn.execute("SET statement_timeout = 0")
            await conn.execute(
                sql.SQL(
                    "CREATE INDEX {} ON {} USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)"
                ).format(sql.Identifier(f"{table}_hnsw"), sql.Identifier(table))
            )
            await conn.execute("RESET maintenance_work_mem")
            await conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(table)))
    return time.perf_counter() - started


def floor_service(answer: bytes) -> Any:
    """A `MicroService` whose `POST /v1/retrieval` reads the body and answers `answer` (the HTTP floor)."""

    async def retrieval(request: Request) -> Response:
        await request.body()
        return Response(answer, media_type="application/json")

    service = MicroService("floor", host="127.0.0.1", port=0, endpoint="/v1/retrieval")
    service.add_route("/v1/retrieval", retrieval, methods=["POST"])
    return service.app


def least_retrieval(store: Store) -> Callable[[bytes], Awaitable[bytes]]:
    """The least any retriever does with a request: parse the body, run the raw statement, answer the texts."""
    assert store.collection is not None
    statement = nearest(store.collection.chunks_table, None)

    async def retrieve(body: bytes) -> bytes:
        q = np.asarray(orjson.loads(body)["embedding"], dtype=np.float32)
        async with store.pool.connection() as conn:
            cur = await conn.execute(statement, {"v": q, "k": K})
            rows = await cur.fetchall()
        return orjson.dumps({"retrieved_docs": [{"text": row[3]} for row in rows]})

    return retrieve


def least_service(retrieve: Callable[[bytes], Awaitable[bytes]]) -> Any:
    """`least_retrieval` as the route of a `MicroService` (what the framework's request path costs)."""

    async def retrieval(request: Request) -> Response:
        return Response(await retrieve(await request.body()), media_type="application/json")

    service = MicroService("least", host="127.0.0.1", port=0, endpoint="/v1/retrieval")
    service.add_route("/v1/retrieval", retrieval, methods=["POST"])
    return service.app


def least_asgi(retrieve: Callable[[bytes], Awaitable[bytes]]) -> Any:
    """`least_retrieval` as a bare ASGI callable: no framework, only uvicorn."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        parts = []
        while True:
            message = await receive()
            parts.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        answer = await retrieve(b"".join(parts))
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer})

    return app


PATHS = {
    "service": "through the retriever (HTTP)",
    "raw": "raw SQL over the store's pool",
    "floor": "HTTP floor (same POST, answered at once)",
    "least": "least, MicroService (parse, raw SQL, texts)",
    "bare": "least, bare ASGI (the same, no framework)",
}
"""Each way a query is sent, as the tables name it."""


async def latency(
    store: Store, urls: dict[str, str], queries: list[str], qvecs: np.ndarray, rounds: int
) -> dict[str, list[float]]:
    """Per-query seconds of each path (`PATHS`: raw SQL on the store's pool, the others POSTs to `urls`), rotating."""
    assert store.collection is not None
    statement = nearest(store.collection.chunks_table, None)
    client = UpstreamClient()
    timeout = Timeout(total=30)
    headers = {"content-type": "application/json"}
    bodies = [
        orjson.dumps({"text": q, "embedding": v.tolist(), "k": K, "search_type": "similarity"})
        for q, v in zip(queries, qvecs, strict=True)
    ]
    times: dict[str, list[float]] = {name: [] for name in PATHS}

    def post(name: str) -> Callable[[int], Awaitable[None]]:
        url = f"{urls[name]}/v1/retrieval"

        async def send(i: int) -> None:
            t0 = time.perf_counter()
            _, answer = await client.post(name, url, bodies[i], headers=headers, timeout=timeout)
            assert len(orjson.loads(answer)["retrieved_docs"]) == K
            times[name].append(time.perf_counter() - t0)

        return send

    async def raw(i: int) -> None:
        t0 = time.perf_counter()
        async with store.pool.connection() as conn:
            cur = await conn.execute(statement, {"v": qvecs[i], "k": K})
            rows = await cur.fetchall()
        assert len(rows) == K
        times["raw"].append(time.perf_counter() - t0)

    paths = [raw if name == "raw" else post(name) for name in PATHS]
    for i in range(min(20, len(queries))):  # warm-up: prepared statements, pages in cache
        for path in paths:
            await path(i)
    for name in times:
        times[name].clear()
    # Every order of the paths in turn: each runs before each other one for half of the queries.
    # (The same query twice in a row finds the index pages the first one read in cache, so an
    # order that put the service before raw SQL more often than after would favour raw SQL.)
    orders = list(itertools.permutations(paths))
    step = 0
    for r in range(rounds):
        for i in range(len(queries)):
            for path in orders[step % len(orders)]:
                await path(i)
            step += 1
        last = {name: pct(t[-len(queries) :], 50) for name, t in times.items()}
        print(
            f"round {r + 1}: p50 raw {last['raw'] * 1000:.2f} ms, service {last['service'] * 1000:.2f} ms = "
            f"{last['service'] / last['raw']:.2f}x; least {last['least'] / last['raw']:.2f}x, "
            f"bare {last['bare'] / last['raw']:.2f}x; HTTP floor {last['floor'] * 1000:.2f} ms "
            f"(load average {load_average()})",
            flush=True,
        )
    await client.aclose()
    return times


async def recall_table(settings: StoreSettings, vecs: np.ndarray, qvecs: np.ndarray, efs: list[int]) -> None:
    truth = exact_topk(vecs, qvecs, 10)
    print("\n| hnsw.ef_search | recall@10 | p50 ms (store.search, k=10) | p99 ms |")
    print("|---|---|---|---|")
    for ef in efs:
        store = await Store.open(dataclasses.replace(settings, ef_search=ef))
        try:
            found: list[list[int]] = []
            lat: list[float] = []
            for q in qvecs[:20]:
                await store.search(q, k=10)
            for q in qvecs:
                t0 = time.perf_counter()
                hits = await store.search(q, k=10)
                lat.append(time.perf_counter() - t0)
                found.append([h.metadata["corpus_id"] for h in hits])
        finally:
            await store.aclose()
        print(
            f"| {ef} | {recall(found, truth):.3f} | {pct(lat, 50) * 1000:.2f} | {pct(lat, 99) * 1000:.2f} |", flush=True
        )


async def search_types(store: Store, qvecs: np.ndarray, queries: list[str]) -> None:
    """p50/p99 of each search type through `store.search` (after ANALYZE, as autovacuum leaves it)."""
    assert store.collection is not None
    async with store.pool.connection() as conn:
        await conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(store.collection.chunks_table)))
    kinds: list[tuple[str, dict[str, Any]]] = [
        ("similarity, k=4", {}),
        ("mmr, k=4, fetch_k=20", {"search_type": "mmr"}),
        ("hybrid, k=4, fetch_k=20", {"search_type": "hybrid"}),
        ("similarity, filter 1 % (corpus_id % 100 = 7)", {"filters": {"bucket": 7}}),
        ("similarity, filter 'kind' = 'man'", {"filters": {"kind": "man"}}),
    ]
    print("\n| search (through store.search) | p50 ms | p99 ms |")
    print("|---|---|---|")
    for label, options in kinds:
        lat: list[float] = []
        for i, (q, text) in enumerate(zip(qvecs, queries, strict=True)):
            t0 = time.perf_counter()
            await store.search(q, k=4, text=text, **options)
            if i >= 10:
                lat.append(time.perf_counter() - t0)
        print(f"| {label} | {pct(lat, 50) * 1000:.2f} | {pct(lat, 99) * 1000:.2f} |", flush=True)


async def bench_size(
    server: EmbeddedPostgres, docs: list[dict[str, Any]], vecs: np.ndarray, args: argparse.Namespace
) -> None:
    size = len(vecs)
    base, queries = split_corpus(docs, size)
    qvecs = np.load(args.vectors / "queries.npy")[: args.queries]
    queries = queries[: args.queries]
    settings = StoreSettings(connection=server.conninfo, collection=f"bench_{size}")
    store = await Store.open(settings, model=MODEL_ID, dimension=DIMENSION)
    try:
        stored = await store.count()
        if stored != size:
            await store.delete(None)
            if args.bulk:
                await hnsw_index(store, drop=True)
            took = await fill(store, base, vecs)
            how = "then the HNSW index built" if args.bulk else "into the HNSW index"
            print(f"\n## {size} chunks: stored in {took:.0f} s ({size / took:.0f} chunks/s, {how})")
            if args.bulk:
                took = await hnsw_index(store, drop=False)
                print(f"HNSW index (m=16, ef_construction=64) built in {took:.0f} s")
        else:
            print(f"\n## {size} chunks (already stored)")
        backend = PgvectorBackend(RetrieverSettings(store=settings), store=store)
        service = create_service(RetrieverSettings(store=settings), backend)
        async with serve_tcp(service.app) as url:
            probe = orjson.dumps({"text": queries[0], "embedding": qvecs[0].tolist(), "k": K})
            client = UpstreamClient()
            headers = {"content-type": "application/json"}
            _, answer = await client.post(
                "retriever", f"{url}/v1/retrieval", probe, headers=headers, timeout=Timeout(30)
            )
            await client.aclose()
            retrieve = least_retrieval(store)
            async with (
                serve_tcp(floor_service(answer)) as floor_url,
                serve_tcp(least_service(retrieve)) as least_url,
                serve_tcp(least_asgi(retrieve)) as bare_url,
            ):
                urls = {"service": url, "floor": floor_url, "least": least_url, "bare": bare_url}
                times = await latency(store, urls, queries, qvecs, args.rounds)
        raw = times["raw"]
        print(f"\nLatency, k={K}, c=1, {len(raw)} queries each (load average {load_average()}):")
        print("| path | p50 ms | p99 ms | ratio to raw SQL p50 / p99 |")
        print("|---|---|---|---|")
        for name, label in PATHS.items():
            t = times[name]
            print(
                f"| {label} | {pct(t, 50) * 1000:.2f} | {pct(t, 99) * 1000:.2f} | "
                f"{pct(t, 50) / pct(raw, 50):.2f}x / {pct(t, 99) / pct(raw, 99):.2f}x |"
            )
        extra = (pct(times["service"], 50) - pct(raw, 50)) * 1000
        print(
            f"\nThe service adds {extra:.2f} ms at p50, of which an HTTP request answered at once costs "
            f"{pct(times['floor'], 50) * 1000:.2f} ms; the least a retriever can do over HTTP adds "
            f"{(pct(times['least'], 50) - pct(raw, 50)) * 1000:.2f} ms as a MicroService route, "
            f"{(pct(times['bare'], 50) - pct(raw, 50)) * 1000:.2f} ms with no framework."
        )
        await recall_table(settings, vecs, qvecs, args.ef_search)
        await store.connect()  # the service closed it when it stopped
        await search_types(store, qvecs, queries)
    finally:
        await store.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--vectors", type=Path, required=True, help="directory with chunks-N.npy and queries.npy")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--data-dir", type=Path, help="keep the database here (default: a temporary directory)")
    parser.add_argument("--rounds", type=int, default=3, help="timed passes over the queries")
    parser.add_argument("--queries", type=int, default=N_QUERIES)
    parser.add_argument("--ef-search", type=int, nargs="+", default=[40, 64, 100, 200])
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop", help="the event loop (both sides)")
    parser.add_argument(
        "--bulk", action="store_true", help="store without the HNSW index, then build it (faster than inserting)"
    )
    parser.add_argument("--noise", type=float, default=0.0, help="extend the embedded vectors by perturbed copies")
    args = parser.parse_args()
    docs = read_corpus(args.corpus)
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="megaservice-bench-pg-"))
    if args.data_dir is None:
        atexit.register(shutil.rmtree, data_dir, ignore_errors=True)
    with EmbeddedPostgres(data_dir) as server:
        print(f"PostgreSQL: {server.conninfo}; load average {load_average()}")
        for size in args.sizes:
            vecs = vectors(args.vectors, size, args.noise)
            texts = docs[: len(docs) - N_QUERIES]
            base = [{**texts[i % len(texts)], "id": i} for i in range(size)]
            with asyncio.Runner(loop_factory=loop_factory(args.loop)) as runner:
                runner.run(bench_size(server, base + docs[-N_QUERIES:], vecs, args))


if __name__ == "__main__":
    main()
