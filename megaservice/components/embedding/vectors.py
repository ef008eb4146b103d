"""What the service does to a backend's vectors before answering: normalise, truncate, encode.

    finish(vectors, normalize=True, dimensions=256)    the first 256 components, L2-normalised again
    as_base64(row)                                      OpenAI's `encoding_format: "base64"`: little-endian float32

`dimensions` truncates and renormalises, as OpenAI's text-embedding-3 models and OPEA's CLIP server
do (a Matryoshka-style shortening; for a model not trained for it, the short vectors are rougher).
"""

import base64

from megaservice.exceptions import InputError, MissingDependencyError

try:
    import numpy as np
    import numpy.typing as npt
except ImportError as exc:  # pragma: no cover - numpy comes with the embedding extra
    raise MissingDependencyError("numpy", "embedding") from exc

__all__ = ["as_base64", "check_dimensions", "finish"]


def check_dimensions(dimensions: int | None, available: int) -> None:
    """`InputError` (400) if `dimensions` asks for more components than the model's `available`."""
    if dimensions is not None and dimensions > available:
        raise InputError(f"`dimensions` {dimensions} is larger than the model's {available} dimensions")


def finish(
    vectors: "npt.NDArray[np.float32]", *, normalize: bool = True, dimensions: int | None = None
) -> "npt.NDArray[np.float32]":
    """`vectors` cut to `dimensions` components (if given) and L2-normalised (if `normalize`), as float32."""
    check_dimensions(dimensions, vectors.shape[1])
    if dimensions is not None:
        vectors = vectors[:, :dimensions]
    if normalize:
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.maximum(norms, 1e-12)
    finished: npt.NDArray[np.float32] = np.ascontiguousarray(vectors, dtype=np.float32)
    return finished


def as_base64(row: "npt.NDArray[np.float32]") -> str:
    """One vector as OpenAI's base64: the bytes of little-endian float32 values."""
    return base64.b64encode(row.astype("<f4", copy=False).tobytes()).decode("ascii")
