"""`MicroService` in its two roles (a local service, a remote node) and OPEA's registry."""

import socket
from typing import Any

import pytest

from megaservice import (
    ConfigurationError,
    MicroService,
    ServiceRoleType,
    ServiceType,
    TextDoc,
    opea_microservices,
    register_microservice,
)
from megaservice.protocol import LLMParamsDoc
from megaservice.resilience import CircuitBreaker, Retry, Timeout
from megaservice.testing import client_for

pytestmark = pytest.mark.anyio


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


ARGUMENTS: dict[str, Any] = {
    "name": "llm",
    "service_role": ServiceRoleType.MICROSERVICE,
    "service_type": ServiceType.LLM,
    "protocol": "http",
    "host": "llm-host",
    "port": 9009,
    "endpoint": "/v1/chat/completions",
    "input_datatype": LLMParamsDoc,
    "output_datatype": TextDoc,
    "provider": "vllm",
    "provider_endpoint": "http://vllm:8000",
    "description": "the LLM",
    "dynamic_batching_timeout": 2,
    "timeout": 30,
    "retry": Retry(attempts=2),
    "breaker": CircuitBreaker(failures=3),
}

# What OPEA code, an orchestrator and megaservice users read of a node: in both roles, and equal
# in both for the same arguments.
NODE_ATTRIBUTES = [
    "name",
    "service_role",
    "service_type",
    "protocol",
    "host",
    "port",
    "endpoint",
    "api_key",
    "api_key_value",
    "input_datatype",
    "output_datatype",
    "description",
    "title",
    "provider",
    "provider_endpoint",
    "endpoints",
    "timeout",
    "retry",
    "breaker",
    "fallback",
    "dynamic_batching",
    "dynamic_batching_timeout",
    "dynamic_batching_max_batch_size",
    "enable_mcp",
    "mcp",
    "server",
    "started",
    "primary_port",
    "all_ports",
    "protocols",
    "host_address",
]

# What serves a local service: a remote node is served elsewhere, and says so.
LOCAL_ONLY = ["app", "settings", "limits", "uvicorn_kwargs", "cors", "buffer_lock", "request_buffer", "bound_port"]


def both_roles(**changes: Any) -> tuple[MicroService, MicroService]:
    arguments = {**ARGUMENTS, **changes}
    return MicroService(**arguments), MicroService(**arguments, use_remote_service=True)


@pytest.mark.parametrize("attribute", NODE_ATTRIBUTES)
def test_a_remote_node_and_a_local_service_agree_on_every_node_attribute(attribute: str) -> None:
    local, remote = both_roles()
    assert getattr(remote, attribute) == getattr(local, attribute)


def test_both_roles_call_the_same_url_and_describe_the_same_address() -> None:
    local, remote = both_roles()
    assert remote.endpoint_path() == local.endpoint_path() == "http://llm-host:9009/v1/chat/completions"
    assert (
        vars(remote.runtime_args)
        == vars(local.runtime_args)
        == {
            "protocol": "http",
            "host": "llm-host",
            "port": 9009,
            "title": "llm",
            "description": "the LLM",
        }
    )
    assert remote.use_remote_service and not local.use_remote_service
    assert remote.timeout == local.timeout == Timeout(total=30)


@pytest.mark.parametrize("attribute", LOCAL_ONLY)
def test_a_remote_node_says_it_is_one_when_asked_for_what_serves(attribute: str) -> None:
    local, remote = both_roles()
    getattr(local, attribute)
    with pytest.raises(AttributeError, match=r"llm/MicroService is a remote node \(use_remote_service=True\)"):
        getattr(remote, attribute)


@pytest.mark.parametrize("call", ["start", "stop", "add_route", "add_startup_event", "on_shutdown"])
def test_serving_a_remote_node_fails_saying_it_is_one(call: str) -> None:
    _, remote = both_roles()

    async def handler() -> dict[str, str]:
        return {}

    arguments = {"add_route": ("/v1/x", handler), "add_startup_event": (handler,), "on_shutdown": (handler,)}
    with pytest.raises(AttributeError, match="remote node"):
        getattr(remote, call)(*arguments.get(call, ()))


def test_every_public_attribute_of_a_local_service_is_on_a_remote_node_or_local_only() -> None:
    local, remote = both_roles()
    missing = []
    for attribute in (name for name in dir(local) if not name.startswith("_")):
        try:
            getattr(remote, attribute)
        except AttributeError as exc:
            assert "remote node" in str(exc)
            missing.append(attribute)
    assert sorted(missing) == sorted(LOCAL_ONLY)


