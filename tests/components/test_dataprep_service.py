"""The dataprep service on a real PostgreSQL with pgvector and real MiniLM embeddings.

Every test writes to a collection of its own; what is stored is read back with the store (`Store.open`).
"""

import dataclasses
import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import orjson
import pytest
from psycopg import sql
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from megaservice.components._store import Store, StoreSettings
from megaservice.components._store.schema import REGISTRY, table_names
from megaservice.components.dataprep import DataprepSettings, create_service
from megaservice.components.dataprep.embedder import Embedder, load_embedder
from megaservice.components.embedding.backend import Embedded
from megaservice.components.embedding.minilm import DIMENSION, MODEL_ID, MiniLM
from megaservice.exceptions import UpstreamConnectError
from megaservice.testing import client_for, serve, unused_url
from megaservice.testing.documents import make_docx, make_pdf, prose
from megaservice.testing.postgres import EmbeddedPostgres

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def wait_ready(client: httpx.AsyncClient, timeout: float = 30.0) -> httpx.Response:
    with anyio.move_on_after(timeout):
        while (answer := await client.get("/v1/ready")).status_code != 200:
            await anyio.sleep(0.02)
    return answer


@pytest.fixture
def store_settings(postgres: EmbeddedPostgres) -> StoreSettings:
    """The session's PostgreSQL, a collection of this test's own."""
    return postgres.store_settings(collection=f"dataprep_{uuid.uuid4().hex[:12]}")


@pytest.fixture
async def store(store_settings: StoreSettings) -> AsyncIterator[Store]:
    """A reader of the test's collection."""
    opened = await Store.open(store_settings)
    yield opened
    await opened.aclose()


def settings_for(store_settings: StoreSettings, **changes: Any) -> DataprepSettings:
    return dataclasses.replace(DataprepSettings(store=store_settings), **changes)


