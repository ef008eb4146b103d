"""Benchmark the embedded model server against llama.cpp's own OpenAI server, on the same GGUF model.

    python benchmarks/llm_server.py                       # both servers, 2 rounds
    python benchmarks/llm_server.py --targets megaservice --rounds 1

Targets (each its own process, started and measured one at a time, alternating round by round):

    megaservice   python -m megaservice.components.llm_server   (our MicroService around llama_cpp.Llama)
    llama.cpp     python -m llama_cpp.server                    (needs llama-cpp-python[server]'s extras:
                                                                 sse-starlette, starlette-context, pydantic-settings)

Both serve the packaged SmolLM2-135M-Instruct (or `--model GGUF`) with the same threads and context,
and OpenMP's wait policy each one has by default (ours: PASSIVE; llama.cpp's server: OpenMP's
default, spinning) unless `--omp-wait-policy` sets it for both.
For each one: seconds from the process's start to answering (ours: `/v1/ready` 200; llama.cpp's
server loads before it listens: `/v1/models` 200), RSS once loaded and its peak after the run,
TTFT p50 (a short question, streamed, to the first chunk with text), decode tokens/s of one stream
and the aggregate tokens/s of 4 streams at once (greedy, the same long answer), and the accuracy on
benchmarks/data/rag_qa.jsonl (greedy, 48 tokens; correct if an expected answer is a substring,
case-insensitive) with two prompts: `opea`, the question and its context in OPEA's RAG prompt as one
user message (what the LLM service sends for a `query` with `documents`), and `system`, the context
in a system message and the question as the user's.

Timings depend on what else the machine runs: write `uptime` next to them.
"""

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # this checkout's megaservice, before `bench` imports one

from bench import cpu_seconds, free_port, peak_rss_mib  # noqa: E402

from megaservice.components.llm.prompt import rag_prompt  # noqa: E402
from megaservice.components.llm_server.model import packaged_model  # noqa: E402

GREEDY = {"temperature": 0.0, "repeat_penalty": 1.0, "top_k": 40, "top_p": 0.95, "min_p": 0.05}
"""Sampling sent to both servers (their defaults differ: llama.cpp's server uses repeat_penalty 1.1)."""
STORY = [{"role": "user", "content": "Write a long story about a lighthouse keeper and a storm."}]
SHORT = [{"role": "user", "content": "What is the capital of France?"}]
PROMPTS: dict[str, Callable[[dict[str, Any]], list[dict[str, str]]]] = {
    "opea": lambda item: [{"role": "user", "content": rag_prompt(item["question"], [item["context"]])}],
    "system": lambda item: [
        {"role": "system", "content": "Answer the question using this text:\n" + item["context"]},
        {"role": "user", "content": item["question"]},
    ],
}
"""How a question and its context are put to the model."""


@dataclass
class Result:
    """One target's measurements in one round."""

    ready_s: float = 0.0
    rss_mib: float = 0.0
    peak_rss_mib: float = 0.0
    ttft: list[float] = field(default_factory=list)
    decode_c1: list[float] = field(default_factory=list)
    cpu_ms_per_token: float = 0.0
    """CPU time of the server process per token streamed at c=1 (prefill included; spinning threads count)."""
    aggregate_c4: float = 0.0
    correct: dict[str, int] = field(default_factory=dict)
    questions: int = 0
    answer_words: list[int] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def command(target: str, args: argparse.Namespace, port: int) -> tuple[list[str], dict[str, str]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "MEGASERVICE_ACCESS_LOG": "0"}
    env.pop("OMP_WAIT_POLICY", None)
    if args.omp_wait_policy:
        env["OMP_WAIT_POLICY"] = args.omp_wait_policy
    if target == "megaservice":
        env |= {"LLM_SERVER_THREADS": str(args.threads), "LLM_SERVER_CONTEXT": str(args.context)}
        if args.model:
            env["LLM_SERVER_MODEL"] = args.model
        return [
            sys.executable,
            "-m",
            "megaservice.components.llm_server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ], env
    model = args.model or str(packaged_model())
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", model, "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--n_ctx", str(args.context), "--n_threads", str(args.threads), "--n_threads_batch", str(args.threads)]
    return cmd, env


async def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"{proc.args!r} exited with {proc.returncode}")
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.01)
    raise SystemExit(f"{url} not ready after {timeout} s")


async def stream(
    session: aiohttp.ClientSession, url: str, messages: list[dict[str, str]], max_tokens: int
) -> tuple[float, float, int]:
    """(seconds to the first text chunk, seconds to the last, text chunks) of one streamed answer."""
    body = {"messages": messages, "stream": True, "max_tokens": max_tokens, **GREEDY}
    started = time.perf_counter()
    first = last = 0.0
    chunks = 0
    async with session.post(url, json=body) as response:
        response.raise_for_status()
        async for line in response.content:
            if not line.startswith(b"data: {"):
                continue
            delta = json.loads(line[6:])["choices"]
            if delta and delta[0]["delta"].get("content"):
                last = time.perf_counter() - started
                first = first or last
                chunks += 1
    return first, last, chunks


async def answer(session: aiohttp.ClientSession, url: str, messages: list[dict[str, str]], max_tokens: int) -> str:
    body = {"messages": messages, "max_tokens": max_tokens, **GREEDY}
    async with session.post(url, json=body) as response:
        response.raise_for_status()
        return str((await response.json())["choices"][0]["message"]["content"])


