"""Admission: what a request must pass before a handler runs, and the answers of those that do not.

    no or wrong key (`Limits.api_keys`)           401, `WWW-Authenticate: Bearer`
    Content-Length over `max_body_bytes`          413 at once
    a body without a length that grows past it    413 while it arrives (`limited`)
    a Content-Length that is not a number         400
    `max_inflight` requests already in flight     503, `Retry-After` (`refuse_busy`)

The probes (`megaservice.limits.PROBE_PATHS`, or whatever `Limits.public_paths` says) and
`OPTIONS` requests are public: they need no key and are not counted as in flight. A refusal is
written straight to the server: no handler, no FastAPI. Its body is `{"detail": ...}`, and for a
4xx OpenAI's `error` object too, as the chat routes' other refusals have.
"""

import orjson
from starlette.types import Message, Receive, Scope, Send

from megaservice._serving.disconnect import Exchange
from megaservice.exceptions import InputError
from megaservice.limits import Limits

__all__ = ["admit", "limited", "refuse", "refuse_busy"]

_ORIGIN = b"origin"
_JSON_HEADER = (b"content-type", b"application/json")


async def admit(
    limits: Limits, scope: Scope, receive: Receive, exchange: Exchange
) -> tuple[Receive, bool, bool] | None:
    """Check the key and the body size; `(receive, has Origin, is public)`, or `None` once refused.

    The declared body length is kept on the exchange, for the metrics.
    """
    send = exchange.send
    origin = False
    length = credential = None
    for name, value in scope["headers"]:
        if name == _ORIGIN:
            origin = True
        elif name == b"content-length":
            length = value
            exchange.request_bytes = int(value) if value.isdigit() else 0
        elif name in (b"authorization", b"x-api-key"):
            credential = value
    public = scope["path"] in limits.public_paths or scope["method"] == "OPTIONS"
    if limits.api_keys and not public and not limits.authorized(credential):
        await refuse(send, 401, "missing or invalid API key", [(b"www-authenticate", b"Bearer")])
        return None
    if limits.max_body_bytes is not None:
        if length is None:
            if scope["method"] not in ("GET", "HEAD", "OPTIONS"):
                receive = limited(receive, limits.max_body_bytes)
        elif not length.isdigit():
            await refuse(send, 400, "invalid Content-Length")
            return None
        elif int(length) > limits.max_body_bytes:
            await refuse(send, 413, f"request body larger than {limits.max_body_bytes} bytes")
            return None
    return receive, origin, public


def limited(receive: Receive, limit: int) -> Receive:
    """`receive`, raising `InputError` (413) once the body passes `limit` bytes (bodies without a length)."""
    seen = 0

    async def limited() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise InputError(f"request body larger than {limit} bytes", status_code=413)
        return message

    return limited


async def refuse_busy(send: Send, limits: Limits, inflight: int) -> None:
    """Answer 503: `inflight` requests are in flight already, the most `limits` allow."""
    retry = [(b"retry-after", str(limits.retry_after).encode())]
    await refuse(send, 503, f"busy: {inflight} requests in flight, try again later", retry)


async def refuse(send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """Answer `status` with `{"detail": detail}` (a 4xx: and OpenAI's `error`) and `headers`, straight to the server."""
    content: dict[str, object] = {"detail": detail}
    if status < 500:  # OpenAI's clients show its message (the chat routes' other 4xx have it too)
        content["error"] = {"message": detail, "type": "invalid_request_error", "param": None, "code": None}
    body = orjson.dumps(content)
    raw = [(b"content-length", str(len(body)).encode()), _JSON_HEADER, *(headers or [])]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