class Dataprep:
    """A dataprep service in process, and its client."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def ingest(self, *files: tuple[str, bytes], **fields: Any) -> httpx.Response:
        form = {key: value if isinstance(value, str) else orjson.dumps(value).decode() for key, value in fields.items()}
        uploads = [("files", (name, data, "application/octet-stream")) for name, data in files]
        return await self.client.post("/v1/dataprep/ingest", files=uploads or None, data=form)

    async def get(self) -> list[dict[str, Any]]:
        answer = await self.client.post("/v1/dataprep/get")
        assert answer.status_code == 200, answer.text
        return answer.json()

    async def delete(self, body: Any) -> httpx.Response:
        return await self.client.post("/v1/dataprep/delete", json=body)


async def start(settings: DataprepSettings, embedder: Embedder) -> AsyncIterator[Dataprep]:
    async with client_for(create_service(settings, embedder=embedder).app) as client:
        ready = await wait_ready(client)
        assert ready.status_code == 200, ready.text
        yield Dataprep(client)


@pytest.fixture
async def dataprep(store_settings: StoreSettings, minilm: MiniLM) -> AsyncIterator[Dataprep]:
    settings = settings_for(store_settings)
    async for running in start(settings, load_embedder(settings, minilm=minilm)):
        yield running


@dataclasses.dataclass(frozen=True)
class Row:
    source: str
    index: int
    text: str
    metadata: dict[str, Any]


async def stored_chunks(store: Store, source: str | None = None) -> list[Row]:
    """Every chunk of the collection (or of one file), by file and index, read with SQL."""
    if await store.count() == 0:
        return []
    assert store.collection is not None
    query = sql.SQL("SELECT source, chunk_index, text, metadata FROM {} ORDER BY source, chunk_index").format(
        sql.Identifier(store.collection.chunks_table)
    )
    async with store.pool.connection() as conn:
        rows = await (await conn.execute(query)).fetchall()
    return [Row(*row) for row in rows if source is None or row[0] == source]


# -- ingesting ------------------------------------------------------------------------------------


async def test_every_format_is_ingested_listed_and_found(dataprep, store, minilm):
    files = [
        ("notes.txt", b"The coffee machine on floor three is descaled every Monday."),
        ("guide.md", b"# Parking\n\nVisitors park in the north lot behind the warehouse."),
        ("page.html", b"<html><title>Badges</title><body><p>Lost badges are replaced at reception.</p></body></html>"),
        ("manual.pdf", make_pdf(["Chapter one: the boiler.", "The boiler pressure must stay below two bar."])),
        ("policy.docx", make_docx(["# Holidays", "Employees get twenty-five days of paid holiday."])),
        ("rooms.csv", b"room,capacity\nAtlas,12\nOrion,30\n"),
        ("faq.json", orjson.dumps([{"q": "Where is the gym?", "a": "The gym is in the basement."}])),
        ("log.jsonl", b'{"event": "fire drill", "when": "first Friday of the month"}\n'),
    ]
    answer = await dataprep.ingest(*files)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == 200 and body["message"] == "Data preparation succeeded"
    assert [f["name"] for f in body["files"]] == [name for name, _ in files]
    assert [f["pages"] for f in body["files"]][3] == 2
    listed = await dataprep.get()
    assert sorted(f["name"] for f in listed) == sorted(name for name, _ in files)
    assert all(f["type"] == "File" and f["parent"] == "" and f["id"] == f["name"] and f["chunks"] >= 1 for f in listed)
    for question, source in [
        ("what pressure may the boiler have?", "manual.pdf"),
        ("how many vacation days do staff get?", "policy.docx"),
        ("where can guests leave their car?", "guide.md"),
        ("how many people fit in the Orion room?", "rooms.csv"),
    ]:
        hits = await store.search(minilm.embed([question])[0], k=1)
        assert hits[0].source == source, (question, hits[0])
    pdf = await stored_chunks(store, "manual.pdf")
    assert pdf and all(hit.metadata["page"] in (1, 2) for hit in pdf)
    boiler = [hit for hit in pdf if "pressure" in hit.text]
    assert boiler and all(2 in (hit.metadata["page"], hit.metadata.get("page_end")) for hit in boiler)


async def test_each_chunk_has_its_source_index_and_page(dataprep, store):
    pages = [prose(1500, seed=page) for page in range(5)]
    answer = await dataprep.ingest(("long.pdf", make_pdf(pages)), chunk_size="300", chunk_overlap="30")
    assert answer.status_code == 200, answer.text
    chunks = await stored_chunks(store, "long.pdf")
    assert len(chunks) == answer.json()["chunks"] > 20
    assert [hit.index for hit in chunks] == list(range(len(chunks)))
    assert [hit.metadata["chunk_index"] for hit in chunks] == list(range(len(chunks)))
    assert all(hit.metadata["source"] == "long.pdf" and len(hit.text) <= 300 for hit in chunks)
    assert {hit.metadata["page"] for hit in chunks} == {1, 2, 3, 4, 5}
    assert [hit.metadata["page"] for hit in chunks] == sorted(hit.metadata["page"] for hit in chunks)


async def test_stored_vectors_are_the_models(dataprep, store, minilm):
    text = "Solar panels on the roof produce forty kilowatts at noon."
    assert (await dataprep.ingest(("solar.txt", text.encode()))).status_code == 200
    hits = await store.search(minilm.embed([text])[0], k=1)
    assert hits[0].text == text
    assert hits[0].distance == pytest.approx(0.0, abs=1e-5)


async def test_ingesting_a_file_again_replaces_its_chunks(dataprep, store):
    first = "\n\n".join(f"First version paragraph {i} about apples." for i in range(30))
    second = "\n\n".join(f"Second version paragraph {i} about pears." for i in range(12))
    assert (await dataprep.ingest(("fruit.txt", first.encode()), chunk_size="60", chunk_overlap="0")).status_code == 200
    before = await stored_chunks(store, "fruit.txt")
    assert len(before) == 30
    answer = await dataprep.ingest(("fruit.txt", second.encode()), chunk_size="60", chunk_overlap="0")
    assert answer.status_code == 200
    after = await stored_chunks(store, "fruit.txt")
    assert len(after) == 12 and all("pears" in hit.text for hit in after)
    assert [f["chunks"] for f in await dataprep.get()] == [12]


async def test_two_ingestions_of_one_file_at_once_leave_one_copy(dataprep, store):
    versions = {
        "a": "\n\n".join(f"Alpha edition, section {i}." for i in range(40)),
        "b": "\n\n".join(f"Beta edition, part {i}." for i in range(25)),
    }
    answers: dict[str, httpx.Response] = {}

    async def send(key: str) -> None:
        answers[key] = await dataprep.ingest(("same.txt", versions[key].encode()), chunk_size="40", chunk_overlap="0")

    async with anyio.create_task_group() as group:
        for key in versions:
            group.start_soon(send, key)
    assert all(answer.status_code == 200 for answer in answers.values()), answers
    chunks = await stored_chunks(store, "same.txt")
    kinds = {"a" if "Alpha" in hit.text else "b" for hit in chunks}
    assert len(kinds) == 1  # one version, not a mix
    assert len(chunks) == {"a": 40, "b": 25}[kinds.pop()]
    assert [hit.index for hit in chunks] == list(range(len(chunks)))
    assert len(await dataprep.get()) == 1


async def test_a_failure_halfway_leaves_the_previous_version(store_settings, store, minilm):
    settings = settings_for(store_settings)
    good = load_embedder(settings, minilm=minilm)

    class FailsAfter:
        """The local backend, failing from its third call on (an embedding server that went away mid-file)."""

        name = "local"

        def __init__(self) -> None:
            self.calls = 0
            self.fail = False

        def __getattr__(self, name: str) -> Any:
            return getattr(good.backend, name)

        async def embed(self, texts: list[str], model: str | None = None) -> Embedded:
            self.calls += 1
            if self.fail and self.calls > 2:
                raise UpstreamConnectError("the embedding server went away", node="embedding", url="http://x")
            return await good.backend.embed(texts, model)

    backend = FailsAfter()
    embedder = Embedder(backend, window=8)
    async for dataprep in start(settings, embedder):
        old = "\n\n".join(f"Old paragraph {i}." for i in range(10))
        assert (await dataprep.ingest(("doc.txt", old.encode()), chunk_size="30", chunk_overlap="0")).status_code == 200
        backend.fail, backend.calls = True, 0
        new = "\n\n".join(f"New paragraph number {i}." for i in range(100))
        answer = await dataprep.ingest(("doc.txt", new.encode()), chunk_size="30", chunk_overlap="0")
        assert answer.status_code == 502 and answer.json()["node"] == "embedding"
        assert backend.calls == 3  # it failed after two windows of chunks were embedded
        chunks = await stored_chunks(store, "doc.txt")
        assert len(chunks) == 10 and all(hit.text.startswith("Old") for hit in chunks)
        assert (await dataprep.ingest(("other.txt", new.encode()))).status_code == 502
        assert [f["name"] for f in await dataprep.get()] == ["doc.txt"]


async def test_a_model_the_collection_was_not_built_with_is_refused_naming_both(store_settings, minilm):
    settings = settings_for(store_settings)
    async for dataprep in start(settings, load_embedder(settings, minilm=minilm)):
        assert (await dataprep.ingest(("a.txt", b"some text"))).status_code == 200
    other = Embedder(load_embedder(settings, minilm=minilm).backend, model="BAAI/bge-base-en-v1.5")
    async with client_for(create_service(settings, embedder=other).app) as client:
        with anyio.fail_after(30):
            while "ModelMismatch" not in (answer := await client.get("/v1/ready")).text:
                await anyio.sleep(0.02)
        assert answer.status_code == 503
        assert "BAAI/bge-base-en-v1.5" in answer.text and MODEL_ID in answer.text
        # report D7: the dimensions of "this service uses model ..." had no parentheses
        assert f"uses model 'BAAI/bge-base-en-v1.5' ({DIMENSION} dimensions):" in answer.json()["reason"]
        refused = await client.post("/v1/dataprep/ingest", files=[("files", ("b.txt", b"more text"))])
        assert refused.status_code == 503
        assert "BAAI/bge-base-en-v1.5" in refused.json()["detail"] and MODEL_ID in refused.json()["detail"]


async def test_a_database_that_is_not_there_keeps_it_unready_naming_it(minilm):
    nowhere = unused_url().rsplit(":", 1)[1]
    store_settings = StoreSettings(connection=f"postgresql://user@127.0.0.1:{nowhere}/db", pool_timeout=0.5)
    settings = settings_for(store_settings)
    async with client_for(create_service(settings, embedder=load_embedder(settings, minilm=minilm)).app) as client:
        with anyio.fail_after(30):
            while "StoreUnavailable" not in (answer := await client.get("/v1/ready")).text:
                await anyio.sleep(0.02)
        assert answer.status_code == 503 and f"127.0.0.1:{nowhere}" in answer.json()["reason"]
        refused = await client.post("/v1/dataprep/ingest", files=[("files", ("a.txt", b"text"))])
        assert refused.status_code == 503 and "is unavailable" in refused.json()["detail"]
        assert (await client.post("/v1/dataprep/get")).status_code == 503


async def test_index_name_writes_lists_and_deletes_another_collection(dataprep, store, store_settings):
    other = f"{store_settings.collection}_other"
    answer = await dataprep.ingest(("elsewhere.txt", b"text in the other collection"), index_name=other)
    assert answer.status_code == 200, answer.text
    assert await dataprep.get() == [] and await store.count() == 0
    listed = await dataprep.client.post("/v1/dataprep/get", json={"index_name": other})
    assert [f["name"] for f in listed.json()] == ["elsewhere.txt"]
    elsewhere = await Store.open(dataclasses.replace(store_settings, collection=other))
    try:
        assert [(row.source, row.text) for row in await stored_chunks(elsewhere)] == [
            ("elsewhere.txt", "text in the other collection")
        ]
        assert elsewhere.collection is not None and elsewhere.collection.model == MODEL_ID
        missing = await dataprep.delete({"file_path": "elsewhere.txt"})  # not in the default collection
        assert missing.status_code == 404
        deleted = await dataprep.delete({"file_path": "elsewhere.txt", "index_name": other})
        assert deleted.status_code == 200 and deleted.json()["chunks"] == 1
        assert await elsewhere.count() == 0
    finally:
        await elsewhere.aclose()


async def registered(store: Store, names: list[str]) -> list[str]:
    """Which of `names` have a registry row or a chunks table in the store's database."""
    async with store.pool.connection() as conn:
        query = sql.SQL("SELECT name FROM {} WHERE name = ANY(%s)").format(sql.Identifier(REGISTRY))
        cur = await conn.execute(query, (names,))
        rows = [row[0] for row in await cur.fetchall()]
        tables = [table_names(name)[0] for name in names]
        cur = await conn.execute("SELECT tablename FROM pg_tables WHERE tablename = ANY(%s)", (tables,))
        rows += [row[0] for row in await cur.fetchall()]
    return rows


