"""The CLIP server on a tiny randomly initialised CLIP checkpoint: the real transformers code path, no weights.

No pretrained CLIP weights can be installed here, so the session builds a tiny `CLIPModel` (random
weights, a byte-level tokenizer, a 32-pixel image processor) and saves it as a checkpoint folder;
the server loads it as it loads `openai/clip-vit-base-patch32`. The vectors mean nothing, so the
tests check that they are the model's: equal to what transformers computes for the same inputs.
"""

import base64
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from starlette.applications import Starlette
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from megaservice.components.clip import ClipSettings, create_service
from megaservice.components.clip.images import ImageLimits, fetch
from megaservice.components.clip.transformers_clip import TransformersClip
from megaservice.components.embedding import EmbeddingSettings, create_service as create_embedding_service
from megaservice.exceptions import InputError
from megaservice.protocol.docs import EmbedDoc, EmbedMultimodalDoc
from megaservice.testing import client_for, serve
from tests.components.test_embedding_service import wait_ready

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
Image = pytest.importorskip("PIL.Image")

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

DIMENSION = 16


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random CLIP checkpoint folder: weights, a byte-level BPE tokenizer, an image processor."""
    from tokenizers import pre_tokenizers
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    folder = tmp_path_factory.mktemp("tiny-clip")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[char] = len(vocab)
        vocab[char + "</w>"] = len(vocab)
    transformers.CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77).save_pretrained(folder)
    text = {"vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2}
    text |= {"num_attention_heads": 4, "max_position_embeddings": 77, "bos_token_id": 0, "eos_token_id": 1}
    vision = {"image_size": 32, "patch_size": 8, "hidden_size": 32, "intermediate_size": 37}
    vision |= {"num_hidden_layers": 2, "num_attention_heads": 4}
    torch.manual_seed(0)
    config = transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=DIMENSION)
    transformers.CLIPModel(config).save_pretrained(folder)
    CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


class Reference:
    """The same checkpoint run by transformers directly: what the server's vectors must equal."""

    def __init__(self, folder: Path) -> None:
        self.model = transformers.CLIPModel.from_pretrained(folder).eval()
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
        self.processor = transformers.AutoImageProcessor.from_pretrained(folder)

    def text(self, text: str) -> np.ndarray:
        with torch.inference_mode():
            output = self.model.get_text_features(**self.tokenizer([text], return_tensors="pt"))
        return _unit(output.pooler_output[0].numpy())

    def image(self, image: Any) -> np.ndarray:
        with torch.inference_mode():
            output = self.model.get_image_features(**self.processor(images=[image], return_tensors="pt"))
        return _unit(output.pooler_output[0].numpy())


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)


@pytest.fixture(scope="session")
def reference(checkpoint: Path) -> Reference:
    return Reference(checkpoint)


def png(color: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> bytes:
    output = io.BytesIO()
    Image.new("RGB", size, color).save(output, format="PNG")
    return output.getvalue()


RED, BLUE = png((220, 30, 30)), png((20, 40, 200))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="session")
def clip_backend(checkpoint: Path):
    """One loaded model for the session (the server loads it on start; a second start finds it loaded)."""
    backend = TransformersClip(str(checkpoint))
    backend.load()
    return backend


def clip_service(backend, **environ: str):
    return create_service(ClipSettings.from_env(environ), backend)


@pytest.fixture
async def client(clip_backend) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(clip_service(clip_backend).app) as client:
        assert (await wait_ready(client)).status_code == 200
        yield client


@pytest.fixture
async def image_server() -> AsyncIterator[str]:
    """A web server with a PNG at /red.png, a redirect at /moved, a text page at /text."""

    async def red(_: Any) -> Response:
        return Response(RED, media_type="image/png")

    async def text(_: Any) -> Response:
        return Response(b"not an image", media_type="text/plain")

    async def moved(_: Any) -> Response:
        return RedirectResponse("/red.png")

    app = Starlette(routes=[Route("/red.png", red), Route("/text", text), Route("/moved", moved)])
    async with serve(app) as url:
        yield url


