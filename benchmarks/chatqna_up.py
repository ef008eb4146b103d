"""ChatQnA on embedded defaults, end to end: TTFT, answer time, and where each request's time goes.

Starts `megaservice up chatqna` (free ports, a temporary data directory, the demo corpus ingested)
or attaches to a running one (`--url`, with `--pipeline` naming the file it runs, for its ports),
warms it up, then sends a fixed list of questions about the demo corpus through the gateway's
streaming route, `--requests` of them at each `--concurrency` (closed loop: each client sends its
next question when its answer ended), with `max_tokens`, `temperature` 0 and a `seed` fixed.

    PYTHONPATH=$PWD python benchmarks/chatqna_up.py                      # 20 requests at c=1 and c=4
    PYTHONPATH=$PWD python benchmarks/chatqna_up.py --requests 40 --concurrency 1,4,8 --json out.json
    PYTHONPATH=$PWD python benchmarks/chatqna_up.py --url http://127.0.0.1:8888   # a running `megaservice up`

Client side: TTFT (request sent → first answer text) and total (→ end of the stream), p50/p90.

The split, from each service's own Prometheus series (scraped before and after each level, the
difference taken, so the warm-up and other levels do not count; no tracing):

    service time   `http_request_duration_seconds` _sum/_count of the service's POST routes: from the
                   moment its ASGI app is called to its last byte sent (a stream's included), i.e.
                   the service's own time, queueing inside it included
    llm (own)      the llm service's time minus llm-server's (the LLM service waits on llm-server)
    gateway        the same series at the gateway, for the benchmarked route
    overhead       gateway - Σ services (guardrail, embedding, retriever, reranker, llm with
                   llm-server): the orchestrator's work, the hops' HTTP (client and server sides,
                   JSON), waits for the event loops, and the gateway relaying the stream after the
                   LLM's last byte
    client hop     client total - gateway: the benchmark's own HTTP client and connection to the gateway

These are means over the level's requests (a histogram's sum/count); per-service percentiles would
need finer buckets than the `http_*` series have. The gateway's `pipeline_node_latency_seconds`
(call start → answer, or → a stream's headers) gives each hop's p50 by interpolation, and
"hop - service" the HTTP cost of each non-streamed hop, as seen from the gateway.
"""

import argparse
import asyncio
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Labels", "Snapshot", "bucket_quantile", "parse_metrics", "percentile", "split"]

QUESTIONS = (
    "At what temperature is Qorvane tea brewed?",
    "Where does the Qorvane flower grow?",
    "What does a squeeze of lemon do to Qorvane tea?",
    "Who founded the Harbor Lights Festival?",
    "How many paper lanterns are floated at the Harbor Lights Festival?",
    "What is the traditional dish of the Harbor Lights Festival?",
    "When does Orbis Lab close on weekdays?",
    "Where is the emergency shower in Orbis Lab?",
    "Which port does the retriever use in megaservice up?",
    "Which model does the embedded model server run?",
)
FLOW = ("guardrail", "embedding", "retriever", "reranker", "llm")  # the services a request goes through
MODEL_SERVER = "llm-server"  # called by `llm`: its time is inside llm's
ROUTES = {"openai": "/v1/chat/completions", "chatqna": "/v1/chatqna"}
_DEFAULT_PORTS = (5430, 5000, 6000, 7000, 8000, 8008, 8888, 9000, 9092)

Labels = tuple[tuple[str, str], ...]
Snapshot = dict[tuple[str, Labels], float]  # (sample name, labels) → value


# ---------------------------------------------------------------- statistics and the split (pure)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The `q` quantile (0-1) of `values`, linearly interpolated between the closest ranks; None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = q * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def parse_metrics(text: str) -> Snapshot:
    """The samples of a Prometheus text exposition: {(name, sorted labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    samples: Snapshot = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return samples


def _matches(labels: Labels, wanted: Mapping[str, str]) -> bool:
    found = dict(labels)
    return all(found.get(k) == v for k, v in wanted.items())


def delta(before: Snapshot, after: Snapshot, name: str, **wanted: str) -> float:
    """Σ over the samples called `name` whose labels include `wanted`: after - before."""
    total = 0.0
    for (sample, labels), value in after.items():
        if sample == name and _matches(labels, wanted):
            total += value - before.get((sample, labels), 0.0)
    return total


def bucket_quantile(buckets: Iterable[tuple[float, float]], q: float) -> float | None:
    """Prometheus's `histogram_quantile`: `q` of a histogram given as (upper bound, cumulative count) pairs.

    Linear interpolation inside the bucket the rank falls in (from 0 for the first bucket); a rank in
    the +Inf bucket answers the highest finite bound. None without observations.
    """
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound


def histogram_delta(before: Snapshot, after: Snapshot, name: str, **wanted: str) -> list[tuple[float, float]]:
    """The (upper bound, cumulative count) pairs of histogram `name` (its `_bucket` samples), after - before."""
    bounds: dict[float, float] = {}
    for (sample, labels), value in after.items():
        if sample == f"{name}_bucket" and _matches(labels, wanted):
            bound = float(dict(labels)["le"])
            bounds[bound] = bounds.get(bound, 0.0) + value - before.get((sample, labels), 0.0)
    return sorted(bounds.items())


@dataclass
class Timing:
    """One place's requests over a level: their count and mean seconds."""

    count: float
    mean: float | None
    p50: float | None = None