def test_a_missing_attribute_is_still_an_ordinary_attribute_error() -> None:
    local, remote = both_roles()
    for service in (local, remote):
        with pytest.raises(AttributeError, match="'MicroService' object has no attribute 'endpiont'"):
            service.endpiont  # type: ignore[attr-defined]  # noqa: B018


def test_name_is_suffixed_like_opea() -> None:
    service = MicroService("embedding", use_remote_service=True, service_type=ServiceType.EMBEDDING)
    assert service.name == "embedding/MicroService"

    class Embedder(MicroService):
        pass

    assert Embedder("embedding").name == "embedding/Embedder"


def test_endpoint_path_follows_opea_rules() -> None:
    plain = MicroService("llm", host="llm-host", port=9009, endpoint="/v1/chat/completions", use_remote_service=True)
    assert plain.endpoint_path() == "http://llm-host:9009/v1/chat/completions"
    keyed = MicroService(
        "llm", host="https://api.example.com", endpoint="/v1/chat/completions", api_key="k", use_remote_service=True
    )
    assert keyed.endpoint_path("gpt") == "https://api.example.com/v1/chat/completions"
    assert keyed.api_key_value == "k"


def test_a_remote_node_has_no_mcp_server_even_if_asked() -> None:
    remote = MicroService("tools", enable_mcp=True, use_remote_service=True)
    assert remote.enable_mcp
    assert remote.mcp is None


def test_the_limits_arguments_override_the_settings() -> None:
    service = MicroService("s", port=0, max_inflight=3, max_body_bytes=10, auth_keys=["k"])
    assert (service.limits.max_inflight, service.limits.max_body_bytes, service.limits.api_keys) == (3, 10, ("k",))


def test_tls_files_become_uvicorn_options() -> None:
    service = MicroService("s", port=0, ssl_keyfile="key.pem", ssl_certfile="cert.pem")
    assert service.uvicorn_kwargs == {"ssl_keyfile": "key.pem", "ssl_certfile": "cert.pem"}
    assert MicroService("t", port=0).uvicorn_kwargs == {}


def test_constructing_a_service_binds_nothing() -> None:
    port = free_port()
    MicroService("a", host="127.0.0.1", port=port)
    MicroService("b", host="127.0.0.1", port=port)  # OPEA would raise: its constructor binds the port
    assert port_is_free(port)


async def test_a_megaservice_chat_route_reading_its_request_documents_a_chat_completion_body() -> None:
    from fastapi import Request

    service = MicroService("gateway", service_role=ServiceRoleType.MEGASERVICE, port=0, endpoint="/v1/chatqna")

    async def handle(request: Request) -> dict[str, str]:
        return {}

    service.add_route("/v1/chatqna", handle)
    service.add_route("/v1/other", handle)
    async with client_for(service.app) as client:
        schema = (await client.get("/openapi.json")).json()
    body = schema["paths"]["/v1/chatqna"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/ChatCompletionRequest"}
    assert "messages" in schema["components"]["schemas"]["ChatCompletionRequest"]["properties"]
    assert "requestBody" not in schema["paths"]["/v1/other"]["post"]


async def test_register_microservice_adds_routes_to_the_same_service() -> None:
    port = free_port()

    @register_microservice(name="test-registry", host="127.0.0.1", port=port, endpoint="/v1/one")
    async def one(request: TextDoc) -> TextDoc:
        return TextDoc(text=f"one:{request.text}")

    @register_microservice(name="test-registry", port=1, endpoint="/v1/two", methods=["GET"])
    async def two() -> dict[str, int]:
        return {"two": 2}

    try:
        service = opea_microservices["test-registry"]
        assert service.port == port
        assert service.service_type == ServiceType.UNDEFINED  # the decorator's default, not the constructor's
        async with client_for(service.app) as client:
            first = await client.post("/v1/one", json={"text": "x"})
            second = await client.get("/v1/two")
        assert first.json()["text"] == "one:x"
        assert second.json() == {"two": 2}
    finally:
        del opea_microservices["test-registry"]


def test_register_microservice_returns_the_handler_unchanged() -> None:
    async def handler(request: TextDoc) -> TextDoc:
        return request

    try:
        assert register_microservice(name="test-unchanged", port=0, endpoint="/v1/x")(handler) is handler
    finally:
        del opea_microservices["test-unchanged"]


def test_mcp_on_a_later_registration_needs_it_on_the_first() -> None:
    async def handler(request: TextDoc) -> TextDoc:
        return request

    register_microservice(name="test-no-mcp", port=0, endpoint="/v1/a")(handler)
    try:
        with pytest.raises(ConfigurationError, match="enable_mcp"):
            register_microservice(name="test-no-mcp", endpoint="/v1/b", enable_mcp=True)(handler)
    finally:
        del opea_microservices["test-no-mcp"]