async def test_texts_and_images_come_out_as_the_models_vectors_in_one_space(client, reference):
    body = {"input": ["a red square", {"image": b64(RED)}, {"type": "image_url", "image_url": {"url": b64(BLUE)}}]}
    answer = (await client.post("/v1/embeddings", json=body)).json()
    text, red, blue = (np.array(item["embedding"]) for item in answer["data"])
    assert text.shape == red.shape == blue.shape == (DIMENSION,)
    assert np.allclose(text, reference.text("a red square"), atol=1e-5)
    assert np.allclose(red, reference.image(Image.open(io.BytesIO(RED)).convert("RGB")), atol=1e-5)
    assert np.allclose(blue, reference.image(Image.open(io.BytesIO(BLUE)).convert("RGB")), atol=1e-5)
    assert float(red @ blue) < 0.9999  # different images, different vectors
    assert [item["index"] for item in answer["data"]] == [0, 1, 2]


async def test_a_base64_image_a_data_url_and_an_opea_image_doc_agree(client):
    plain = (await client.post("/v1/embeddings", json={"input": [{"image": b64(RED)}]})).json()
    data_url = await client.post("/v1/embeddings", json={"input": [{"image": "data:image/png;base64," + b64(RED)}]})
    image_doc = (await client.post("/v1/embeddings", json={"base64_image": b64(RED)})).json()
    vector = plain["data"][0]["embedding"]
    assert np.allclose(data_url.json()["data"][0]["embedding"], vector)
    doc = EmbedMultimodalDoc.model_validate(image_doc)
    assert np.allclose(doc.embedding, vector) and doc.base64_image == b64(RED)


async def test_an_image_url_to_a_private_address_is_refused(client, image_server):
    for url in (image_server + "/red.png", "http://10.1.2.3/cat.png", "http://[::1]/cat.png"):
        answer = await client.post("/v1/embeddings", json={"input": [{"image": url}]})
        assert answer.status_code == 400, url
        assert "non-public address" in answer.json()["detail"]
    schemes = await client.post("/v1/embeddings", json={"url": "file:///etc/passwd"})
    assert schemes.status_code == 400
    assert "only http and https URLs" in schemes.json()["detail"]


async def test_image_urls_are_fetched_when_private_addresses_are_allowed(clip_backend, image_server):
    service = clip_service(clip_backend, MEGASERVICE_ALLOW_PRIVATE_URLS="1")
    async with client_for(service.app) as client:
        by_url = await client.post("/v1/embeddings", json={"url": image_server + "/red.png"})
        by_base64 = await client.post("/v1/embeddings", json={"input": [{"image": b64(RED)}]})
        moved = await client.post("/v1/embeddings", json={"input": [{"image": image_server + "/moved"}]})
        not_image = await client.post("/v1/embeddings", json={"input": [{"image": image_server + "/text"}]})
    doc = EmbedMultimodalDoc.model_validate(by_url.json())
    assert doc.url == image_server + "/red.png"
    assert np.allclose(doc.embedding, by_base64.json()["data"][0]["embedding"], atol=1e-6)
    assert moved.status_code == 400 and "HTTP 307 (redirects are not followed)" in moved.json()["detail"]
    assert not_image.status_code == 400 and "not an image" in not_image.json()["detail"]


async def test_opeas_text_doc_and_chat_shapes(client, reference):
    one = EmbedDoc.model_validate((await client.post("/v1/embeddings", json={"text": "a cat"})).json())
    many = (await client.post("/v1/embeddings", json={"text": ["a cat", "a dog"]})).json()
    parts = [{"type": "text", "text": "a cat"}, {"type": "image_url", "image_url": {"url": b64(RED)}}]
    chat_body = {"messages": [{"role": "user", "content": parts}]}
    chat = (await client.post("/v1/embeddings", json=chat_body)).json()
    with_input = (await client.post("/v1/embeddings", json={"messages": "hi", "input": ["a dog"]})).json()
    assert np.allclose(one.embedding, reference.text("a cat"), atol=1e-5)
    assert np.array(many["embedding"]).shape == (2, DIMENSION)
    vectors = [item["embedding"] for item in chat["embedding"]["data"]]
    assert np.allclose(vectors[0], reference.text("a cat"), atol=1e-5)
    assert np.allclose(vectors[1], reference.image(Image.open(io.BytesIO(RED)).convert("RGB")), atol=1e-5)
    assert chat["messages"] == chat_body["messages"]
    assert np.allclose(with_input["embedding"]["data"][0]["embedding"], reference.text("a dog"), atol=1e-5)


