"""uvicorn glue: bind sockets ourselves, serve on them, and keep health probes out of the access log."""

import logging
import socket

__all__ = ["HealthCheckFilter", "bind_socket"]

QUIET_PATHS = ("/v1/health_check", "/v1/health", "/health", "/v1/ready", "/metrics")


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind a listening TCP socket the way uvicorn does (`RuntimeError` naming the port if it is taken)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    bind_host = "127.0.0.1" if host == "localhost" else host
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((bind_host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise RuntimeError(f"port:{port} cannot be bound on {host}: {exc.strerror}") from exc
    sock.set_inheritable(True)
    return sock


class HealthCheckFilter(logging.Filter):
    """Drop access-log lines of health, readiness and metrics probes (OPEA drops `/v1/health_check`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            return not args[2].startswith(QUIET_PATHS)
        return True
