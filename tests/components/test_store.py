"""The store on a real embedded PostgreSQL with pgvector and real MiniLM embeddings."""

import asyncio
import contextlib
import time

import numpy as np
import pytest
from psycopg import sql

from megaservice.components._store import Chunk, ModelMismatch, Store, StoreSettings, StoreUnavailable
from megaservice.components._store.queries import RRF_K
from megaservice.components.embedding.minilm import DIMENSION, MODEL_ID
from megaservice.components.postgres.cluster import DATABASE, ROLE
from megaservice.exceptions import InputError
from tests.components.pgdata import FILES, QUERIES, embed, store_files

pytestmark = pytest.mark.anyio


@pytest.fixture
async def store(postgres, collection):
    store = await Store.open(postgres.store_settings(collection=collection), model=MODEL_ID, dimension=DIMENSION)
    yield store
    await store.aclose()


async def exact_order(store: Store, vector, k: int, where: str = "") -> list[int]:
    """The ids a direct SQL query on the same table ranks first: an exact scan, no index."""
    table = sql.Identifier(store.collection.chunks_table)
    query = sql.SQL("SELECT id FROM {} " + where + " ORDER BY embedding <=> %s, id LIMIT %s").format(table)
    async with store.pool.connection() as conn, conn.transaction():
        await conn.execute("SET LOCAL enable_indexscan = off")
        cur = await conn.execute(query, (np.asarray(vector, dtype=np.float32), k))
        return [row[0] for row in await cur.fetchall()]


async def test_search_returns_what_was_stored_ranked_as_sql_ranks_it(store, minilm):
    assert await store_files(store, minilm) == sum(len(texts) for texts in FILES.values())
    for query, source in QUERIES.items():
        vector = embed(minilm, [query])[0]
        hits = await store.search(vector, k=5)
        assert hits[0].source == source, query
        assert [hit.id for hit in hits] == await exact_order(store, vector, 5)
        top = hits[0]
        assert top.text in FILES[source]
        assert top.metadata["source"] == source
        assert top.metadata["chunk_index"] == top.index == FILES[source].index(top.text)
        assert top.metadata["page"] == top.index // 2 + 1
        assert top.score == pytest.approx(1 - top.distance)
        assert top.score == pytest.approx(float(vector @ embed(minilm, [top.text])[0]), abs=1e-4)
        assert [hit.distance for hit in hits] == sorted(hit.distance for hit in hits)


async def test_replacing_a_file_keeps_one_version(store, minilm):
    await store_files(store, minilm)
    new = ["Pizza dough rests overnight in the fridge.", "Bake pizza on a hot stone."]
    assert await store.replace_file("baking.md", [Chunk(t, i) for i, t in enumerate(new)], embed(minilm, new)) == 2
    files = {info.source: info for info in await store.files()}
    assert files["baking.md"].chunks == 2
    assert sorted(files) == sorted(FILES)
    assert await store.count() == sum(len(t) for t in FILES.values()) - len(FILES["baking.md"]) + 2
    hits = await store.search(
        embed(minilm, ["how long should bread dough rise"])[0], k=3, filters={"source": "baking.md"}
    )
    assert {hit.text for hit in hits} == set(new)


async def test_concurrent_replacements_of_one_file_leave_one_copy(store, minilm):
    versions = [
        [f"version {v} sentence {i} about kneading dough" for i in range(n)] for v, n in ((1, 3), (2, 7), (3, 5))
    ]
    vectors = [embed(minilm, texts) for texts in versions]
    await asyncio.gather(
        *(
            store.replace_file("dough.md", [Chunk(t, i) for i, t in enumerate(texts)], vecs)
            for texts, vecs in zip(versions, vectors, strict=True)
        )
    )
    (info,) = await store.files()
    assert info.chunks == await store.count()
    hits = await store.search(vectors[0][0], k=20)
    versions_seen = {hit.text.split()[1] for hit in hits}
    assert len(versions_seen) == 1  # one version, whole
    assert len(hits) == info.chunks == len(versions[int(versions_seen.pop()) - 1])


