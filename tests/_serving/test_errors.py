"""Where exceptions become answers: the same on the direct path and through FastAPI."""

import httpx
import pytest
from fastapi import HTTPException, Request
from pydantic import BaseModel

from megaservice import InputError, MicroService, UpstreamTimeout
from megaservice.testing import client_for

pytestmark = pytest.mark.anyio


async def test_input_error_becomes_its_status_with_a_detail():
    svc = MicroService("strict", port=0)

    async def picky(request: Request) -> dict[str, object]:
        raise InputError("field 'x' must be positive", status_code=422)

    svc.add_route("/v1/picky", picky, methods=["POST"])
    async with client_for(svc.app) as client:
        answer = await client.post("/v1/picky", content=b"{}")
    assert answer.status_code == 422
    assert answer.json() == {"detail": "field 'x' must be positive"}


async def test_a_body_that_is_not_json_is_a_400():
    svc = MicroService("json", port=0)

    async def parse(request: Request) -> dict[str, object]:
        return await request.json()

    svc.add_route("/v1/parse", parse, methods=["POST"])
    async with client_for(svc.app) as client:
        answer = await client.post("/v1/parse", content=b"{not json")
    assert answer.status_code == 400
    assert answer.json()["detail"].startswith("request body is not valid JSON")


async def _input(request: Request) -> dict[str, object]:
    raise InputError("too long", status_code=413)


async def _http(request: Request) -> dict[str, object]:
    raise HTTPException(404, "gone")


class Echo(BaseModel):
    text: str


async def _validation(request: Request) -> dict[str, object]:  # a handler validating the body itself
    return {"echo": Echo.model_validate({"txt": "x"})}


async def _upstream(request: Request) -> dict[str, object]:
    raise UpstreamTimeout("llm did not answer in time", node="llm/MicroService", url="http://llm:9000/v1")


async def _bug(request: Request) -> dict[str, object]:
    raise RuntimeError("a bug")


@pytest.mark.parametrize(
    ("handler", "status"), [(_input, 413), (_http, 404), (_validation, 422), (_upstream, 504), (_bug, 500)]
)
async def test_an_error_is_answered_alike_on_the_direct_path_and_through_fastapi(handler, status) -> None:
    service = MicroService("errors", port=0)
    service.add_route("/v1/fail", handler)
    transport = httpx.ASGITransport(app=service.app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        direct = await client.post("/v1/fail", content=b"{}")
        through_fastapi = await client.post("/v1/fail", content=b"{}", headers={"Origin": "http://ui"})  # CORS
    assert direct.status_code == through_fastapi.status_code == status
    assert direct.content == through_fastapi.content
    assert direct.headers["content-type"] == through_fastapi.headers["content-type"]


async def test_an_upstream_error_names_the_node() -> None:
    service = MicroService("gateway", port=0)
    service.add_route("/v1/chat", _upstream)
    async with client_for(service.app) as client:
        answer = await client.post("/v1/chat", content=b"{}")
    assert answer.status_code == 504
    assert answer.json() == {
        "object": "error",
        "type": "upstream_timeout",
        "message": "llm did not answer in time",
        "code": 504,
        "node": "llm/MicroService",
    }
