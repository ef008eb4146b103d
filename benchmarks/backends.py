"""Serve one fake backend of the pipeline (the fakes of `megaservice.testing`) in its own process.

    python benchmarks/backends.py --role llm --port 9104 --tokens 64 --token-ms 0 --prefill-ms 0

The fakes are raw ASGI on uvicorn (uvloop + httptools) and keep no history, so that the gateway
under test, not the backends, is the bottleneck.
"""

import argparse
from collections.abc import Callable

import uvicorn

from megaservice.testing import FakeEmbedding, FakeGuardrail, FakeLLM, FakeReranker, FakeRetriever, FakeService

PATHS = {
    "guardrail": "/v1/guardrails",
    "embedding": "/embed",
    "retriever": "/v1/retrieval",
    "rerank": "/rerank",
    "llm": "/v1/chat/completions",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--role", choices=list(PATHS), required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tokens", type=int, default=64, help="LLM answer length, in tokens")
    parser.add_argument("--token-ms", type=float, default=0.0, help="LLM: milliseconds between two tokens")
    parser.add_argument("--prefill-ms", type=float, default=0.0, help="LLM: milliseconds before the headers")
    args = parser.parse_args()
    fakes: dict[str, Callable[[], FakeService]] = {
        "guardrail": lambda: FakeGuardrail(record=False),
        "embedding": lambda: FakeEmbedding(dim=384, record=False),
        "retriever": lambda: FakeRetriever(record=False),
        "rerank": lambda: FakeReranker(record=False),
        "llm": lambda: FakeLLM(
            [f" tok{i}" for i in range(args.tokens)],
            token_delay=args.token_ms / 1000,
            prefill_delay=args.prefill_ms / 1000,
            record=False,
        ),
    }
    uvicorn.run(fakes[args.role](), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