async def test_a_failed_replacement_leaves_the_file_as_it_was(store, minilm):
    await store_files(store, minilm, {"a.md": ["the first version of the file"]})
    texts = ["second version, chunk one", "second version, chunk two"]
    chunks = [Chunk(texts[0], 0), Chunk(texts[1], 1, {"bad": "nul \x00 in a JSON string"})]
    with pytest.raises(InputError, match="refused"):
        await store.replace_file("a.md", chunks, embed(minilm, texts))  # fails in PostgreSQL, mid-transaction
    hits = await store.search(embed(minilm, ["first version"])[0], k=5)
    assert [hit.text for hit in hits] == ["the first version of the file"]
    assert [(f.source, f.chunks) for f in await store.files()] == [("a.md", 1)]


@pytest.mark.parametrize(
    ("chunks", "vectors", "message"),
    [
        ([], np.zeros((0, DIMENSION)), "no chunks"),
        ([Chunk("a", 0), Chunk("b", 0)], np.ones((2, DIMENSION)), "same index"),
        ([Chunk("a", 0)], np.ones((2, DIMENSION)), "1 chunks but 2 vectors"),
        ([Chunk("a", 0)], np.ones((1, 12)), "12 dimensions, but collection"),
        ([Chunk("a", 0)], np.full((1, DIMENSION), np.nan), "NaN"),
    ],
)
async def test_bad_chunks_are_refused_and_nothing_is_stored(store, chunks, vectors, message):
    with pytest.raises(InputError, match=message):
        await store.replace_file("x.md", chunks, vectors)
    assert await store.files() == []


async def test_delete_one_file_or_all(store, minilm):
    await store_files(store, minilm)
    assert await store.delete("python.md") == len(FILES["python.md"])
    assert await store.delete("python.md") == 0
    assert "python.md" not in {f.source for f in await store.files()}
    assert await store.delete(None) == sum(len(t) for t in FILES.values()) - len(FILES["python.md"])
    assert await store.files() == []
    assert await store.search(embed(minilm, ["planets"])[0], k=3) == []


async def test_another_model_or_dimension_is_refused_naming_both(postgres, collection, store, minilm):
    await store_files(store, minilm, {"a.md": ["a sentence"]})
    settings = postgres.store_settings(collection=collection)
    with pytest.raises(ModelMismatch) as caught:
        await Store.open(settings, model="BAAI/bge-small-en-v1.5", dimension=DIMENSION)
    assert MODEL_ID in str(caught.value) and "BAAI/bge-small-en-v1.5" in str(caught.value)
    assert caught.value.status_code == 409
    with pytest.raises(ModelMismatch, match=rf"\({DIMENSION} dimensions\), but this service uses model '.*' \(768 dim"):
        await Store.open(settings, model=MODEL_ID, dimension=768)
    with pytest.raises(ModelMismatch, match="this service uses 768 dimensions:"):
        await Store.open(settings, dimension=768)
    reader = await Store.open(settings)  # no model: takes the collection's
    try:
        assert reader.collection.model == MODEL_ID
        with pytest.raises(
            InputError, match=f"the query vector has 768 dimensions, but collection .* holds {DIMENSION}"
        ):
            await reader.search(np.ones(768), k=1)
    finally:
        await reader.aclose()


async def test_a_reader_opened_before_the_first_write_finds_the_collection_later(postgres, collection, minilm):
    reader = await Store.open(postgres.store_settings(collection=collection))
    writer = await Store.open(postgres.store_settings(collection=collection), model=MODEL_ID, dimension=DIMENSION)
    try:
        assert await reader.search(embed(minilm, ["planets"])[0]) == []
        await store_files(writer, minilm)
        hits = await reader.search(embed(minilm, ["what is the biggest planet"])[0], k=1)
        assert hits[0].source == "astronomy.md"
    finally:
        await reader.aclose()
        await writer.aclose()


async def test_find_collection_names_existing_collections_and_creates_none(postgres, collection, store, minilm):
    await store_files(store, minilm, {"a.md": ["a sentence"]})
    other = await store.find_collection(collection)  # any store of the database finds any collection
    assert other is not None and other == store.collection and other.model == MODEL_ID
    assert await store.find_collection(collection + "_missing") is None
    assert await store.find_collection(collection + "_missing") is None  # still: the lookup created nothing
    reader = await Store.open(postgres.store_settings(collection=collection + "_missing"))
    try:
        assert reader.collection is None
    finally:
        await reader.aclose()


