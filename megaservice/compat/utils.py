"""`comps.cores.mega.utils`: OPEA's helpers, reimplemented."""

import json
import socket
from typing import Any

from megaservice.messages import handle_message

__all__ = [
    "ConfigError",
    "SafeContextManager",
    "check_ports_availability",
    "get_access_token",
    "handle_message",
    "is_port_free",
    "load_model_configs",
    "sanitize_env",
]


def is_port_free(host: str, port: int) -> bool:
    """Return whether nothing accepts connections at `host:port`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex((host, port)) != 0


def check_ports_availability(host: str | list[str], port: int | list[int]) -> bool:
    """Return whether every host/port pair is free."""
    hosts = host if isinstance(host, list) else [host]
    ports = port if isinstance(port, list) else [port]
    return all(is_port_free(h, p) for h in hosts for p in ports)


class ConfigError(Exception):
    """A model configuration is invalid."""


def load_model_configs(model_configs: str) -> dict[str, Any]:
    """Parse `MODEL_CONFIGS` (a JSON list) into `{model_name: config}`, checking the required keys."""
    try:
        configs = json.loads(model_configs)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"MODEL_CONFIGS is not valid JSON: {exc}") from exc
    required = ("model_name", "displayName", "endpoint", "minToken", "maxToken")
    result = {}
    for config in configs:
        missing = [key for key in required if not config.get(key)]
        if missing:
            raise ConfigError(f"model config is missing {missing}: {config}")
        result[config["model_name"]] = config
    return result


def get_access_token(token_url: str, client_id: str, client_secret: str) -> str:
    """Fetch an OAuth client-credentials token; `""` on failure (OPEA's contract). Blocking: call at startup."""
    import http.client
    from urllib.parse import urlencode, urlsplit

    parts = urlsplit(token_url)
    connection_type = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    body = urlencode({"client_id": client_id, "client_secret": client_secret, "grant_type": "client_credentials"})
    connection = connection_type(parts.netloc, timeout=10)
    try:
        connection.request("POST", parts.path, body, {"Content-Type": "application/x-www-form-urlencoded"})
        response = connection.getresponse()
        if response.status != 200:
            return ""
        return str(json.loads(response.read()).get("access_token", ""))
    except (OSError, ValueError):
        return ""
    finally:
        connection.close()


class SafeContextManager:
    """Wrap a context manager so that errors on exit are logged instead of raised."""

    def __init__(self, resource: Any) -> None:
        self.resource = resource

    def __enter__(self) -> Any:
        return self.resource.__enter__()

    def __exit__(self, *exc: Any) -> None:
        try:
            self.resource.__exit__(*exc)
        except Exception:  # OPEA's contract: exit errors are reported, not raised
            import logging

            logging.getLogger(__name__).exception("error while closing %r", self.resource)


def sanitize_env(value: str | None) -> str | None:
    """Strip one pair of surrounding quotes from a configuration value."""
    if value is None:
        return None
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value
