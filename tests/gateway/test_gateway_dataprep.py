"""`/v1/dataprep/*` on the megaservice: passed to the pipeline's dataprep, streamed, size-limited."""

import openai
import pytest

from megaservice.limits import Limits
from megaservice.settings import Settings
from megaservice.testing import KnowledgeBase
from tests.gateway.conftest import content, extra, run_stack

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("upstream_client")]

NOTE = "The Quillon bridge was painted orange in 1987 by the harbour guild."


async def test_an_uploaded_file_is_ingested_and_then_cited(stack):
    async with stack.client() as http:
        upload = await http.post("/v1/dataprep/ingest", files={"files": ("quillon.txt", NOTE.encode(), "text/plain")})
        listed = await http.post("/v1/dataprep/get", json={})
    assert upload.status_code == 200
    assert upload.json() == {"status": 200, "message": "Data preparation succeeded"}
    assert "quillon.txt" in [item["name"] for item in listed.json()]
    async with openai.AsyncOpenAI(base_url=f"{stack.url}/v1", api_key="x", max_retries=0) as client:
        completion = await client.chat.completions.create(
            model="chatqna", messages=[{"role": "user", "content": "What colour was the Quillon bridge painted?"}]
        )
    assert "orange" in content(completion)
    assert extra(completion)["sources"][0]["source"] == "quillon.txt"


async def test_delete_is_passed_on_and_dataprep_errors_come_back_as_they_are(stack):
    async with stack.client() as http:
        deleted = await http.post("/v1/dataprep/delete", json={"file_path": "garden.txt"})
        missing = await http.post("/v1/dataprep/delete", json={"file_path": "nope.txt"})
        binary = await http.post("/v1/dataprep/ingest", files={"files": ("x.bin", b"\xff\xfe\x00", "application/x")})
    assert deleted.json() == {"status": True}
    assert "garden.txt" not in stack.kb.files
    assert missing.status_code == 404 and "nope.txt" in missing.json()["detail"]
    assert binary.status_code == 400 and "x.bin" in binary.json()["detail"]


async def test_a_chunked_upload_is_streamed_through():
    kb = KnowledgeBase()
    async with run_stack(kb=kb) as stack, stack.client() as http:
        boundary = "b0undary"
        parts = [
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="big.txt"\r\n'
            "Content-Type: text/plain\r\n\r\n".encode(),
            *(f"Line {i} of a long file about the Quillon bridge.\n".encode() for i in range(2000)),
            f"\r\n--{boundary}--\r\n".encode(),
        ]

        async def body():
            for part in parts:
                yield part

        headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
        response = await http.post("/v1/dataprep/ingest", content=body(), headers=headers)
    assert response.status_code == 200, response.text
    assert len(kb.files["big.txt"]) > 10
    assert "Line 1999 of a long file" in kb.files["big.txt"][-1].text


async def test_an_upload_over_the_body_limit_is_a_413_and_dataprep_keeps_nothing():
    kb = KnowledgeBase()
    settings = Settings(limits=Limits(max_body_bytes=10_000))
    async with run_stack(kb=kb, settings=settings) as stack, stack.client() as http:
        declared = await http.post("/v1/dataprep/ingest", files={"files": ("a.txt", b"x" * 20_000, "text/plain")})

        async def body():
            yield b'--z\r\nContent-Disposition: form-data; name="files"; filename="b.txt"\r\n\r\n'
            for _ in range(40):
                yield b"y" * 1000

        chunked = await http.post(
            "/v1/dataprep/ingest", content=body(), headers={"content-type": "multipart/form-data; boundary=z"}
        )
    assert declared.status_code == 413
    assert chunked.status_code == 413
    assert "10000 bytes" in chunked.json()["detail"]
    assert kb.files == {}


async def test_dataprep_down_is_a_502_naming_it():
    async with run_stack(down=["dataprep"]) as stack, stack.client() as http:
        response = await http.post("/v1/dataprep/get", json={})
    assert response.status_code == 502
    assert response.json()["node"] == "dataprep"


async def test_a_pipeline_without_dataprep_has_no_dataprep_routes():
    async with run_stack() as stack:
        stack.pipeline.megaservice.dataprep = None
        from megaservice.gateway import create_gateway
        from megaservice.testing import serve

        async with serve(create_gateway(stack.pipeline, Settings()).app) as url:
            import httpx

            async with httpx.AsyncClient(base_url=url) as http:
                assert (await http.post("/v1/dataprep/get", json={})).status_code == 404
                page = (await http.get("/")).text
    assert '"dataprep":false' in page