async def test_thresholds(store, minilm):
    await store_files(store, minilm)
    vector = embed(minilm, ["what is the biggest planet"])[0]
    everything = await store.search(vector, k=30)
    cut = everything[3].distance
    near = await store.search(vector, k=30, search_type="similarity_distance_threshold", distance_threshold=cut)
    assert [h.id for h in near] == [h.id for h in everything if h.distance <= cut]
    good = await store.search(
        vector, k=30, search_type="similarity_score_threshold", score_threshold=everything[2].score
    )
    assert [h.id for h in good] == [h.id for h in everything[:3]]
    with pytest.raises(InputError, match="needs a distance_threshold"):
        await store.search(vector, search_type="similarity_distance_threshold")


async def test_mmr_trades_relevance_for_novelty(store, minilm):
    twins = [f"what is the biggest planet? ({i})" for i in range(3)]  # near copies of one another and of the query
    await store_files(store, minilm, {"twins.md": twins, **FILES})
    vector = embed(minilm, ["what is the biggest planet"])[0]
    plain = await store.search(vector, k=3)
    assert all(hit.source == "twins.md" for hit in plain)
    diverse = await store.search(vector, k=3, search_type="mmr", fetch_k=20, lambda_mult=0.3)
    assert diverse[0].id == plain[0].id  # the most relevant first
    assert len({hit.source for hit in diverse}) > 1  # then something new, not a twin
    same = await store.search(vector, k=3, search_type="mmr", fetch_k=20, lambda_mult=1.0)
    assert [h.id for h in same] == [h.id for h in plain]


async def test_hybrid_is_rank_fusion_of_full_text_and_vectors(store, minilm):
    await store_files(store, minilm)
    text = "XQ-77 hanger"
    vector = embed(minilm, [text])[0]
    hits = await store.search(vector, k=5, search_type="hybrid", text=text, fetch_k=20)
    assert hits[0].text.startswith("The XQ-77 derailleur hanger")  # the keyword match wins
    # the same fusion computed from two direct SQL queries on the same table
    table = sql.Identifier(store.collection.chunks_table)
    async with store.pool.connection() as conn:
        vec = await conn.execute(
            sql.SQL("SELECT id FROM {} ORDER BY embedding <=> %s, id LIMIT 20").format(table), (vector,)
        )
        vec_ids = [r[0] for r in await vec.fetchall()]
        txt = await conn.execute(
            sql.SQL(
                "SELECT id FROM {}, to_tsquery('english', 'xq | 77 | hanger') q WHERE tsv @@ q "
                "ORDER BY ts_rank_cd(tsv, q) DESC, id LIMIT 20"
            ).format(table)
        )
        txt_ids = [r[0] for r in await txt.fetchall()]
    scores: dict[int, float] = {}
    for ranking in (vec_ids, txt_ids):
        for rank, doc in enumerate(ranking, 1):
            scores[doc] = scores.get(doc, 0.0) + 1 / (RRF_K + rank)
    fused = sorted(scores, key=lambda d: (-scores[d], d))[:5]
    assert [h.id for h in hits] == fused
    assert [h.score for h in hits] == pytest.approx([scores[d] for d in fused])
    with pytest.raises(InputError, match="hybrid needs the query's text"):
        await store.search(vector, search_type="hybrid", text=" ")