async def test_get_and_delete_of_an_unknown_index_name_create_nothing_and_take_no_slot(store_settings, store, minilm):
    """Report D1: reading a collection that does not exist created it and used up DATAPREP_MAX_COLLECTIONS."""
    settings = settings_for(store_settings, max_collections=2)  # the default and one other
    unknown = [f"{store_settings.collection}_unknown_{i}" for i in range(3)]
    async for dataprep in start(settings, load_embedder(settings, minilm=minilm)):
        for name in unknown:
            listed = await dataprep.client.post("/v1/dataprep/get", json={"index_name": name})
            assert listed.status_code == 200 and listed.json() == [], listed.text
            everything = await dataprep.delete({"file_path": "all", "index_name": name})
            assert everything.status_code == 200 and everything.json()["chunks"] == 0, everything.text
            one = await dataprep.delete({"file_path": "a.txt", "index_name": name})
            assert one.status_code == 404 and name in one.json()["detail"], one.text
        assert await registered(store, unknown) == []
        real = f"{store_settings.collection}_real"
        answer = await dataprep.ingest(("a.txt", b"the only other collection"), index_name=real)
        assert answer.status_code == 200, answer.text  # the slot was still free
        assert await registered(store, [real]) == [real, table_names(real)[0]]
        full = await dataprep.ingest(("a.txt", b"one collection too many"), index_name=unknown[0])
        assert full.status_code == 400 and "DATAPREP_MAX_COLLECTIONS" in full.json()["detail"]


