"""The OpenAPI schema: JSON bodies of handlers that read their `Request` themselves, documented by model."""

import pytest
from fastapi import Request
from pydantic import BaseModel

from megaservice import HTTPService, Settings
from megaservice.testing import client_for

pytestmark = pytest.mark.anyio


class Question(BaseModel):
    text: str
    top_k: int = 4


async def test_a_body_model_documents_a_route_that_reads_its_request() -> None:
    service = HTTPService(runtime_args={"title": "docs", "port": 0}, settings=Settings())

    async def ask(request: Request) -> dict[str, str]:
        return {}

    service.add_route("/v1/ask", ask, body_model=Question)
    service.add_route("/v1/ask_lazily", ask, body_model="tests._serving.test_openapi:Question")
    async with client_for(service.app) as client:
        schema = (await client.get("/openapi.json")).json()
    for path in ("/v1/ask", "/v1/ask_lazily"):
        body = schema["paths"][path]["post"]["requestBody"]
        assert body["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Question"}
    assert schema["components"]["schemas"]["Question"]["required"] == ["text"]
