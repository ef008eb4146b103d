"""What timing one streamed token costs: the per-event work of the token histograms, in nanoseconds.

    python benchmarks/token_metrics.py [--n 1000000]

Measures, each over `--n` calls (best of 5):

    llm service      `TokenClock.tick(1)`: one `time.monotonic()` and one `FastHistogram` observation
                     (the LLM service's `llm_*_latency_seconds`), plus `bytes.count(b"\n\n")` on a
                     typical chat chunk (how it counts a read's events)
    gateway          the per-event check the gateway's relay adds (`megaservice_llm_first_token_latency`
                     is observed once, on the first event; afterwards one flag test per event)
    reference        `FastHistogram.observe` alone, `prometheus_client.Histogram.observe` (what OPEA uses)

No event loop, no sockets: the metrics' own cost, to compare with a token's other costs
(docs/performance.md: tens of microseconds per relayed event).
"""

import argparse
import time
import timeit
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Histogram

from megaservice.components.llm.metrics import TokenClock
from megaservice.metrics import FastHistogram

CHUNK = (
    b'data: {"id":"chatcmpl-8f2c","object":"chat.completion.chunk","created":1764600000,"model":"fake-llm",'
    b'"choices":[{"index":0,"delta":{"content":" token"},"logprobs":null,"finish_reason":null}]}\n\n'
)


def best(statement: Callable[[], object], n: int) -> float:
    """Nanoseconds per call of `statement` (a callable), best of 5 runs of `n`."""
    return min(timeit.repeat(statement, number=n, repeat=5)) / n * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    n = parser.parse_args().n

    clock = TokenClock(time.monotonic())
    clock.tick(1)  # past the first token: every later tick is an inter-token observation
    fast = FastHistogram("bench_fast", "", registry=None).labels()
    slow = Histogram("bench_slow", "", registry=CollectorRegistry())
    flag = [False]

    def gateway_check() -> None:
        if flag[0]:
            flag[0] = False

    rows = [
        ("llm service: TokenClock.tick(1)", best(lambda: clock.tick(1), n)),
        ("llm service: chunk.count(b'\\n\\n')", best(lambda: CHUNK.count(b"\n\n"), n)),
        ("gateway: first-event flag test", best(gateway_check, n)),
        ("FastHistogram.observe", best(lambda: fast.observe(0.01), n)),
        ("prometheus_client Histogram.observe", best(lambda: slow.observe(0.01), n)),
        ("empty lambda (call overhead)", best(lambda: None, n)),
    ]
    for name, ns in rows:
        print(f"{name:40s} {ns:8.0f} ns")


if __name__ == "__main__":
    main()