# -- get and delete -------------------------------------------------------------------------------


async def test_delete_one_file_then_all(dataprep, store):
    for name in ("a.txt", "b.txt", "c.txt"):
        assert (await dataprep.ingest((name, f"file {name} holds words".encode()))).status_code == 200
    answer = await dataprep.delete({"file_path": "b.txt"})
    assert answer.status_code == 200 and answer.json()["status"] is True
    assert sorted(f["name"] for f in await dataprep.get()) == ["a.txt", "c.txt"]
    assert {hit.source for hit in await stored_chunks(store)} == {"a.txt", "c.txt"}
    missing = await dataprep.delete({"file_path": "b.txt"})
    assert missing.status_code == 404 and "b.txt" in missing.json()["detail"]
    assert (await dataprep.delete({"file_path": "all"})).status_code == 200
    assert await dataprep.get() == []
    assert await store.count() == 0


@pytest.mark.parametrize("body", [{}, {"file_path": ""}, {"file_path": 3}, ["a.txt"]])
async def test_delete_needs_a_file_path(dataprep, body):
    answer = await dataprep.delete(body)
    assert answer.status_code == 400
    assert "file_path" in answer.json()["detail"] or "JSON object" in answer.json()["detail"]


async def test_get_accepts_opea_bodies(dataprep):
    await dataprep.ingest(("x.txt", b"hello there"))
    for body in (None, {}, {"index_name": "all"}):
        answer = await dataprep.client.post("/v1/dataprep/get", json=body)
        assert answer.status_code == 200 and [f["name"] for f in answer.json()] == ["x.txt"]
    assert (await dataprep.client.post("/v1/dataprep/get", content=b"{nope")).status_code == 400


