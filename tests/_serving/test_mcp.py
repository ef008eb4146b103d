"""MCP on a microservice (`enable_mcp=True`): its handlers as MCP tools, over SSE, on the service's own port."""

import json

import anyio
import pytest
from mcp.client.session import ClientSession
from mcp.client.sse import sse_client
from pydantic import AnyUrl

from megaservice import MicroService, TextDoc, opea_microservices, register_microservice
from megaservice.constants import MCPFuncType
from megaservice.exceptions import ConfigurationError
from megaservice.testing import client_for, serve

pytestmark = pytest.mark.anyio


async def test_registered_handlers_are_mcp_tools_next_to_the_http_routes() -> None:
    @register_microservice(
        name="mcp-echo", host="127.0.0.1", port=1, endpoint="/v1/echo", enable_mcp=True, description="append"
    )
    async def mcp_echo(request: TextDoc) -> dict[str, str]:
        return {"text": f"{request.text}OPEA Project MCP!"}

    @register_microservice(name="mcp-echo", endpoint="/v1/sum", enable_mcp=True, description="one plus one")
    async def mcp_sum() -> int:
        return 1 + 1

    service = opea_microservices["mcp-echo"]
    try:
        with anyio.fail_after(10):
            async with serve(service.app) as url, sse_client(url + "/sse") as streams, ClientSession(*streams) as mcp:
                info = await mcp.initialize()
                tools = {tool.name: tool.description for tool in (await mcp.list_tools()).tools}
                echoed = await mcp.call_tool("mcp_echo", {"request": {"text": "Hello "}})
                summed = await mcp.call_tool("mcp_sum")
        async with client_for(service.app) as client:
            http = await client.post("/v1/echo", json={"text": "Hi "})
    finally:
        del opea_microservices["mcp-echo"]
    assert info.serverInfo.name == "mcp-echo"
    assert tools == {"mcp_echo": "append", "mcp_sum": "one plus one"}
    assert json.loads(echoed.content[0].text)["text"] == "Hello OPEA Project MCP!"
    assert summed.content[0].text == "2"
    assert http.json() == {"text": "Hi OPEA Project MCP!"}


async def test_resources_and_prompts_are_registered_by_kind() -> None:
    async def greeting() -> str:
        return "hello from a resource"

    async def ask(topic: str) -> str:
        return f"Tell me about {topic}."

    service = MicroService(
        "mcp-kinds", host="127.0.0.1", enable_mcp=True, func=greeting, mcp_func_type=MCPFuncType.RESOURCE
    )
    assert service.mcp is not None
    service.mcp.register(ask, MCPFuncType.PROMPT, "a question")
    with anyio.fail_after(10):
        async with serve(service.app) as url, sse_client(url + "/sse") as streams, ClientSession(*streams) as mcp:
            await mcp.initialize()
            resource = await mcp.read_resource(AnyUrl("resource://greeting"))
            prompts = [prompt.name for prompt in (await mcp.list_prompts()).prompts]
            prompt = await mcp.get_prompt("ask", {"topic": "pgvector"})
    assert resource.contents[0].text == "hello from a resource"
    assert prompts == ["ask"]
    assert prompt.messages[0].content.text == "Tell me about pgvector."


async def test_mcp_needs_the_service_to_be_created_with_it() -> None:
    @register_microservice(name="mcp-late", host="127.0.0.1", port=1, endpoint="/v1/a")
    async def plain(request: TextDoc) -> TextDoc:
        return request

    try:
        with pytest.raises(ConfigurationError, match="enable_mcp"):

            @register_microservice(name="mcp-late", endpoint="/v1/b", enable_mcp=True)
            async def tool(request: TextDoc) -> TextDoc:
                return request
    finally:
        del opea_microservices["mcp-late"]
