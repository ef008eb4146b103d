"""The statistics and the split of benchmarks/chatqna_up.py (no stack, no timing: numbers in, numbers out)."""

import math
import os
import signal
import time
from pathlib import Path

import pytest

from benchmarks.chatqna_up import (
    Timing,
    bucket_quantile,
    delta,
    histogram_delta,
    node_timing,
    parse_metrics,
    percentile,
    route_timing,
    split,
)

BEFORE = """\
# TYPE http_request_duration_seconds histogram
http_request_duration_seconds_bucket{handler="/v1/bias",method="POST",le="0.1"} 1.0
http_request_duration_seconds_bucket{handler="/v1/bias",method="POST",le="+Inf"} 1.0
http_request_duration_seconds_count{handler="/v1/bias",method="POST"} 1.0
http_request_duration_seconds_sum{handler="/v1/bias",method="POST"} 0.5
http_request_duration_seconds_bucket{handler="/v1/ready",method="GET",le="0.1"} 7.0
http_request_duration_seconds_bucket{handler="/v1/ready",method="GET",le="+Inf"} 7.0
http_request_duration_seconds_count{handler="/v1/ready",method="GET"} 7.0
http_request_duration_seconds_sum{handler="/v1/ready",method="GET"} 0.07
# TYPE pipeline_node_latency_seconds histogram
pipeline_node_latency_seconds_bucket{node="guardrail/MicroService",le="0.01"} 1.0
pipeline_node_latency_seconds_bucket{node="guardrail/MicroService",le="0.1"} 1.0
pipeline_node_latency_seconds_bucket{node="guardrail/MicroService",le="+Inf"} 1.0
pipeline_node_latency_seconds_count{node="guardrail/MicroService"} 1.0
pipeline_node_latency_seconds_sum{node="guardrail/MicroService"} 0.005
"""
AFTER = """\
# TYPE http_request_duration_seconds histogram
http_request_duration_seconds_bucket{handler="/v1/bias",method="POST",le="0.1"} 5.0
http_request_duration_seconds_bucket{handler="/v1/bias",method="POST",le="+Inf"} 5.0
http_request_duration_seconds_count{handler="/v1/bias",method="POST"} 5.0
http_request_duration_seconds_sum{handler="/v1/bias",method="POST"} 0.58
http_request_duration_seconds_bucket{handler="/v1/ready",method="GET",le="0.1"} 9.0
http_request_duration_seconds_bucket{handler="/v1/ready",method="GET",le="+Inf"} 9.0
http_request_duration_seconds_count{handler="/v1/ready",method="GET"} 9.0
http_request_duration_seconds_sum{handler="/v1/ready",method="GET"} 5.09
# TYPE pipeline_node_latency_seconds histogram
pipeline_node_latency_seconds_bucket{node="guardrail/MicroService",le="0.01"} 1.0
pipeline_node_latency_seconds_bucket{node="guardrail/MicroService",le="0.1"} 5.0
pipeline_node_latency_seconds_bucket{node="guardrail/MicroService",le="+Inf"} 5.0
pipeline_node_latency_seconds_count{node="guardrail/MicroService"} 5.0
pipeline_node_latency_seconds_sum{node="guardrail/MicroService"} 0.105
"""


def test_percentile_interpolates_between_ranks() -> None:
    assert percentile([], 0.5) is None
    assert percentile([3.0], 0.9) == 3.0
    assert percentile([4.0, 1.0, 3.0, 2.0], 0.5) == pytest.approx(2.5)
    assert percentile([float(i) for i in range(1, 11)], 0.9) == pytest.approx(9.1)


def test_a_route_timing_is_the_difference_of_two_scrapes_for_post_routes_only() -> None:
    before, after = parse_metrics(BEFORE), parse_metrics(AFTER)
    timing = route_timing(before, after)
    assert timing.count == 4  # the GET probes (5 s of them) are left out
    assert timing.mean == pytest.approx(0.02)
    assert route_timing(before, after, handler="/v1/other").mean is None
    assert delta(before, after, "http_request_duration_seconds_count", method="GET") == 2


def test_a_series_missing_before_counts_from_zero() -> None:
    after = parse_metrics(AFTER)
    assert route_timing({}, after).count == 5