# -- bad input: a clear 4xx, and nothing stored -----------------------------------------------------


BAD_INPUTS = [
    pytest.param({"files": [("empty.txt", b"")]}, 400, "empty.txt: the file is empty", id="empty-file"),
    pytest.param({"files": [("blank.md", b"  \n\n  ")]}, 400, "blank.md: the file is empty", id="blank-file"),
    pytest.param({"files": [("nothing.json", b'{"a": null}')]}, 400, "no text found", id="no-text"),
    pytest.param({"files": [("nulls.json", b"[null, null]")]}, 400, "no text found", id="list-of-nulls"),
    pytest.param({"files": [("virus.exe", b"MZ\x90\x00")]}, 415, "virus.exe: unsupported file type", id="unsupported"),
    pytest.param({"files": [("nul.txt", b"abc\x00def")]}, 400, "nul.txt: binary data, not text", id="nul-bytes"),
    pytest.param({"files": [("../../etc/passwd.txt", b"x")]}, 400, "'..' part", id="dot-dot"),
    pytest.param({"files": [("/etc/passwd.txt", b"x")]}, 400, "absolute path", id="absolute"),
    pytest.param({"files": [("C:/x.txt", b"x")]}, 400, "'C:/x.txt' is an absolute path", id="drive"),
    # report D5: the multipart parser cut these two to "x.txt" (python-multipart's IE6 workaround)
    pytest.param({"files": [("C:\\x.txt", b"x")]}, 400, "'C:\\\\x.txt' is an absolute path", id="drive-backslash"),
    pytest.param({"files": [("\\\\host\\share\\x.txt", b"x")]}, 400, "is an absolute path", id="unc"),
    pytest.param({"files": [("a.txt", b"x"), ("a.txt", b"y")]}, 400, "sent twice", id="twice"),
    pytest.param({"files": [("ok.txt", b"fine text"), ("bad.pdf", b"not a pdf")]}, 400, "bad.pdf", id="one-bad"),
    pytest.param({"fields": {"link_list": "https://example.org"}}, 400, "JSON list of URLs", id="links-not-json"),
    pytest.param({"fields": {"link_list": '{"a": 1}'}}, 400, "JSON list of URLs", id="links-not-list"),
    pytest.param({"fields": {"link_list": '["ftp://example.org/x"]'}}, 400, "not an http(s) URL", id="links-ftp"),
    pytest.param({"fields": {"link_list": '["http://127.0.0.1:1/x"]'}}, 400, "non-public address", id="loopback"),
    pytest.param({"fields": {"link_list": '["http://10.1.2.3/x"]'}}, 400, "non-public address", id="private"),
    pytest.param({"fields": {"link_list": '["http://169.254.169.254/latest"]'}}, 400, "non-public", id="metadata"),
    pytest.param({"fields": {"link_list": '["http://[::1]/x"]'}}, 400, "non-public address", id="ipv6-loopback"),
    pytest.param({"fields": {"link_list": '["http://localhost/x"]'}}, 400, "non-public address", id="localhost"),
    pytest.param(
        {"files": [("ok.txt", b"text")], "fields": {"link_list": '["http://192.168.0.1/"]'}},
        400,
        "non-public address",
        id="file-and-private-link",
    ),
    pytest.param({"fields": {"chunk_size": "0"}, "files": [("a.txt", b"x")]}, 400, "chunk_size", id="size-0"),
    pytest.param({"fields": {"chunk_size": "big"}, "files": [("a.txt", b"x")]}, 400, "integer", id="size-text"),
    pytest.param(
        {"fields": {"chunk_size": "100", "chunk_overlap": "100"}, "files": [("a.txt", b"x")]},
        400,
        "chunk_overlap",
        id="overlap",
    ),
    pytest.param({"fields": {"files": "not a file"}}, 400, "must be file uploads", id="files-as-text"),
    pytest.param({}, 400, "send `files`", id="nothing"),
    pytest.param({"fields": {"index_name": "no spaces!"}, "files": [("a.txt", b"x")]}, 400, "index_name", id="index"),
    pytest.param({"fields": {"index_name": "all"}, "files": [("a.txt", b"x")]}, 400, "index_name", id="index-all"),
]