async def measure(
    url: str, args: argparse.Namespace, questions: list[dict[str, Any]], result: Result, pid: int
) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
        await stream(session, url, SHORT, 8)  # warm up
        for _ in range(args.ttft_requests):
            first, _, _ = await stream(session, url, SHORT, 8)
            result.ttft.append(first)
        cpu, streamed = cpu_seconds(pid), 0
        for _ in range(args.streams):
            first, last, chunks = await stream(session, url, STORY, args.tokens)
            streamed += chunks
            if chunks > 1:
                result.decode_c1.append((chunks - 1) / (last - first))
        result.cpu_ms_per_token = (cpu_seconds(pid) - cpu) * 1000 / max(streamed, 1)
        started = time.perf_counter()
        counts = await asyncio.gather(*(stream(session, url, STORY, args.tokens) for _ in range(4)))
        result.aggregate_c4 = sum(c for _, _, c in counts) / (time.perf_counter() - started)
        for kind, build in PROMPTS.items() if questions else ():
            result.correct[kind] = 0
            for item in questions:
                text = await answer(session, url, build(item), args.answer_tokens)
                expected = [str(a).lower() for a in item["answers"]]
                ok = any(a in text.lower() for a in expected)
                result.correct[kind] += ok
                result.answer_words.append(len(text.split()))
                if not ok:
                    result.wrong.append(f"{kind} #{item['id']} {item['question']} -> {text.strip()[:100]!r}")
        result.questions = len(questions)


def run_target(target: str, args: argparse.Namespace, questions: list[dict[str, Any]], logs: Path) -> Result:
    port = free_port()
    cmd, env = command(target, args, port)
    log = (logs / f"{target}.log").open("ab")
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    base = f"http://127.0.0.1:{port}"
    result = Result()
    try:
        asyncio.run(wait_ready(f"{base}/v1/ready" if target == "megaservice" else f"{base}/v1/models", proc))
        result.ready_s = time.perf_counter() - started
        result.rss_mib = rss_mib(proc.pid)
        asyncio.run(measure(f"{base}/v1/chat/completions", args, questions, result, proc.pid))
        result.peak_rss_mib = peak_rss_mib(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    return result


def table(results: dict[str, list[Result]], args: argparse.Namespace) -> str:
    lines = [
        f"{args.rounds} rounds, {args.threads} threads, n_ctx {args.context}, {args.tokens}-token stories, "
        f"OMP_WAIT_POLICY {args.omp_wait_policy or 'unset'}, medians over rounds",
        "",
        "| server | ready s | RSS MiB loaded / peak | TTFT p50 ms | decode tok/s c=1 | CPU ms/token c=1 "
        "| aggregate tok/s c=4 "
        "| RAG QA correct, OPEA prompt / context in system | answer words (mean) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for target, runs in results.items():
        med = statistics.median
        lines.append(
            f"| {target} | {med(r.ready_s for r in runs):.2f} | {med(r.rss_mib for r in runs):.0f} / "
            f"{med(r.peak_rss_mib for r in runs):.0f} | {med(med(r.ttft) for r in runs) * 1000:.1f} | "
            f"{med(med(r.decode_c1) for r in runs):.0f} | {med(r.cpu_ms_per_token for r in runs):.1f} | "
            f"{med(r.aggregate_c4 for r in runs):.0f} | "
            f"{runs[0].correct.get('opea')}/{runs[0].questions} / {runs[0].correct.get('system')}/{runs[0].questions} "
            f"| {statistics.mean(runs[0].answer_words):.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", default="megaservice,llama.cpp")
    parser.add_argument("--model", help="a GGUF file (default: the packaged SmolLM2-135M-Instruct)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--context", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--omp-wait-policy",
        help="OMP_WAIT_POLICY of both servers (default: unset; ours then sets PASSIVE, llama.cpp's server spins)",
    )
    parser.add_argument("--ttft-requests", type=int, default=20)
    parser.add_argument("--streams", type=int, default=5, help="single streams measured for decode tok/s")
    parser.add_argument("--tokens", type=int, default=128, help="max_tokens of the story streams")
    parser.add_argument("--answer-tokens", type=int, default=48, help="max_tokens of the QA answers")
    parser.add_argument("--questions", default=str(HERE / "data" / "rag_qa.jsonl"))
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args()
    questions = [json.loads(line) for line in Path(args.questions).read_text().splitlines() if line.strip()]
    logs = Path(args.out) / time.strftime("llm-server-%Y%m%d-%H%M%S")
    logs.mkdir(parents=True, exist_ok=True)
    targets = args.targets.split(",")
    results: dict[str, list[Result]] = {t: [] for t in targets}
    for round_ in range(args.rounds):
        for target in targets if round_ % 2 == 0 else list(reversed(targets)):
            result = run_target(target, args, questions if round_ == 0 else [], logs)  # greedy: QA once
            results[target].append(result)
            print(
                f"r{round_} {target:11} ready {result.ready_s:.2f} s  "
                f"RSS {result.rss_mib:.0f}/{result.peak_rss_mib:.0f} MiB  "
                f"TTFT p50 {statistics.median(result.ttft) * 1000:.1f} ms  "
                f"c=1 {statistics.median(result.decode_c1):.0f} tok/s {result.cpu_ms_per_token:.1f} CPU ms/token  "
                f"c=4 {result.aggregate_c4:.0f} tok/s  "
                f"QA {result.correct} of {result.questions}",
                file=sys.stderr,
                flush=True,
            )
            if round_ == 0:
                for line in result.wrong:
                    print(f"    wrong: {line}", file=sys.stderr)
    report = table(results, args)
    print(report)
    (logs / "table.md").write_text(report + "\n")


if __name__ == "__main__":
    main()
