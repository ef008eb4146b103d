"""`/v1/statistics`: per-name latency percentiles over a bounded window of recent samples (OPEA's keys)."""

import math
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

__all__ = ["BaseStatistics", "collect_all_statistics", "register_statistics", "statistics_dict"]

F = TypeVar("F", bound=Callable[..., Any])
WINDOW = 1000


def _percentile(samples: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default method)."""
    ordered = sorted(samples)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _summary(samples: Sequence[float]) -> tuple[float | None, float | None, float | None]:
    if not samples:
        return None, None, None
    return _percentile(samples, 50), _percentile(samples, 99), sum(samples) / len(samples)


class BaseStatistics:
    """Latencies of one named operation: the last `window` samples (OPEA kept all of them, forever)."""

    def __init__(self, window: int = WINDOW) -> None:
        self.response_times: deque[float] = deque(maxlen=window)
        self.first_token_latencies: deque[float] = deque(maxlen=window)

    def append_latency(self, latency: float, first_token_latency: float | None = None) -> None:
        """Record one operation's latency, and its first-token latency if it streamed."""
        self.response_times.append(latency)
        if first_token_latency is not None:
            self.first_token_latencies.append(first_token_latency)

    def get_statistics(self) -> dict[str, float | None]:
        """Return p50/p99/average of latency and first-token latency (seconds; `None` without samples)."""
        p50, p99, avg = _summary(self.response_times)
        f50, f99, favg = _summary(self.first_token_latencies)
        return {
            "p50_latency": p50,
            "p99_latency": p99,
            "average_latency": avg,
            "p50_latency_first_token": f50,
            "p99_latency_first_token": f99,
            "average_latency_first_token": favg,
        }


statistics_dict: dict[str, BaseStatistics] = {}


def register_statistics(names: Iterable[str]) -> Callable[[F], F]:
    """Create a `BaseStatistics` for each name; the decorated handler records into it itself (as in OPEA)."""

    def decorator(func: F) -> F:
        for name in names:
            statistics_dict[name] = BaseStatistics()
        return func

    return decorator


def collect_all_statistics() -> dict[str, dict[str, float | None]]:
    """Return the statistics of every registered name."""
    return {name: stats.get_statistics() for name, stats in statistics_dict.items()}
