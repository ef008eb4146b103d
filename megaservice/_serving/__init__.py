"""How a local service serves: the machinery behind `megaservice.microservice`.

A request goes through one coroutine, `app.ServiceApp.__call__`:

    admission    keys, body size (`admission`) and requests in flight; a refusal is answered at once
    disconnect   the `Exchange` records the answer's status and size, and cancels the request when
                 its client goes away (`disconnect`)
    direct       a route whose handler needs no FastAPI machinery is called straight (`direct`);
                 everything else goes through FastAPI
    errors       where exceptions become answers, the same on both paths (`errors`)

Around it: the probes every service answers (`probes`, paths from `megaservice.limits.PROBE_PATHS`),
what runs while a service runs (`lifespan`), the OpenAPI schema (`openapi`), uvicorn and the
process (`server`), OPEA's dynamic batching (`batching`) and MCP (`mcp`). `service` holds the two
classes built from them, `BaseService` and `HTTPService`.
"""

__all__: list[str] = []