def route_timing(before: Snapshot, after: Snapshot, method: str = "POST", handler: str | None = None) -> Timing:
    """A service's `http_request_duration_seconds` over the level, for `method` (and `handler`) requests."""
    wanted = {"method": method} if handler is None else {"method": method, "handler": handler}
    count = delta(before, after, "http_request_duration_seconds_count", **wanted)
    seconds = delta(before, after, "http_request_duration_seconds_sum", **wanted)
    return Timing(count, seconds / count if count else None)


def node_timing(before: Snapshot, after: Snapshot, node: str) -> Timing:
    """The gateway's `pipeline_node_latency_seconds` of one node over the level: count, mean, p50."""
    count = delta(before, after, "pipeline_node_latency_seconds_count", node=node)
    seconds = delta(before, after, "pipeline_node_latency_seconds_sum", node=node)
    p50 = bucket_quantile(histogram_delta(before, after, "pipeline_node_latency_seconds", node=node), 0.5)
    return Timing(count, seconds / count if count else None, p50)


def split(
    services: Mapping[str, Timing],
    gateway: Timing,
    client_mean: float | None,
    requests: int,
    flow: Sequence[str] = FLOW,
) -> dict[str, Any]:
    """Where a request's time goes, in mean seconds: each service's own time, their sum, the overheads.

    `services` holds the `flow`'s services and `MODEL_SERVER`; llm's time includes the model server's,
    so the sum counts llm once and `llm (own)` is llm - model server. A service that served another
    number of requests than `requests` (other traffic, a skipped node) is named in `warnings`.
    """
    warnings = [
        f"{name} served {timing.count:g} requests, not {requests}"
        for name, timing in services.items()
        if timing.count != requests
    ]
    if gateway.count != requests:
        warnings.append(f"the gateway's route served {gateway.count:g} requests, not {requests}")
    own: dict[str, float | None] = {name: services[name].mean if name in services else None for name in flow}
    model = services.get(MODEL_SERVER)
    llm = own.get("llm")
    if model is not None:
        own[MODEL_SERVER] = model.mean
        if llm is not None and model.mean is not None:
            own["llm (own)"] = llm - model.mean
    times = [own[name] for name in flow]
    total = None if any(v is None for v in times) else sum(v for v in times if v is not None)
    overhead = None if total is None or gateway.mean is None else gateway.mean - total
    hop = None if client_mean is None or gateway.mean is None else client_mean - gateway.mean
    return {
        "services": own,
        "sum": total,
        "gateway": gateway.mean,
        "overhead": overhead,
        "client_hop": hop,
        "warnings": warnings,
    }


# ---------------------------------------------------------------- the stack


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def shipped_on_free_ports(folder: Path) -> Path:
    """The shipped chatqna.yaml with free ports (the defaults may be taken), its demo corpus by full path."""
    from megaservice.pipeline.loader import find_pipeline

    shipped = find_pipeline("chatqna")
    text = shipped.read_text()
    for old, new in zip(_DEFAULT_PORTS, _free_ports(len(_DEFAULT_PORTS)), strict=True):
        text = re.sub(rf"\b{old}\b", str(new), text)
    text = text.replace("demo: [corpus]", f"demo: [{shipped.parent / 'corpus'}]")
    path = folder / "chatqna.yaml"
    path.write_text(text)
    return path