@pytest.mark.parametrize(("request_", "status", "message"), BAD_INPUTS)
async def test_bad_input_is_a_clear_4xx_and_nothing_is_stored(dataprep, store, request_, status, message):
    uploads = [("files", (name, data, "application/octet-stream")) for name, data in request_.get("files", [])]
    answer = await dataprep.client.post("/v1/dataprep/ingest", files=uploads or None, data=request_.get("fields", {}))
    assert answer.status_code == status, answer.text
    assert message in answer.json()["detail"]
    assert await dataprep.get() == []
    assert await store.count() == 0


async def test_a_json_body_to_ingest_is_told_to_send_a_form(dataprep, store):
    """Report D7: a JSON body was answered "send `files` ... or `link_list`", though it held `link_list`."""
    answer = await dataprep.client.post("/v1/dataprep/ingest", json={"link_list": ["https://example.org/x"]})
    assert answer.status_code == 400, answer.text
    detail = answer.json()["detail"]
    assert "takes a multipart/form-data body, not application/json" in detail
    assert "`link_list` (a form field holding a JSON list of URLs)" in detail
    assert await store.count() == 0


@pytest.mark.parametrize("filename", [b"C:\\x.txt", b"c:\\docs\\x.txt", b"C:\\\\x.txt"])
async def test_a_windows_absolute_name_is_refused_as_sent(dataprep, store, filename):
    """Report D5: `filename="C:\\x.txt"`, its backslash unescaped as curl and browsers send it, was stored as x.txt."""
    body = (
        b'--b0undary\r\nContent-Disposition: form-data; name="files"; filename="' + filename + b'"\r\n'
        b"Content-Type: text/plain\r\n\r\nsome text\r\n--b0undary--\r\n"
    )
    answer = await dataprep.client.post(
        "/v1/dataprep/ingest", content=body, headers={"content-type": "multipart/form-data; boundary=b0undary"}
    )
    assert answer.status_code == 400, answer.text
    assert "is an absolute path" in answer.json()["detail"] and "C:" in answer.json()["detail"].upper()
    assert await dataprep.get() == [] and await store.count() == 0


async def test_an_oversize_upload_is_413_and_nothing_is_stored(store_settings, store, minilm):
    settings = settings_for(store_settings, max_upload_bytes=10_000)
    async for dataprep in start(settings, load_embedder(settings, minilm=minilm)):
        small = await dataprep.ingest(("small.txt", b"a" * 100), ("big.txt", b"word " * 2_100))
        assert small.status_code == 413 and "big.txt" in small.json()["detail"]
        assert "10000" in small.json()["detail"]
        huge = await dataprep.ingest(("huge.txt", b"word " * 100_000))  # past the request's limit: refused unread
        assert huge.status_code == 413 and "larger than" in huge.json()["detail"]
        assert await dataprep.get() == []
    assert await store.count() == 0


async def test_too_many_chunks_is_413(store_settings, store, minilm):
    settings = settings_for(store_settings, max_chunks=50)
    async for dataprep in start(settings, load_embedder(settings, minilm=minilm)):
        answer = await dataprep.ingest(("many.txt", prose(20_000).encode()), chunk_size="100", chunk_overlap="0")
        assert answer.status_code == 413 and "more than the 50" in answer.json()["detail"]
    assert await store.count() == 0


