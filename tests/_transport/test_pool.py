"""The lean HTTP/1.1 client (`megaservice._transport.pool`) against scripted servers on real sockets.

Each server reads one request at a time and answers with bytes written here, so the framing cases
(chunked, length, end of connection, interim answers, compression) and the failure cases are exact.
"""

import asyncio
import gzip
from collections.abc import Callable
from typing import Any

import pytest

from megaservice import UpstreamConnectError, UpstreamProtocolError, UpstreamTimeout
from megaservice._transport.pool import Pool, Response, Target, target
from tests.helpers import Answer, Scripted

pytestmark = pytest.mark.anyio


def reply(raw: bytes, keep: bool = True) -> Answer:
    async def answer(request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(raw)
        await writer.drain()
        return keep

    return answer


OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok": 42}\n'
LIMITS: dict[str, Any] = {"connect": 2.0, "total": 5.0, "read": 2.0, "first_byte": None, "limit": 0}


async def exchange(pool: Pool, url: str, headers: dict[str, str] | None = None, **options: Any) -> Response:
    """POST `{}` to `url`; the response once its headers arrived."""
    to = target(url)
    assert to is not None
    body = options.pop("body", b"{}")
    headers = {"Content-Type": "application/json"} if headers is None else headers
    return await pool.post("node", url, to, body, headers, **{**LIMITS, **options})


async def post(pool: Pool, url: str, **options: Any) -> tuple[int, str, bytes]:
    response = await exchange(pool, url, **options)
    try:
        data = await response.read()
    except BaseException:
        response.close()
        raise
    response.release()
    return response.status, response.content_type, data


async def settle(condition: Callable[[], bool]) -> None:
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0.01)
    pytest.fail("the condition did not hold within 2 s")


def test_target_serves_plain_http_only():
    assert target("https://example.com/v1") is None
    assert target("ftp://example.com/v1") is None
    assert target("http://user:pw@example.com/v1") is None
    assert target("http://example.com:8080/v1/embed?x=1") == Target(
        "example.com", 8080, b"POST /v1/embed?x=1 HTTP/1.1\r\nHost: example.com:8080\r\n"
    )
    assert target("http://[::1]:9000") == Target("::1", 9000, b"POST / HTTP/1.1\r\nHost: [::1]:9000\r\n")
    assert target("http://example.com/a b") is None


