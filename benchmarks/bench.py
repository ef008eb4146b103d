"""Benchmark the ChatQnA megaservice on megaservice, on opea-comps and as a hand-written lean gateway.

Starts five fake backends, the gateways, and for every round x scenario x gateway runs the load
generator against one gateway while the others idle; prints a table and writes the raw results.

    python benchmarks/bench.py                                  # megaservice vs lean
    python benchmarks/bench.py --opea-python .bench/opea/bin/python    # and opea-comps
    bash benchmarks/run.sh                                      # creates the opea-comps venv, runs all
    python benchmarks/bench.py --tracing                        # and megaservice exporting its spans
    python benchmarks/bench.py --baseline ../main               # and megaservice from another checkout

Scenarios: `ns-cN` non-streaming, `s-cN` streaming, N concurrent clients. On a machine with two or
more cores the gateway under test gets CPU 0 and everything else the other cores, so the gateway's
own cost is what limits it. Rounds rotate the gateways' order; the ratio column is the median of the
per-round ratios to `lean`, each measured back to back.
"""

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from backends import PATHS

HERE = Path(__file__).resolve().parent
ROLES = ("guardrail", "embedding", "retriever", "rerank", "llm")
TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"process {proc.args!r} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on {port} after {timeout} s")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def reset_peak_rss(pid: int) -> None:
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/clear_refs").write_text("5")


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pin(pid: int, cpus: set[int]) -> None:
    if cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(pid, cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenarios", default="ns-c1,ns-c32,s-c1,s-c32,s-c64")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per run")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--tokens", type=int, default=64, help="tokens the fake LLM answers")
    parser.add_argument("--token-ms", type=float, default=0.0)
    parser.add_argument("--prefill-ms", type=float, default=0.0)
    parser.add_argument("--opea-python", default=os.environ.get("OPEA_PYTHON"), help="a python with opea-comps")
    parser.add_argument(
        "--baseline",
        metavar="CHECKOUT",
        help="also run megaservice from another checkout (`baseline`: PYTHONPATH=CHECKOUT), e.g. the build before "
        "a change, to compare the two back to back",
    )
    parser.add_argument(
        "--tracing",
        action="store_true",
        help="also run megaservice with tracing on (`megaservice+tracing`), exporting to an OTLP receiver",
    )
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args()

    cores = os.cpu_count() or 1
    target_cpus, aux_cpus = ({0}, set(range(1, cores))) if cores >= 2 else (set(), set())
    pin(os.getpid(), aux_cpus)  # the load generators inherit it
    procs: list[subprocess.Popen[bytes]] = []
    logs = Path(args.out) / time.strftime("%Y%m%d-%H%M%S")
    logs.mkdir(parents=True, exist_ok=True)

    def start(cmd: list[str], name: str, cpus: set[int], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = (logs / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, cwd=HERE, env={**os.environ, **env} if env else None
        )
        pin(proc.pid, cpus)
        procs.append(proc)
        return proc

    try:
        urls = {}
        for role in ROLES:
            port = free_port()
            cmd = [sys.executable, "backends.py", "--role", role, "--port", str(port)]
            if role == "llm":
                cmd += ["--tokens", str(args.tokens), "--token-ms", str(args.token_ms)]
                cmd += ["--prefill-ms", str(args.prefill_ms)]
            wait_port(port, start(cmd, f"backend-{role}", aux_cpus))
            urls[role] = f"http://127.0.0.1:{port}{PATHS[role]}"
        spec = ",".join(f"{role}={url}" for role, url in urls.items())

        commands = {
            "lean": [sys.executable, "lean.py"],
            "megaservice": [sys.executable, "pipeline.py", "--package", "megaservice"],
        }
        if args.opea_python:
            commands["opea-comps"] = [args.opea_python, "pipeline.py", "--package", "comps"]
        envs: dict[str, dict[str, str]] = {}
        if args.tracing:  # the same pipeline, exporting its spans to a receiver on the other cores
            port = free_port()
            receiver = [sys.executable, "-m", "megaservice.testing.otlp", "--port", str(port), "--quiet"]
            wait_port(port, start(receiver, "otlp-receiver", aux_cpus))
            commands["megaservice+tracing"] = commands["megaservice"]
            envs["megaservice+tracing"] = {"TELEMETRY_ENDPOINT": f"http://127.0.0.1:{port}/v1/traces"}
        if args.baseline:
            commands["baseline"] = commands["megaservice"]
            envs["baseline"] = {"PYTHONPATH": str(Path(args.baseline).resolve())}
        targets = {}
        for name, cmd in commands.items():
            port = free_port()
            proc = start([*cmd, "--port", str(port), "--backends", spec], f"target-{name}", target_cpus, envs.get(name))
            wait_port(port, proc)
            targets[name] = (proc, f"http://127.0.0.1:{port}/v1/chatqna")

        results = []
        names = list(targets)
        for round_ in range(args.rounds):
            order = names[round_ % len(names) :] + names[: round_ % len(names)]
            for scenario in args.scenarios.split(","):
                stream = scenario.startswith("s-")
                concurrency = int(scenario.rsplit("-c", 1)[1])
                for name in order:
                    proc, url = targets[name]
                    reset_peak_rss(proc.pid)
                    cpu_before = cpu_seconds(proc.pid)
                    cmd = [sys.executable, "loadgen.py", "--url", url, "-c", str(concurrency)]
                    cmd += ["--duration", str(args.duration), "--warmup", str(args.warmup)]
                    if stream:
                        cmd.append("--stream")
                    out = subprocess.run(cmd, cwd=HERE, capture_output=True, text=True, check=True)
                    result = json.loads(out.stdout)
                    cpu = cpu_seconds(proc.pid) - cpu_before
                    result.update(
                        round=round_,
                        scenario=scenario,
                        target=name,
                        cpu_ms_per_req=round(cpu * 1000 / max(1, result["completed_total"]), 3),
                        peak_rss_mib=round(peak_rss_mib(proc.pid), 1),
                    )
                    results.append(result)
                    print(
                        f"r{round_} {scenario:7} {name:12} {result['rps']:8.1f} req/s  "
                        f"cpu {result['cpu_ms_per_req']:.2f} ms/req  errors {result['errors']}",
                        file=sys.stderr,
                        flush=True,
                    )
        (logs / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in results))
        print(table(results, args))
        print(f"\nraw results and logs: {logs}")
    finally:
        stop(procs)


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """Terminate the processes, and kill those still running 10 s later."""
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def table(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    profile = f"fake LLM: {args.tokens} tokens, {args.prefill_ms} ms before headers, {args.token_ms} ms/token"
    lines = [
        f"### ChatQnA, 5 hops ({profile}; {args.rounds} rounds x {args.duration:g} s)",
        "",
        "| scenario | gateway | req/s | vs lean | p50 ms | p99 ms | TTFT p50 ms | tok/s | CPU ms/req "
        "| peak RSS MiB | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for scenario in args.scenarios.split(","):
        rows = [r for r in results if r["scenario"] == scenario]
        lean = {r["round"]: r["rps"] for r in rows if r["target"] == "lean"}
        for name in dict.fromkeys(r["target"] for r in rows):
            mine = [r for r in rows if r["target"] == name]

            def med(key: str, mine: list[dict[str, Any]] = mine) -> str:
                values = [float(r[key]) for r in mine if r[key] is not None]
                return f"{statistics.median(values):.1f}" if values else "-"

            ratios = [float(r["rps"]) / lean[r["round"]] for r in mine if lean.get(r["round"])]
            ratio = f"{statistics.median(ratios):.2f}" if ratios else "-"
            cpu = statistics.median(float(r["cpu_ms_per_req"]) for r in mine)
            errors = sum(int(r["errors"]) for r in mine)
            lines.append(
                f"| {scenario} | {name} | {med('rps')} | {ratio} | {med('p50_ms')} | {med('p99_ms')} | "
                f"{med('ttft_p50_ms')} | {med('tokens_per_s')} | {cpu:.2f} | {med('peak_rss_mib')} | {errors} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