@dataclass
class Stack:
    """A `megaservice up` this script started; its output goes to `log`."""

    process: "subprocess.Popen[str]"
    log: Path
    lines: list[str] = field(default_factory=list)

    @classmethod
    def start(cls, pipeline: Path, data_dir: Path) -> "Stack":
        env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb", "HF_HUB_OFFLINE": "1"}
        command = [sys.executable, "-m", "megaservice.cli", "up", str(pipeline), "--data-dir", str(data_dir)]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        stack = cls(process, data_dir.parent / "up.log")

        def read() -> None:
            assert process.stdout is not None
            with stack.log.open("w") as log:
                for line in process.stdout:
                    stack.lines.append(line.rstrip("\n"))
                    log.write(line)
                    log.flush()

        threading.Thread(target=read, daemon=True).start()
        return stack

    def wait_for(self, pattern: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(re.search(pattern, line) for line in list(self.lines)):
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.2)
        tail = "\n".join(self.lines[-40:])
        raise SystemExit(f"`megaservice up` printed no line matching {pattern!r}:\n{tail}")

    def pids(self) -> dict[int, str]:
        """`up` and each service it started (from its "NAME started (pid N)" lines)."""
        found = {self.process.pid: "up"}
        for line in list(self.lines):
            match = re.search(r"\| (\S+) started \(pid (\d+)\)", line)
            if match:
                found[int(match.group(2))] = match.group(1)
        return found

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def endpoints(pipeline: Path, gateway_url: str | None) -> tuple[str, dict[str, str], list[str]]:
    """The gateway's URL, each service's /metrics URL (the gateway under `gateway`), and the flow."""
    from megaservice.pipeline.loader import load_pipeline

    loaded = load_pipeline(pipeline)
    assert loaded.megaservice is not None, f"{pipeline} has no megaservice"
    gateway = (gateway_url or f"http://127.0.0.1:{loaded.megaservice.port}").rstrip("/")
    flow = list(loaded.megaservice.flow)
    names = [*flow, *([MODEL_SERVER] if MODEL_SERVER in loaded.services else [])]
    metrics = {name: f"http://127.0.0.1:{loaded.services[name].port}/metrics" for name in names}
    metrics["gateway"] = f"{gateway}/metrics"
    return gateway, metrics, flow


def scrape(urls: Mapping[str, str]) -> dict[str, Snapshot]:
    """Every service's samples now."""
    import httpx

    with httpx.Client(timeout=30) as client:
        return {name: parse_metrics(client.get(url).raise_for_status().text) for name, url in urls.items()}


def load() -> dict[str, Any]:
    """The machine's load: 1/5/15-minute load averages, `uptime`'s line, the CPUs."""
    try:
        line = subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except OSError:
        line = ""
    return {"loadavg": [round(x, 2) for x in os.getloadavg()], "uptime": line, "cpus": os.cpu_count()}


def _proc_stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, user + system CPU seconds) of a live process, from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def cpu_by_service(roots: Mapping[int, str], folder: Path | None = None) -> dict[str, float]:
    """CPU seconds used so far by each named process and its descendants (Linux's /proc).

    `roots` names processes (pid → name); every other process counts under its nearest named
    ancestor. Processes outside those trees whose command line holds `folder` (the embedded
    PostgreSQL, which outlives the service that started it) count as `postgres`, with their children.
    """
    stats: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _proc_stat(int(entry.name))) is not None:
            stats[int(entry.name)] = stat

    def owner(pid: int) -> str | None:
        chain: list[int] = []
        while pid in stats and pid not in roots and len(chain) < 64:
            chain.append(pid)
            pid = stats[pid][0]
        if pid in roots:
            return roots[pid]
        if folder is not None and any(str(folder) in _cmdline(p) for p in chain):
            return "postgres"
        return None

    totals: dict[str, float] = {}
    for pid, (_, seconds) in stats.items():
        name = owner(pid)
        if name is not None:
            totals[name] = totals.get(name, 0.0) + seconds
    return totals


# ---------------------------------------------------------------- the client


@dataclass
class Answer:
    """One streamed answer as the client saw it."""

    ttft: float | None
    total: float
    chunks: int
    error: str | None = None
    first_event: float | None = None  # any event, an empty one (the role chunk) included