async def test_connections_are_kept_alive_and_reused():
    server = Scripted(reply(OK))
    async with server.running() as url:
        pool = Pool()
        for _ in range(3):
            assert await post(pool, url, body=b'{"q": 1}') == (200, "application/json", b'{"ok": 42}\n')
        pool.close()
    assert server.connections == 1
    request = server.requests[0]
    assert request.startswith(b"POST /v1/node HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"\r\nContent-Length: 8\r\n" in request
    assert b"\r\nContent-Type: application/json\r\n" in request
    assert request.endswith(b'\r\n\r\n{"q": 1}')


async def test_concurrent_requests_each_get_their_own_connection_and_answer():
    async def echo(request: bytes, writer: asyncio.StreamWriter) -> bool:
        body = request.split(b"\r\n\r\n", 1)[1]
        await asyncio.sleep(0.01)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        return True

    server = Scripted(echo)
    async with server.running() as url:
        pool = Pool()
        answers = await asyncio.gather(*(post(pool, url, body=b"%d" % i) for i in range(8)))
        assert [data for _, _, data in answers] == [b"%d" % i for i in range(8)]
        await asyncio.gather(*(post(pool, url, body=b"%d" % i) for i in range(8)))
        pool.close()
    assert server.connections == 8


async def test_a_chunked_answer_streams_piece_by_piece():
    release = asyncio.Event()

    async def chunked(request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(b"7\r\ndata: a\r\n")
        await writer.drain()
        await release.wait()
        writer.write(b"7\r\ndata: b\r\n0\r\n\r\n")
        return True

    server = Scripted(chunked)
    async with server.running() as url:
        pool = Pool()
        response = await exchange(pool, url, headers={})
        assert (response.status, response.content_type) == (200, "text/event-stream")
        pieces = response.content.iter_any()
        assert await pieces.__anext__() == b"data: a"
        release.set()
        assert [piece async for piece in pieces] == [b"data: b"]
        response.release()
        assert await post(pool, url) == (200, "text/event-stream", b"data: adata: b")
        pool.close()
    assert server.connections == 1


async def test_a_body_ended_by_closing_the_connection_is_read_whole_and_not_reused():
    server = Scripted(reply(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it", keep=False))
    async with server.running() as url:
        pool = Pool()
        assert await post(pool, url) == (200, "text/plain", b"all of it")
        assert await post(pool, url) == (200, "text/plain", b"all of it")
        pool.close()
    assert server.connections == 2


async def test_connection_close_from_the_node_is_honoured():
    raw = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
    server = Scripted(reply(raw, keep=True))  # the node keeps it open; the header alone must decide
    async with server.running() as url:
        pool = Pool()
        assert (await post(pool, url))[2] == b"ok"
        assert (await post(pool, url))[2] == b"ok"
        pool.close()
    assert server.connections == 2


async def test_a_pooled_connection_the_node_closed_is_replaced():
    server = Scripted(reply(OK))
    async with server.running() as url:
        pool = Pool()
        assert (await post(pool, url))[0] == 200
        for writer in server.writers:
            writer.close()  # the node's keep-alive expired
        await settle(lambda: server.open == 0)
        await asyncio.sleep(0.05)  # the client sees the end of the connection
        assert (await post(pool, url))[0] == 200
        pool.close()
    assert server.connections == 2


async def test_a_request_on_a_connection_the_node_closed_as_it_was_sent_goes_again_on_a_new_one():
    server = Scripted(reply(OK, keep=False))  # keep-alive runs out: it closes, unaware of the next request
    async with server.running() as url:
        pool = Pool()
        first = await exchange(pool, url)
        await first.read()
        first.release()  # pooled before the node's close arrives
        assert await post(pool, url) == (200, "application/json", b'{"ok": 42}\n')
        pool.close()
    assert server.connections == 2


async def test_a_new_connection_that_closes_unanswered_is_not_sent_again():
    server = Scripted(reply(b"", keep=False))
    async with server.running() as url:
        pool = Pool()
        with pytest.raises(UpstreamConnectError):
            await post(pool, url)
        pool.close()
    assert len(server.requests) == 1


async def test_an_idle_connection_past_keepalive_is_not_reused():
    server = Scripted(reply(OK))
    async with server.running() as url:
        pool = Pool(keepalive_timeout=0.05)
        await post(pool, url)
        await asyncio.sleep(0.1)
        await post(pool, url)
        pool.close()
    assert server.connections == 2


async def test_bytes_on_an_idle_connection_drop_it():
    async def chatty(request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(OK + b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n")
        return True

    server = Scripted(chatty)
    async with server.running() as url:
        pool = Pool()
        assert (await post(pool, url))[0] == 200
        assert (await post(pool, url))[0] == 200  # not the 408 left on the first connection
        pool.close()
    assert server.connections == 2


async def test_gzip_and_deflate_bodies_are_decoded():
    import zlib

    text = b'{"text": "' + b"x" * 5000 + b'"}'
    for encoding, packed in ((b"gzip", gzip.compress(text)), (b"deflate", zlib.compress(text))):
        head = b"HTTP/1.1 200 OK\r\nContent-Encoding: %s\r\nContent-Length: %d\r\n\r\n" % (encoding, len(packed))
        server = Scripted(reply(head + packed))
        async with server.running() as url:
            pool = Pool()
            assert (await post(pool, url))[2] == text
            pool.close()


async def test_an_unknown_encoding_is_a_protocol_error():
    server = Scripted(reply(b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 3\r\n\r\nabc"))
    async with server.running() as url:
        pool = Pool()
        with pytest.raises(UpstreamProtocolError, match=r"^node sent an unsupported Content-Encoding 'br'"):
            await post(pool, url)
        pool.close()


async def test_an_interim_answer_is_skipped():
    server = Scripted(reply(b"HTTP/1.1 100 Continue\r\n\r\n" + OK))
    async with server.running() as url:
        pool = Pool()
        assert await post(pool, url) == (200, "application/json", b'{"ok": 42}\n')
        assert (await post(pool, url))[0] == 200
        pool.close()
    assert server.connections == 1


async def test_a_status_and_its_body_are_returned_for_the_caller_to_judge():
    server = Scripted(reply(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy"))
    async with server.running() as url:
        pool = Pool()
        assert await post(pool, url) == (503, "application/octet-stream", b"busy")
        pool.close()


async def test_garbage_is_a_protocol_error_naming_the_node():
    server = Scripted(reply(b"SMTP ready\r\n\r\n", keep=False))
    async with server.running() as url:
        pool = Pool()
        with pytest.raises(UpstreamProtocolError, match=r"^node sent an invalid HTTP response") as caught:
            await post(pool, url)
        assert (caught.value.node, caught.value.url) == ("node", url)
        pool.close()


async def test_a_body_over_the_limit_is_refused():
    big = b"HTTP/1.1 200 OK\r\nContent-Length: 2048\r\n\r\n" + b"x" * 2048
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"400\r\n" + b"x" * 1024 + b"\r\n"
    chunked = chunked * 1 + b"400\r\n" + b"x" * 1024 + b"\r\n0\r\n\r\n"
    for raw, message in ((big, "answered 2048 bytes, more than the 1000"), (chunked, "more than the 1000 bytes")):
        server = Scripted(reply(raw))
        async with server.running() as url:
            pool = Pool()
            with pytest.raises(UpstreamProtocolError, match=message):
                await post(pool, url, limit=1000)
            pool.close()


async def test_a_refused_connection_names_the_node():
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    pool = Pool()
    with pytest.raises(UpstreamConnectError, match=f"^cannot reach node at http://127.0.0.1:{port}/x"):
        await post(pool, f"http://127.0.0.1:{port}/x")


async def test_a_node_that_never_answers_times_out_by_first_byte_or_read():
    async def silent(request: bytes, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(10)
        return False

    server = Scripted(silent)
    async with server.running() as url:
        pool = Pool()
        loop = asyncio.get_running_loop()
        for options in ({"first_byte": 0.1}, {"read": 0.1}, {"total": 0.1}):
            started = loop.time()
            with pytest.raises(UpstreamTimeout, match=f"^node did not answer in time \\({url}\\)"):
                await post(pool, url, **options)
            assert loop.time() - started < 1.0
        pool.close()


async def test_a_stalled_body_times_out_and_the_connection_is_dropped():
    async def stall(request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npart")
        return await server.hold(writer)

    server = Scripted(stall)
    async with server.running() as url:
        pool = Pool()
        with pytest.raises(UpstreamTimeout):
            await post(pool, url, read=0.1)
        await settle(lambda: server.open == 0)
        pool.close()


async def test_a_body_cut_short_is_a_connection_error():
    server = Scripted(reply(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npart", keep=False))
    async with server.running() as url:
        pool = Pool()
        with pytest.raises(UpstreamConnectError, match=r"^connection to node failed: the connection closed"):
            await post(pool, url)
        pool.close()


async def test_a_cancelled_request_drops_its_connection():
    async def slow(request: bytes, writer: asyncio.StreamWriter) -> bool:
        return await server.hold(writer)

    server = Scripted(slow)
    async with server.running() as url:
        pool = Pool()
        task = asyncio.create_task(post(pool, url))
        await settle(lambda: server.requests != [])
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await settle(lambda: server.open == 0)
        pool.close()


async def test_a_slow_reader_holds_back_a_large_stream_without_losing_bytes():
    size = 4 * 1024 * 1024

    async def large(request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        for _ in range(64):
            writer.write(b"y" * (size // 64))
            await writer.drain()
        return True

    server = Scripted(large)
    async with server.running() as url:
        pool = Pool()
        response = await exchange(pool, url, headers={})
        await asyncio.sleep(0.3)  # nobody reads: the client stops reading the socket
        assert response._conn.buffered < size // 2
        received = 0
        async for piece in response.content.iter_any():
            received += len(piece)
        assert received == size
        response.release()
        pool.close()


async def test_the_limit_bounds_connections_in_use():
    async def slow(request: bytes, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(0.05)
        writer.write(OK)
        return True

    server = Scripted(slow)
    async with server.running() as url:
        pool = Pool(limit=2)
        await asyncio.gather(*(post(pool, url) for _ in range(6)))
        pool.close()
    assert server.connections == 2


async def test_headers_cannot_smuggle_lines_and_framing_is_ours():
    server = Scripted(reply(OK))
    async with server.running() as url:
        pool = Pool()
        with pytest.raises(ValueError, match="line break"):
            await exchange(pool, url, headers={"X-Evil": "a\r\nContent-Length: 0"})
        response = await exchange(pool, url, headers={"Content-Length": "99", "Host": "elsewhere"})
        await response.read()
        response.release()
        pool.close()
    assert server.requests[0].count(b"Content-Length") == 1
    assert b"elsewhere" not in server.requests[0]


async def test_closing_the_pool_closes_its_connections():
    server = Scripted(reply(OK))
    async with server.running() as url:
        pool = Pool()
        await asyncio.gather(*(post(pool, url) for _ in range(3)))
        assert server.open == 3
        pool.close()
        await settle(lambda: server.open == 0)
        with pytest.raises(RuntimeError, match="closed"):
            await post(pool, url)