# -- links ----------------------------------------------------------------------------------------


def pages_app() -> Starlette:
    pdf = make_pdf(["A linked PDF about volcanoes.", "Its second page talks about lava."])

    async def html(request: Request) -> Response:
        return Response(
            b"<html><title>Tides</title><p>The moon pulls the tides twice a day.</p></html>",
            200,
            media_type="text/html; charset=utf-8",
        )

    async def pdf_file(request: Request) -> Response:
        return Response(pdf, media_type="application/pdf")

    async def moved(request: Request) -> Response:
        return Response(status_code=301, headers={"location": "/tides"})

    async def missing(request: Request) -> Response:
        return Response(b"no", status_code=404)

    async def binary(request: Request) -> Response:
        return Response(b"\x00\x01", media_type="application/octet-stream")

    return Starlette(
        routes=[
            Route("/tides", html),
            Route("/volcano", pdf_file),
            Route("/moved", moved),
            Route("/missing", missing),
            Route("/blob", binary),
        ]
    )


async def test_links_are_fetched_read_and_stored(store_settings, store, minilm, upstream_client):
    settings = settings_for(store_settings, allow_private_urls=True)  # the test's pages are on 127.0.0.1
    async with serve(pages_app()) as site:
        async for dataprep in start(settings, load_embedder(settings, minilm=minilm)):
            links = [f"{site}/tides", f"{site}/volcano"]
            answer = await dataprep.ingest(link_list=links)
            assert answer.status_code == 200, answer.text
            assert sorted(f["name"] for f in await dataprep.get()) == sorted(links)
            tides = await stored_chunks(store, links[0])
            assert tides[0].metadata["url"] == links[0] and tides[0].metadata["title"] == "Tides"
            lava = [hit for hit in await stored_chunks(store, links[1]) if "lava" in hit.text]
            assert lava and lava[0].metadata.get("page_end", lava[0].metadata["page"]) == 2
            for path, status, message in [
                ("/moved", 400, "redirects are not followed"),
                ("/missing", 400, "answered HTTP 404"),
                ("/blob", 415, "does not read"),
            ]:
                refused = await dataprep.ingest(link_list=[site + path])
                assert refused.status_code == status and message in refused.json()["detail"], refused.text
            assert len(await dataprep.get()) == 2


async def test_private_links_are_refused_by_default_even_when_they_answer(dataprep, store, upstream_client):
    async with serve(pages_app()) as site:
        answer = await dataprep.ingest(link_list=[f"{site}/tides"])
    assert answer.status_code == 400 and "non-public address" in answer.json()["detail"]
    assert await store.count() == 0


# -- through the embedding service ------------------------------------------------------------------


@pytest.mark.parametrize("variable", ["TEI_EMBEDDING_ENDPOINT", "EMBEDDING_ENDPOINT"])
async def test_embedding_through_the_embedding_service_matches_in_process(
    store_settings, store, minilm, upstream_client, variable
):
    from megaservice.components.embedding import (
        EmbeddingSettings,
        create_service as embedding_service,
        load_backend as embedding_backend,
    )

    embedding_settings = EmbeddingSettings()
    embedding = embedding_service(embedding_settings, embedding_backend(embedding_settings, model=minilm))
    async with serve(embedding.app) as url:
        async with httpx.AsyncClient(base_url=url) as probe:
            await wait_ready(probe)
        settings = DataprepSettings.from_env({variable: url}, base=settings_for(store_settings))
        embedder = load_embedder(settings)
        assert embedder.name == ("tei" if variable.startswith("TEI") else "openai")
        async for dataprep in start(settings, embedder):
            text = "Geothermal heat warms the greenhouse through the winter."
            assert (await dataprep.ingest(("heat.txt", text.encode()))).status_code == 200
            assert embedder.model_id == MODEL_ID  # from TEI's /info, or the OpenAI answer's model
    hits = await store.search(minilm.embed([text])[0], k=1)
    assert hits[0].text == text and hits[0].distance == pytest.approx(0.0, abs=1e-5)
    assert store.collection is not None and store.collection.model == MODEL_ID
