"""`handle_message`: OPEA's prompt flattening, with bad input refused as a 400 and no file or private URL read."""

import base64
import io
import re
from typing import Any

import anyio
import pytest
from PIL import Image

from megaservice import InputError, messages
from megaservice.messages import handle_message
from tests.test_guards import serve_files


def test_messages_become_one_prompt():
    chat: list[dict[str, Any]] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": ""},
        {"role": "user", "content": [{"type": "text", "text": "What is"}, {"type": "text", "text": "this?"}]},
    ]
    assert handle_message(chat) == "Be brief.\nuser: Hi\nassistant:user: What is\nthis?\n"
    assert handle_message("plain") == "plain"


@pytest.mark.parametrize(
    ("chat", "error"),
    [
        ([{"content": "no role"}], "messages[0] must be an object with a 'role'"),
        (["not an object"], "messages[0] must be an object"),
        ([{"role": "tool", "content": "x"}], "Unknown role: tool"),
        ([{"role": "assistant", "content": [{"type": "text", "text": "x"}]}], "messages[0].content must be a string"),
        ([{"role": "user", "content": [{"type": "audio"}]}], "each part must be a text or an image_url part"),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}], "each part must be"),
    ],
)
def test_malformed_messages_are_an_input_error(chat, error):
    with pytest.raises(InputError, match=re.escape(error)) as caught:
        handle_message(chat)
    assert isinstance(caught.value, ValueError)  # OPEA code catching ValueError still does
    assert caught.value.status_code == 400


def image_message(url: str) -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": [{"type": "text", "text": "see"}, {"type": "image_url", "image_url": {"url": url}}]}
    ]


@pytest.fixture
def images():
    """Change the image settings for one test (`set_image_settings` returns the previous ones)."""
    previous = messages.get_image_settings()
    yield messages.set_image_settings
    messages.set_image_settings(previous)


def test_local_images_are_read_only_inside_the_image_directory(tmp_path, images):
    picture = tmp_path / "inside.png"
    Image.new("RGB", (2, 2), "red").save(picture)
    outside = tmp_path.parent / "outside.png"
    Image.new("RGB", (2, 2), "blue").save(outside)
    images(directory=None)
    assert handle_message(image_message(str(picture)))[1] == [str(picture)]  # not read: taken as base64 text
    images(directory=tmp_path)
    _, images = handle_message(image_message("inside.png"))  # type: ignore[str-unpack]
    assert Image.open(io.BytesIO(base64.b64decode(images[0]))).getpixel((0, 0)) == (255, 0, 0, 255)
    for escape in ("../outside.png", str(outside), "/etc/passwd"):
        assert handle_message(image_message(escape))[1] == [escape]  # never read


def test_image_urls_must_be_public(images):
    images(allow_private_urls=False)
    for url in ("http://127.0.0.1/x.png", "http://169.254.169.254/latest/meta-data", "http://10.0.0.1/x.png"):
        with pytest.raises(InputError, match="non-public address"):
            handle_message(image_message(url))


@pytest.mark.anyio
async def test_image_urls_are_fetched_as_png_and_bounded(images):
    picture = io.BytesIO()
    Image.new("RGB", (2, 2), (0, 0, 255)).save(picture, format="JPEG")
    files = {"/blue.jpg": picture.getvalue(), "/huge.jpg": b"x" * (20 * 1024 * 1024 + 1)}
    async with serve_files(files) as (port, seen):
        images(allow_private_urls=True)
        message = image_message(f"http://127.0.0.1:{port}/blue.jpg")
        _, fetched = await anyio.to_thread.run_sync(handle_message, message)  # type: ignore[str-unpack]
        assert Image.open(io.BytesIO(base64.b64decode(fetched[0]))).format == "PNG"
        assert seen[0]["accept"] == "image/*"
        with pytest.raises(InputError, match="larger than") as too_big:
            await anyio.to_thread.run_sync(handle_message, image_message(f"http://127.0.0.1:{port}/huge.jpg"))
        assert too_big.value.status_code == 413
