"""The direct path: a client cannot tell a route served straight from one served through FastAPI."""

import datetime
import uuid
from typing import Any

import httpx
import pytest
from fastapi import Request
from fastapi.responses import PlainTextResponse, Response
from pydantic import BaseModel

from megaservice import MicroService, TextDoc

pytestmark = pytest.mark.anyio


class Answer(BaseModel):
    text: str
    at: datetime.date


async def _dict(request: Request) -> dict[Any, Any]:
    return {"echo": (await request.json())["q"], 1: "non-string key"}


async def _model(request: Request) -> dict[str, object]:
    return {"answer": Answer(text="a", at=datetime.date(2026, 1, 2)), "id": uuid.UUID(int=1)}


async def _document() -> TextDoc:
    return TextDoc(text="a document", id="d1")


async def _response(request: Request) -> Response:
    return PlainTextResponse("plain", status_code=201)


async def _nothing(request: Request) -> None:
    return None


@pytest.mark.parametrize("handler", [_dict, _model, _document, _response, _nothing])
async def test_the_direct_path_answers_what_fastapi_answers(handler) -> None:
    service = MicroService("direct", port=0)
    service.add_route("/v1/answer", handler)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=service.app), base_url="http://t") as client:
        direct = await client.post("/v1/answer", json={"q": "hi"})
        through_fastapi = await client.post("/v1/answer", json={"q": "hi"}, headers={"Origin": "http://ui"})  # CORS
    assert direct.status_code == through_fastapi.status_code
    assert direct.content == through_fastapi.content
    assert direct.headers["content-type"] == through_fastapi.headers["content-type"]
    assert direct.headers["content-length"] == through_fastapi.headers["content-length"]


async def test_a_middleware_added_later_sees_every_request() -> None:
    service = MicroService("watched", port=0)
    seen: list[str] = []

    @service.app.middleware("http")
    async def record(request: Request, call_next):
        seen.append(request.url.path)
        return await call_next(request)

    service.add_route("/v1/answer", _dict)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=service.app), base_url="http://t") as client:
        answer = await client.post("/v1/answer", json={"q": "hi"})
    assert answer.json() == {"echo": "hi", "1": "non-string key"}
    assert seen == ["/v1/answer"]
