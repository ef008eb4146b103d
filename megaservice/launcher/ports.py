"""Ports a pipeline needs, checked before anything starts: a taken port is named with its service."""

import errno
import socket
from collections.abc import Iterable

__all__ = ["port_taken", "taken_ports"]


def port_taken(host: str, port: int) -> bool:
    """Whether something already listens on (or holds) `host:port`."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise
    return False


def taken_ports(wanted: Iterable[tuple[str, str, int]]) -> list[tuple[str, int]]:
    """`(service, port)` of each `(service, host, port)` in `wanted` whose port is taken."""
    return [(service, port) for service, host, port in wanted if port_taken(host, port)]