@pytest.mark.parametrize(
    ("filters", "where"),
    [
        ({"topic": "gardening"}, "WHERE metadata->>'topic' = 'gardening'"),
        ({"page": {"$gte": 3}}, "WHERE (metadata->>'page')::int >= 3"),
        ({"source": {"$in": ["python.md", "finance.md"]}}, "WHERE source IN ('python.md', 'finance.md')"),
        (
            {"$or": [{"topic": "cycling"}, {"page": 1}]},
            "WHERE metadata->>'topic' = 'cycling' OR (metadata->>'page')::int = 1",
        ),
        (
            {"topic": {"$ne": "baking"}, "page": {"$lt": 2}},
            "WHERE metadata->>'topic' <> 'baking' AND (metadata->>'page')::int < 2",
        ),
        ({"file_no": 5, "page": {"$exists": True}}, "WHERE (metadata->>'file_no')::int = 5"),
        ({"topic": {"$ilike": "ASTRO%"}}, "WHERE metadata->>'topic' ILIKE 'astro%%'"),
    ],
)
async def test_filters_keep_the_rows_a_where_clause_keeps_in_its_order(store, minilm, filters, where):
    await store_files(store, minilm)
    vector = embed(minilm, ["what is the biggest planet"])[0]
    hits = await store.search(vector, k=4, filters=filters)
    assert [h.id for h in hits] == await exact_order(store, vector, 4, where)
    assert hits


async def test_a_selective_filter_still_finds_k_rows(store, minilm):
    # 600 chunks; the filter keeps 1 in 60: HNSW alone would find a few at most, the iterative scan finds all k
    texts = [f"note {i} about {['planets', 'bread', 'roses', 'bonds'][i % 4]}" for i in range(600)]
    chunks = [Chunk(t, i, {"bucket": i % 60}) for i, t in enumerate(texts)]
    await store.replace_file("notes.md", chunks, embed(minilm, texts))
    vector = embed(minilm, ["gas giant planets"])[0]
    hits = await store.search(vector, k=8, filters={"bucket": 7})
    assert len(hits) == 8
    assert [h.id for h in hits] == await exact_order(store, vector, 8, "WHERE (metadata->>'bucket')::int = 7")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"search_type": "fuzzy"}, "search_type 'fuzzy' is not one of similarity, "),
        ({"k": 0}, "k must be an integer from 1 to 1000, got 0"),
        ({"k": 10**9}, "k must be an integer from 1 to 1000"),
        ({"search_type": "mmr", "fetch_k": 5000}, "fetch_k must be"),
        ({"search_type": "mmr", "lambda_mult": 1.5}, "lambda_mult must be between 0 and 1"),
        ({"filters": {"page": {"$near": 3}}}, "unknown operator '\\$near'"),
        ({"filters": {"$nor": []}}, "unknown operator '\\$nor'"),
        ({"filters": {"page": {"$gt": [1]}}}, "compares with a number or a string"),
    ],
)
async def test_bad_searches_are_refused_saying_why(store, minilm, options, message):
    await store_files(store, minilm, {"a.md": ["a sentence"]})
    with pytest.raises(InputError, match=message) as caught:
        await store.search(embed(minilm, ["q"])[0], **options)
    assert 400 <= caught.value.status_code < 500


@pytest.mark.parametrize(
    ("vector", "message"), [([], "non-empty"), ([0.0] * DIMENSION, "all zeros"), ([float("nan")] * DIMENSION, "NaN")]
)
async def test_bad_query_vectors_are_refused(store, vector, message):
    with pytest.raises(InputError, match=message):
        await store.search(vector)


def test_opea_connection_strings_and_collection_names_are_read():
    settings = StoreSettings.from_env(
        {"PG_CONNECTION_STRING": "postgresql+psycopg2://user:secret@db:5432/vectordb", "PG_INDEX_NAME": "rag"}
    )
    assert settings.connection == "postgresql://user:secret@db:5432/vectordb"
    assert settings.collection == "rag"
    assert StoreSettings.from_env({"INDEX_NAME": "rag-pgvector"}).collection == "rag-pgvector"
    both = StoreSettings.from_env({"COLLECTION_NAME": "mine", "INDEX_NAME": "theirs"})
    assert both.collection == "mine"
    assert StoreSettings.from_env({}).collection == "rag_pgvector"
    assert StoreSettings.from_env({"MEGASERVICE_DATA_DIR": "/srv/ms"}).data_dir.as_posix() == "/srv/ms"


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_after_a_restart_the_same_store_writes_and_reads_at_once(postgres, store, minilm):
    await store_files(store, minilm, {"a.md": ["the first file"]})
    await asyncio.gather(*(store.count() for _ in range(6)))  # several pooled connections, soon all broken
    await asyncio.to_thread(postgres.restart)
    texts = ["the second file, stored after the restart"]
    assert await store.replace_file("b.md", [Chunk(texts[0], 0)], embed(minilm, texts)) == 1
    assert sorted(f.source for f in await store.files()) == ["a.md", "b.md"]
    hits = await store.search(embed(minilm, ["stored after the restart"])[0], k=1)
    assert hits[0].source == "b.md"


