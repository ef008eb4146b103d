"""The packaged bias detector's arithmetic: a logistic-regression head over MiniLM sentence embeddings.

`model.json` (written by `scripts/train_bias_model.py`, trained on `data/train.jsonl`) holds 384
weights, a bias and the default threshold chosen by cross-validation:

    P(BIASED) = sigmoid(weights . embedding + bias)        biased when P(BIASED) >= threshold

The embeddings are all-MiniLM-L6-v2's (`megaservice.components.embedding.minilm.MiniLM`). A text
is embedded whole while it is short (the training sentences are 1 to 53 words); a longer one is cut
into its sentences (`segments`), each scored alone, so that a neutral majority does not dilute a
biased sentence (mean pooling would), and the text takes its most biased sentence's score.
"""

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["HEAD_FILE", "BiasHead", "segments"]

HEAD_FILE = Path(__file__).resolve().parent / "model.json"
"""The packaged head."""

_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+|\s*\n\s*")


@dataclass(frozen=True, slots=True)
class BiasHead:
    """The weights of a logistic-regression head, and the threshold it was tuned for."""

    weights: "npt.NDArray[np.float64]"
    bias: float
    threshold: float
    metrics: dict[str, Any] = field(default_factory=dict)
    """What `model.json` records of its evaluation (`cv_train`, `test`, `challenge`)."""

    @classmethod
    def load(cls, path: Path = HEAD_FILE) -> "BiasHead":
        """Read a head from `model.json` (blocking; `ValueError` naming the file if it is not one)."""
        import numpy as np

        model = json.loads(path.read_text(encoding="utf-8"))
        weights = np.asarray(model.get("weights", ()), dtype=np.float64)
        if weights.ndim != 1 or weights.shape[0] != model.get("dim"):
            raise ValueError(f"{path}: weights of shape {weights.shape} do not match dim {model.get('dim')}")
        return cls(weights, float(model["bias"]), float(model["threshold"]), dict(model.get("metrics", {})))

    def probabilities(self, embeddings: "npt.NDArray[np.float32]") -> "npt.NDArray[np.float64]":
        """P(BIASED) of each row of `embeddings` (normalised MiniLM vectors)."""
        import numpy as np

        z = embeddings.astype(np.float64) @ self.weights + self.bias
        result: npt.NDArray[np.float64] = np.exp(-np.logaddexp(0.0, -z))  # sigmoid, stable for any z
        return result


def segments(text: str, max_words: int) -> list[str]:
    """What of `text` is scored: itself up to `max_words` words, else its sentences (long ones cut in windows)."""
    words = text.split()
    if len(words) <= max_words:
        return [text]
    pieces: list[str] = []
    for sentence in _SENTENCE_END.split(text):
        sentence_words = sentence.split()
        pieces.extend(" ".join(sentence_words[i : i + max_words]) for i in range(0, len(sentence_words), max_words))
    return pieces