async def test_dimensions_truncate_and_raw_features_on_request(clip_backend, client, reference):
    short = (await client.post("/v1/embeddings", json={"input": "a cat", "dimensions": 4})).json()
    too_many = await client.post("/v1/embeddings", json={"input": "a cat", "dimensions": 17})
    full = reference.text("a cat")
    assert np.allclose(short["data"][0]["embedding"], _unit(full[:4]), atol=1e-5)
    assert too_many.status_code == 400 and "larger than the model's 16 dimensions" in too_many.json()["detail"]
    async with client_for(clip_service(clip_backend, CLIP_NORMALIZE="0").app) as raw_client:
        raw = (await raw_client.post("/v1/embeddings", json={"input": "a cat"})).json()["data"][0]["embedding"]
    assert abs(np.linalg.norm(raw) - 1) > 1e-3
    assert np.allclose(_unit(np.array(raw)), full, atol=1e-5)


@pytest.mark.parametrize(
    ("body", "status", "names"),
    [
        ({"input": [{"image": "not base64 at all!"}]}, 400, "an image must be an http(s) URL"),
        ({"input": [{"image": b64(b"plain bytes")}]}, 400, "not an image PIL can read"),
        ({"input": [{"image": b64(png((1, 2, 3), (300, 200)))}]}, 413, "image of 300x200 pixels; at most 50000"),
        ({"input": [{"image": "x" * 200_000}]}, 413, "image larger than 100000 bytes"),
        ({"input": [{"image": ""}]}, 400, "names no image"),
        ({"input": [{"audio": "x"}]}, 400, "must be a text, {'image'"),
        ({"input": []}, 400, "empty list"),
        ({"input": ["a"] * 5}, 413, "`input` has 5 items; at most 4"),
        ({"image": {"url": "x"}, "text": {"text": "y"}}, 400, "not the pair"),
        ({"query": "x"}, 400, "the body must have `input`"),
    ],
)
async def test_bad_input_is_refused_naming_what_is_wrong(clip_backend, body, status, names):
    environ = {"CLIP_MAX_INPUTS": "4", "CLIP_MAX_IMAGE_BYTES": "100000", "CLIP_MAX_IMAGE_PIXELS": "50000"}
    async with client_for(clip_service(clip_backend, **environ).app) as client:
        answer = await client.post("/v1/embeddings", json=body)
    assert answer.status_code == status
    assert names in answer.json()["detail"]


async def test_https_images_are_fetched_from_the_checked_address_with_the_hosts_certificate(tls):
    async def red(_: Any) -> Response:
        return Response(RED, media_type="image/png")

    async with serve(Starlette(routes=[Route("/red.png", red)]), ssl_certfile=tls.pem) as url:
        limits = ImageLimits(allow_private=True, ssl_context=tls.client)
        assert await anyio_run(fetch, url + "/red.png", limits) == RED
        with pytest.raises(InputError, match="cannot fetch the image"):  # the system CAs do not know this one
            await anyio_run(fetch, url + "/red.png", ImageLimits(allow_private=True))


async def anyio_run(function: Any, *args: Any) -> Any:
    import anyio.to_thread

    return await anyio.to_thread.run_sync(function, *args)


async def test_the_embedding_services_clip_backend_forwards_texts_to_the_clip_server(
    clip_backend, reference, upstream_client
):
    async with serve(clip_service(clip_backend).app) as clip_url:
        settings = EmbeddingSettings.from_env(
            {"EMBEDDING_BACKEND": "OPEA_CLIP_EMBEDDING", "CLIP_EMBEDDING_ENDPOINT": clip_url}
        )
        async with client_for(create_embedding_service(settings).app) as client:
            assert (await wait_ready(client)).status_code == 200
            answer = (await client.post("/v1/embeddings", json={"input": ["a cat", "a dog"]})).json()
            doc = (await client.post("/v1/embeddings", json={"text": "a cat"})).json()
    assert answer["model"] == str(clip_backend.model_id)
    assert np.allclose(answer["data"][1]["embedding"], reference.text("a dog"), atol=1e-5)
    assert np.allclose(doc["embedding"], reference.text("a cat"), atol=1e-5)


async def test_a_checkpoint_that_is_not_there_keeps_ready_at_503_saying_why(tmp_path):
    service = create_service(ClipSettings.from_env({"CLIP_MODEL": str(tmp_path / "missing")}))
    async with client_for(service.app) as client:
        answer = await client.get("/v1/ready")
        for _ in range(200):
            if "reason" in answer.json() and "missing" in answer.json()["reason"]:
                break
            import anyio

            await anyio.sleep(0.02)
            answer = await client.get("/v1/ready")
    assert answer.status_code == 503
    assert "missing" in answer.json()["reason"]
