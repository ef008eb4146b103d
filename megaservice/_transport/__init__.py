"""How a megaservice's calls reach its nodes: one `Transport` seam, three transports.

    base.py        Transport and StreamedAnswer (Protocols), the no-content rule
    pool.py        PoolTransport: plain http over pooled httptools connections (connection.py)
    session.py     SessionTransport: https over one aiohttp session (imported on the first https call)
    asgi.py        ASGITransport: an ASGI app in the same process, no socket (tests, embedded pipelines)

`megaservice.client.UpstreamClient` picks one per URL: a mounted transport for the URL's prefix,
else by scheme.
"""

from megaservice._transport.base import StreamedAnswer, Transport

__all__ = ["StreamedAnswer", "Transport"]