async def ask(session: Any, url: str, route: str, question: str, max_tokens: int, seed: int) -> Answer:
    """Stream one answer; time its first text and its end."""
    import orjson

    from megaservice.sse import EventSplitter, parse_event

    body: dict[str, Any] = {"messages": question, "stream": True, "max_tokens": max_tokens, "temperature": 0}
    body["seed"] = seed  # both routes take OpenAI's chat request
    if route == "openai":
        body = {**body, "messages": [{"role": "user", "content": question}], "model": "chatqna"}
    started = time.perf_counter()
    ttft: float | None = None
    chunks = 0
    first_event: float | None = None
    async with session.post(url + ROUTES[route], data=orjson.dumps(body), headers=_JSON) as answer:
        if answer.status != 200:
            return Answer(None, time.perf_counter() - started, 0, f"{answer.status}: {(await answer.text())[:300]}")
        splitter = EventSplitter()
        async for data in answer.content.iter_any():
            for raw in splitter.feed(data):
                event = parse_event(raw)
                if event is None or event.data == "[DONE]":
                    continue
                if first_event is None:
                    first_event = time.perf_counter() - started
                if route == "openai":
                    parsed = orjson.loads(event.data)
                    if "error" in parsed:
                        error = str(parsed["error"])[:300]
                        return Answer(ttft, time.perf_counter() - started, chunks, error, first_event)
                    texts = [(c.get("delta") or {}).get("content") for c in parsed.get("choices") or ()]
                    if not any(texts):
                        continue
                elif event.data in ("b''", ""):
                    continue
                chunks += 1
                if ttft is None:
                    ttft = time.perf_counter() - started
    return Answer(ttft, time.perf_counter() - started, chunks, None, first_event)


_JSON = {"content-type": "application/json"}


async def run_level(url: str, route: str, concurrency: int, requests: int, max_tokens: int, seed: int) -> list[Answer]:
    """`requests` questions (the list, in order, cycled) by `concurrency` closed-loop clients."""
    import aiohttp

    questions = [QUESTIONS[i % len(QUESTIONS)] for i in range(requests)]
    answers: list[Answer] = []
    timeout = aiohttp.ClientTimeout(total=None, connect=10, sock_read=300)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:

        async def client() -> None:
            while questions:
                answers.append(await ask(session, url, route, questions.pop(0), max_tokens, seed))

        await asyncio.gather(*(client() for _ in range(concurrency)))
    return answers


# ---------------------------------------------------------------- one level, the report


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def measure(
    url: str,
    metrics: Mapping[str, str],
    flow: Sequence[str],
    route: str,
    concurrency: int,
    args: argparse.Namespace,
    processes: Mapping[int, str] | None = None,
    folder: Path | None = None,
) -> dict[str, Any]:
    """Run one level between two scrapes; its client percentiles, its split (ms), CPU per request by process."""
    load_before = load()
    before = scrape(metrics)
    cpu_before = cpu_by_service(processes, folder) if processes else {}
    started = time.perf_counter()
    answers = asyncio.run(run_level(url, route, concurrency, args.requests, args.max_tokens, args.seed))
    wall = time.perf_counter() - started
    cpu_after = cpu_by_service(processes, folder) if processes else {}
    after = scrape(metrics)
    done = [a for a in answers if a.error is None]
    ttfts = [a.ttft for a in done if a.ttft is not None]
    totals = [a.total for a in done]
    firsts = [a.first_event for a in done if a.first_event is not None]
    services = {
        name: route_timing(before[name], after[name]) for name in metrics if name != "gateway"
    }  # POST routes: what the gateway (or llm) sent them
    gateway = route_timing(before["gateway"], after["gateway"], handler=ROUTES[route])
    parts = split(services, gateway, sum(totals) / len(totals) if totals else None, len(answers), flow)
    nodes = {}
    for name in flow:
        node = node_timing(before["gateway"], after["gateway"], f"{name}/MicroService")
        own = services[name].mean if name in services else None
        nodes[name] = {
            "count": node.count,
            "mean_ms": _ms(node.mean),
            "p50_ms": _ms(node.p50),
            "hop_minus_service_ms": (
                _ms(node.mean - own) if node.mean is not None and own is not None and name != flow[-1] else None
            ),  # the last node streams: its hop ends at the stream's headers, its service at the last byte
        }
    g = before["gateway"], after["gateway"]
    first = delta(*g, "megaservice_first_token_latency_sum"), delta(*g, "megaservice_first_token_latency_count")
    kept = {"hit": 0.0, "miss": 0.0}
    if "reranker" in before:
        for result in kept:
            kept[result] = delta(before["reranker"], after["reranker"], "rerank_cache_texts_total", result=result)
    return {
        "concurrency": concurrency,
        "requests": len(answers),
        "errors": [a.error for a in answers if a.error is not None],
        "wall_s": round(wall, 2),
        "answer_chunks_mean": round(sum(a.chunks for a in done) / len(done), 1) if done else None,
        "client": {
            "ttft_p50_ms": _ms(percentile(ttfts, 0.5)),
            "ttft_p90_ms": _ms(percentile(ttfts, 0.9)),
            "total_p50_ms": _ms(percentile(totals, 0.5)),
            "total_p90_ms": _ms(percentile(totals, 0.9)),
            "total_mean_ms": _ms(sum(totals) / len(totals) if totals else None),
            "first_event_mean_ms": _ms(sum(firsts) / len(firsts) if firsts else None),
        },
        "gateway_ttft_mean_ms": _ms(first[0] / first[1] if first[1] else None),
        "reranker_cache": {"hits": kept["hit"], "texts": kept["hit"] + kept["miss"]},
        "split_ms": {
            "services": {name: _ms(value) for name, value in parts["services"].items()},
            "sum": _ms(parts["sum"]),
            "gateway": _ms(parts["gateway"]),
            "overhead": _ms(parts["overhead"]),
            "client_hop": _ms(parts["client_hop"]),
        },
        "nodes": nodes,
        "cpu_per_request_ms": {
            name: round((cpu_after[name] - cpu_before.get(name, 0.0)) * 1000 / len(answers), 2) for name in cpu_after
        }
        if answers
        else {},
        "warnings": parts["warnings"],
        "load_before": load_before,
        "load_after": load(),
    }


