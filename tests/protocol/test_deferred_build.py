"""Documents build their validators on first use: a service holds only those of the documents it uses.

Every document used by a route is built before FastAPI analyses the route (a deferred body model
would make pydantic warn at the first request, and warnings are errors here).
"""

import subprocess
import sys
import textwrap

import pytest
from fastapi import Depends
from pydantic import Field

from megaservice import BaseDoc, MicroService
from megaservice.testing import client_for

pytestmark = pytest.mark.anyio


class Query(BaseDoc):
    text: str


class Answer(BaseDoc):
    text: str
    sources: list[Query] = Field(default_factory=list)


class Filter(BaseDoc):
    tag: str = "any"


def built(model: type[BaseDoc]) -> bool:
    return model.__pydantic_complete__


def test_a_document_is_built_on_first_use_only():
    class Late(BaseDoc):
        value: int

    assert not built(Late)
    assert Late(value=1).value == 1
    assert built(Late)


async def test_a_route_taking_and_returning_documents_answers_without_warnings():
    service = MicroService("deferred", port=0)

    async def handle(request: Query) -> Answer:
        return Answer(text=request.text.upper(), sources=[request])

    assert not built(Query)
    service.add_route("/v1/ask", handle)
    assert built(Query) and built(Answer)  # built when the route was added
    async with client_for(service.app) as client:
        response = await client.post("/v1/ask", json={"text": "hi"})
        invalid = await client.post("/v1/ask", json={"txt": "hi"})
    assert response.status_code == 200
    assert response.json()["text"] == "HI"
    assert response.json()["sources"][0]["text"] == "hi"
    assert invalid.status_code == 422


async def test_a_document_in_a_dependency_is_built_too():
    service = MicroService("deferred-dependency", port=0)

    class Scoped(BaseDoc):
        scope: str

    async def scope(body: Scoped) -> str:
        return body.scope

    @service.app.post("/v1/scoped")
    async def handle(value: str = Depends(scope)) -> dict[str, str]:
        return {"scope": value}

    assert built(Scoped)
    async with client_for(service.app) as client:
        response = await client.post("/v1/scoped", json={"scope": "team"})
    assert response.json() == {"scope": "team"}


def test_a_megaservice_builds_none_of_the_documents_it_does_not_use():
    script = textwrap.dedent(
        """
        from megaservice import LLMParams, MicroService, ServiceRoleType, TextDoc, protocol
        from megaservice.protocol import docs

        async def handle(request: TextDoc) -> TextDoc:
            return request

        service = MicroService("gateway", service_role=ServiceRoleType.MEGASERVICE, port=0)
        service.add_route("/v1/chat", handle)
        LLMParams(stream=False)
        built = sorted(
            name for name, value in vars(docs).items()
            if isinstance(value, type) and issubclass(value, protocol.BaseDoc) and value.__pydantic_complete__
        )
        print(" ".join(built))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["LLMParams", "TextDoc"]