class CuttableLink:
    """A TCP proxy to the embedded server's socket, to cut as a dead PostgreSQL is cut and to restore at once.

    `cut()` closes every connection through it and refuses new ones (as a killed server: broken connections,
    then "connection refused"); `restore()` listens again on the same port. The server itself runs on, so
    the outage ends exactly when the test says (a restart of the real server takes seconds of its own).
    """

    def __init__(self, socket: str) -> None:
        self.socket = socket
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def conninfo(self) -> str:
        return f"host=127.0.0.1 port={self.port} dbname={DATABASE} user={ROLE}"

    async def restore(self) -> None:
        self._server = await asyncio.start_server(self._pipe, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_unix_connection(self.socket)
        self._writers |= {writer, server_writer}

        async def copy(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.transport.abort()

        try:
            await asyncio.gather(copy(reader, server_writer), copy(server_reader, writer))
        finally:
            self._writers -= {writer, server_writer}


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_database_gone_a_while_is_503_within_the_pool_timeout_and_back_within_a_second(
    postgres, collection, minilm
):
    """While the database is away each call fails after `PG_POOL_TIMEOUT` (1 s here), and at once again when back.

    A timeout was retried (2 s); and psycopg_pool's reconnection delay, doubling from 1 s, had grown to 4 s by
    the end of this outage, so calls failed 2.5-3.5 s longer (10-15 s after an outage of 15 s).
    """
    link = CuttableLink(str(postgres.cluster.socket))
    await link.restore()
    settings = postgres.store_settings(collection=collection, connection=link.conninfo, pool_timeout=1.0)
    store = await Store.open(settings, model=MODEL_ID, dimension=DIMENSION)
    try:
        await store_files(store, minilm, {"a.md": ["the only file"]})
        await asyncio.gather(*(store.count() for _ in range(4)))  # several pooled connections, all cut below
        await link.cut()
        cut = time.monotonic()
        for _ in range(2):  # the first finds the broken connections, the second an empty pool
            start = time.monotonic()
            with pytest.raises(StoreUnavailable, match=r"the database \(PostgreSQL at host=127\.0\.0\.1"):
                await store.count()
            assert time.monotonic() - start < 1.6  # 1 s, and 2 s when a timeout was retried
        await asyncio.sleep(3.8 - (time.monotonic() - cut))  # psycopg_pool's attempts: at 0, 1, 3, then 7 s
        await link.restore()
        back = time.monotonic()
        while True:
            with contextlib.suppress(StoreUnavailable):
                assert await store.count() == 1
                break
        assert time.monotonic() - back < 2.0
    finally:
        await store.aclose()
        await link.cut()


async def test_hybrid_leaves_out_words_most_chunks_have(store, minilm):
    topics = ["planets", "bread", "roses", "bonds", "chains"]
    texts = [f"widget note {i} about {topics[i % 5]}" for i in range(300)] + ["the zorblax manual for gadgets"]
    await store.replace_file("notes.md", [Chunk(t, i) for i, t in enumerate(texts)], embed(minilm, texts))
    async with store.pool.connection() as conn:
        await conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(store.collection.chunks_table)))
    vector = embed(minilm, ["widget"])[0]
    plain = await store.search(vector, k=5)
    hybrid = await store.search(vector, k=5, search_type="hybrid", text="widget")
    assert [h.id for h in hybrid] == [h.id for h in plain]  # "widget" is in every chunk: no full-text side
    assert [h.score for h in hybrid] == pytest.approx([1 / (RRF_K + rank) for rank in range(1, 6)])
    both = await store.search(vector, k=5, search_type="hybrid", text="widget zorblax")
    (found,) = [h for h in both if h.text == "the zorblax manual for gadgets"]  # first on the full-text side
    assert found.score >= 1 / (RRF_K + 1) - 1e-9