def _cell(value: Any) -> str:
    return "-" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def markdown(levels: Sequence[dict[str, Any]], flow: Sequence[str]) -> str:
    """The report's two tables: client latencies, then the split (means, ms)."""
    head = "| | " + " | ".join(f"c={lv['concurrency']}" for lv in levels) + " |"
    rule = "|---|" + "---|" * len(levels)

    def row(label: str, values: Iterable[Any]) -> str:
        return f"| {label} | " + " | ".join(_cell(v) for v in values) + " |"

    lines = ["Client side (ms)", "", head, rule]
    for key, label in (
        ("ttft_p50_ms", "TTFT p50"),
        ("ttft_p90_ms", "TTFT p90"),
        ("total_p50_ms", "total p50"),
        ("total_p90_ms", "total p90"),
    ):
        lines.append(row(label, (lv["client"][key] for lv in levels)))
    lines.append(row("requests (errors)", (f"{lv['requests']} ({len(lv['errors'])})" for lv in levels)))
    lines.append(row("answer chunks, mean", (lv["answer_chunks_mean"] for lv in levels)))
    lines.append(row("load average before → after", (_load_text(lv) for lv in levels)))
    lines += ["", "Where a request's time goes (mean ms per request; gateway hop p50 from its node histogram)", ""]
    lines += [head, rule]
    for name in flow:
        values = []
        for lv in levels:
            own = lv["split_ms"]["services"].get(name)
            node = lv["nodes"].get(name, {})
            hop = f" (hop p50 {_cell(node.get('p50_ms'))})" if name != "llm" else ""
            values.append(f"{_cell(own)}{hop}")
        lines.append(row(name, values))
    for name in (MODEL_SERVER, "llm (own)"):
        if any(name in lv["split_ms"]["services"] for lv in levels):
            lines.append(row(f"  of which {name}", (lv["split_ms"]["services"].get(name) for lv in levels)))
    for key, label in (
        ("sum", "**Σ services**"),
        ("gateway", "gateway route"),
        ("overhead", "**overhead** (gateway - Σ)"),
    ):
        lines.append(row(label, (lv["split_ms"][key] for lv in levels)))
    lines.append(row("  of which the hops' HTTP (Σ hop - service, non-streamed)", (_hops(lv) for lv in levels)))
    lines.append(row("client hop (client total - gateway)", (lv["split_ms"]["client_hop"] for lv in levels)))
    lines.append(row("first event, mean: client", (lv["client"]["first_event_mean_ms"] for lv in levels)))
    lines.append(row("first event, mean: gateway", (lv["gateway_ttft_mean_ms"] for lv in levels)))
    if any(lv["reranker_cache"]["texts"] for lv in levels):
        lines.append(row("reranker's kept vectors: hits / texts", (_kept(lv["reranker_cache"]) for lv in levels)))
    cpu_names = sorted({name for lv in levels for name in lv.get("cpu_per_request_ms", {})})
    if cpu_names:
        lines += ["", "CPU per request by process (ms: user + system, over the level, / requests)", "", head, rule]
        for name in cpu_names:
            lines.append(row(name, (lv["cpu_per_request_ms"].get(name) for lv in levels)))
        lines.append(row("**all**", (round(sum(lv["cpu_per_request_ms"].values()), 1) for lv in levels)))
    for lv in levels:
        for warning in lv["warnings"]:
            lines.append(f"\nwarning (c={lv['concurrency']}): {warning}")
        for error in lv["errors"][:3]:
            lines.append(f"\nerror (c={lv['concurrency']}): {error}")
    return "\n".join(lines)


