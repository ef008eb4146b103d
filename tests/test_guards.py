import io

import pytest

from megaservice import InputError
from megaservice.guards import check_url, read_upload, safe_path


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("report.pdf", "report.pdf"),
        ("../../etc/passwd", "passwd"),
        ("/etc/shadow", "shadow"),
        ("C:\\Windows\\win.ini", "win.ini"),
        ("dir/sub/notes.txt", "notes.txt"),
    ],
)
def test_safe_path_keeps_only_the_last_component(tmp_path, name, expected):
    path = safe_path(tmp_path, name)
    assert path == tmp_path.resolve() / expected
    assert path.parent == tmp_path.resolve()


@pytest.mark.parametrize("name", ["", ".", "..", "../", "a/..", "bad\x00name", "line\nbreak", "x" * 300])
def test_safe_path_refuses_names_that_are_not_files(tmp_path, name):
    with pytest.raises(InputError):
        safe_path(tmp_path, name)


class _Upload:
    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    async def read(self, size: int = -1) -> bytes:
        return self._data.read(size)


@pytest.mark.anyio
async def test_read_upload_stops_past_the_limit():
    assert await read_upload(_Upload(b"x" * 1000), max_bytes=1000) == b"x" * 1000
    with pytest.raises(InputError) as refused:
        await read_upload(_Upload(b"x" * 200_000), max_bytes=100_000)
    assert refused.value.status_code == 413


@pytest.mark.anyio
@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/admin",
        "http://localhost:8080/",
        "http://[::1]/",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.5/",
        "http://192.168.1.1/",
        "http://100.64.0.1/",
        "http://0.0.0.0/",
        "http://[::ffff:127.0.0.1]/",
    ],
)
async def test_check_url_refuses_private_addresses(url):
    with pytest.raises(InputError, match="non-public"):
        await check_url(url)
    assert await check_url(url, allow_private=True) == url


@pytest.mark.anyio
@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/x", "gopher://x/", "//no-scheme/x"])
async def test_check_url_refuses_other_schemes(url):
    with pytest.raises(InputError, match="only http and https"):
        await check_url(url, allow_private=True)


@pytest.mark.anyio
async def test_check_url_refuses_credentials_and_accepts_public_addresses():
    with pytest.raises(InputError, match="credentials"):
        await check_url("http://user:pw@8.8.8.8/")
    assert await check_url("https://8.8.8.8/dns") == "https://8.8.8.8/dns"
