"""The `transformers` backend of the CLIP server: `CLIPModel` with its tokenizer and image processor.

The checkpoint is read with `from_pretrained` (a folder with `config.json`, the weights,
`preprocessor_config.json` and the tokenizer files, as `openai/clip-vit-base-patch32` ships them).
Without torchvision, transformers picks CLIP's PIL image processor. Inference runs in one worker
thread with `CLIP_THREADS` torch threads (`torch.inference_mode`). Needs
`pip install 'megaservice[clip]'` (torch, transformers, pillow).
"""

import threading
from typing import TYPE_CHECKING, Any

from megaservice.components._shared.blocking import Loader, Worker
from megaservice.components._shared.deps import require

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    from PIL.Image import Image

__all__ = ["TransformersClip"]


class TransformersClip:
    """A CLIP checkpoint on the CPU (a `ClipBackend`): loaded on `start()`, called in one worker thread."""

    name = "transformers"

    def __init__(self, model: str, *, threads: int = 2) -> None:
        self._name = model
        self._threads = threads
        self._worker = Worker(threads=1)
        self._lock = threading.Lock()
        self._model: Any = None
        self._tokenizer: Any = None
        self._processor: Any = None
        self._max_tokens = 77
        self._loading = Loader(self._worker, self.load, lambda: self._model is not None)

    @property
    def model_id(self) -> str:
        """The checkpoint's name or folder."""
        return self._name

    @property
    def dimension(self) -> int | None:
        """The projection's size (`None` until loaded)."""
        return None if self._model is None else int(self._model.config.projection_dim)

    def load(self) -> None:
        """Read the model, its tokenizer and its image processor (blocking)."""
        with self._lock:
            if self._model is not None:
                return
            torch = require("torch", "clip")
            transformers = require("transformers", "clip")
            require("PIL", "clip", "pillow")
            torch.set_num_threads(self._threads)
            model = transformers.CLIPModel.from_pretrained(self._name).eval()
            self._tokenizer = transformers.AutoTokenizer.from_pretrained(self._name)
            self._processor = transformers.AutoImageProcessor.from_pretrained(self._name)
            self._max_tokens = int(model.config.text_config.max_position_embeddings)
            self._model = model

    async def start(self) -> None:
        """Load in the worker thread; a failure is kept and reported by `ready()`."""
        await self._loading.start()

    async def ready(self) -> bool:
        """Whether the model is loaded (raises what stopped it from loading: `/v1/ready` shows it)."""
        return self._loading.ready()

    def texts(self, texts: list[str]) -> "npt.NDArray[np.float32]":
        """Text vectors (blocking; texts cut at the model's 77 tokens)."""
        import torch

        self.load()
        inputs = self._tokenizer(texts, padding=True, truncation=True, max_length=self._max_tokens, return_tensors="pt")
        with torch.inference_mode():
            output = self._model.get_text_features(
                input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]
            )
        return _features(output)

    def images(self, images: "list[Image]") -> "npt.NDArray[np.float32]":
        """Image vectors (blocking; resized and centre-cropped by the model's image processor)."""
        import torch

        self.load()
        pixels = self._processor(images=images, return_tensors="pt")["pixel_values"]
        with torch.inference_mode():
            output = self._model.get_image_features(pixel_values=pixels)
        return _features(output)

    async def embed_texts(self, texts: list[str]) -> "npt.NDArray[np.float32]":
        """CLIP's text vectors, computed in the worker thread."""
        return await self._worker.run(self.texts, texts)

    async def embed_images(self, images: "list[Image]") -> "npt.NDArray[np.float32]":
        """CLIP's image vectors, computed in the worker thread."""
        return await self._worker.run(self.images, images)

    async def aclose(self) -> None:
        """Nothing to release (the model goes with the process)."""


def _features(output: Any) -> "npt.NDArray[np.float32]":
    """The projected features: transformers 5 answers a model output (`pooler_output`), 4 a tensor."""
    tensor = output if hasattr(output, "numpy") else output.pooler_output
    features: npt.NDArray[np.float32] = tensor.float().numpy()
    return features