def test_bucket_quantile_interpolates_like_prometheus() -> None:
    assert bucket_quantile([], 0.5) is None
    assert bucket_quantile([(1.0, 0.0), (math.inf, 0.0)], 0.5) is None
    # 10 observations: 2 under 0.1, 8 between 0.1 and 0.5: the 5th lies 3/8 of the way into (0.1, 0.5]
    assert bucket_quantile([(0.1, 2.0), (0.5, 10.0), (math.inf, 10.0)], 0.5) == pytest.approx(0.25)
    assert bucket_quantile([(0.1, 4.0), (math.inf, 10.0)], 0.9) == 0.1  # in +Inf: the highest finite bound


def test_node_timing_takes_the_buckets_of_the_level() -> None:
    before, after = parse_metrics(BEFORE), parse_metrics(AFTER)
    buckets = histogram_delta(before, after, "pipeline_node_latency_seconds", node="guardrail/MicroService")
    assert buckets == [(0.01, 0.0), (0.1, 4.0), (math.inf, 4.0)]
    timing = node_timing(before, after, "guardrail/MicroService")
    assert timing.count == 4
    assert timing.mean == pytest.approx(0.025)
    assert timing.p50 == pytest.approx(0.055)  # the 2nd of 4, halfway into (0.01, 0.1]


def test_the_split_counts_the_model_server_inside_the_llm() -> None:
    services = {
        "guardrail": Timing(4, 0.010),
        "embedding": Timing(4, 0.020),
        "retriever": Timing(4, 0.005),
        "reranker": Timing(4, 0.100),
        "llm": Timing(4, 2.000),
        "llm-server": Timing(4, 1.990),
    }
    parts = split(services, Timing(4, 2.141), client_mean=2.150, requests=4)
    assert parts["sum"] == pytest.approx(2.135)
    assert parts["overhead"] == pytest.approx(0.006)
    assert parts["client_hop"] == pytest.approx(0.009)
    assert parts["services"]["llm (own)"] == pytest.approx(0.010)
    assert parts["warnings"] == []


def test_the_split_names_a_service_that_saw_other_traffic_and_leaves_unknowns_unknown() -> None:
    services = {"guardrail": Timing(5, 0.010), "llm": Timing(4, None)}
    parts = split(services, Timing(4, 1.0), client_mean=None, requests=4, flow=("guardrail", "llm"))
    assert parts["warnings"] == ["guardrail served 5 requests, not 4"]
    assert parts["sum"] is None and parts["overhead"] is None and parts["client_hop"] is None


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads Linux's /proc")
def test_cpu_by_service_counts_a_process_and_its_children_under_its_name(tmp_path: Path) -> None:
    import subprocess
    import sys

    from benchmarks.chatqna_up import cpu_by_service

    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\n"
    # a parent that starts a child; both burn 0.3 s of CPU, then wait to be read
    script = tmp_path / "parent.py"
    script.write_text(
        "import subprocess, sys, time\n"
        f"child = subprocess.Popen([sys.executable, '-c', {burn + 'time.sleep(60)'!r}])\n"
        f"{burn}"
        "print('done', flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert parent.stdout is not None and parent.stdout.readline() == "done\n"
        time.sleep(0.5)  # the child's burn ends too
        used = cpu_by_service({parent.pid: "svc"})
        # with `folder`: the named tree stays itself (its command line holds the folder too), and a
        # process outside it whose command line holds the folder counts as postgres
        other = subprocess.Popen(
            [sys.executable, "-c", burn + "print('done', flush=True)\ntime.sleep(60)", str(tmp_path)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert other.stdout is not None and other.stdout.readline() == "done\n"
        with_folder = cpu_by_service({parent.pid: "svc"}, tmp_path)
        other.kill()
        other.wait()
        other.stdout.close()
    finally:
        os.killpg(parent.pid, signal.SIGKILL)
        parent.wait()
        parent.stdout.close()
    assert set(used) == {"svc"}
    assert 0.55 <= used["svc"] <= 3.0  # 0.3 s each, plus two interpreters starting
    assert set(with_folder) == {"svc", "postgres"}
    assert with_folder["svc"] >= used["svc"]
    assert 0.25 <= with_folder["postgres"] <= 1.5