def _kept(cache: Mapping[str, float]) -> str | None:
    return f"{cache['hits']:g} / {cache['texts']:g}" if cache["texts"] else None


def _hops(level: Mapping[str, Any]) -> float | None:
    hops = [node["hop_minus_service_ms"] for node in level["nodes"].values()]
    known = [h for h in hops if h is not None]
    return round(sum(known), 1) if known else None


def _load_text(level: Mapping[str, Any]) -> str:
    return f"{level['load_before']['loadavg'][0]:g} → {level['load_after']['loadavg'][0]:g}"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running megaservice (default: start `megaservice up chatqna`)")
    parser.add_argument("--pipeline", type=Path, help="the pipeline file the running one uses, for its ports")
    parser.add_argument("--route", choices=sorted(ROUTES), default="openai", help="the gateway route to stream")
    parser.add_argument("--requests", type=int, default=20, help="requests measured at each concurrency")
    parser.add_argument("--concurrency", default="1,4", help="comma-separated concurrency levels")
    parser.add_argument("--warmup", type=int, default=4, help="requests sent first, not measured")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the results as JSON to this file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data directory and up's log")
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",")]

    stack: Stack | None = None
    folder = Path(tempfile.mkdtemp(prefix="chatqna-bench-"))
    try:
        if args.url is None:
            pipeline = shipped_on_free_ports(folder)
            print(f"starting `megaservice up {pipeline} --data-dir {folder / 'data'}` (log: {folder / 'up.log'})")
            stack = Stack.start(pipeline, folder / "data")
            stack.wait_for(r"chatqna is up in", 600)
            stack.wait_for(r"ingested the demo corpus|already holds documents", 60)
        else:
            from megaservice.pipeline.loader import find_pipeline

            pipeline = args.pipeline or find_pipeline("chatqna")
        url, metrics, flow = endpoints(pipeline, args.url)
        started = time.perf_counter()
        asyncio.run(run_level(url, args.route, 1, args.warmup, args.max_tokens, args.seed))
        print(f"warm-up: {args.warmup} requests in {time.perf_counter() - started:.1f} s; {load()['uptime']}")
        results = []
        for concurrency in levels:
            processes = stack.pids() if stack is not None and sys.platform == "linux" else None
            results.append(measure(url, metrics, flow, args.route, concurrency, args, processes, folder))
            print(f"c={concurrency}: {results[-1]['requests']} requests in {results[-1]['wall_s']} s")
    finally:
        if stack is not None:
            print(f"stopping `megaservice up` (exit code {stack.stop()})")
        if args.keep or (stack is not None and stack.process.returncode != 0):
            print(f"kept: {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    record = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "route": ROUTES[args.route],
        "max_tokens": args.max_tokens,
        "warmup": args.warmup,
        "load_end": load(),
        "levels": results,
    }
    print()
    print(f"{record['route']} streamed, max_tokens {args.max_tokens}, temperature 0, seed {args.seed}")
    print(f"machine: {record['load_end']['cpus']} CPUs; at the end: {record['load_end']['uptime']}")
    print()
    print(markdown(results, flow))
    print()
    print(
        "TTFT: request sent → first answer text. Services: each one's own http_request_duration_seconds"
        " (ASGI call → last byte sent, streams included), mean over the level. Overhead: the gateway's route"
        " time minus the sum of the flow's services (llm includes llm-server): orchestration, the hops' HTTP"
        " and JSON, waits for a CPU and the event loops, the stream's relay after the LLM's last byte; the"
        " hops' HTTP is the part measured per non-streamed hop (the gateway's node latency - the service's"
        " time). First event: the first SSE event, the role chunk without text included (the gateway's is"
        " megaservice_first_token_latency)."
    )
    if args.json is not None:
        args.json.write_text(json.dumps(record, indent=2))
        print(f"\nwritten: {args.json}")


if __name__ == "__main__":
    # SIGTERM ends the run as Ctrl-C does: `main`'s `finally` stops `megaservice up` (the default action
    # would kill this process alone and leave `up` and its services running).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    main()
