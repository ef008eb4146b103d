"""dataprep's request fields: source names, link_list and chunk parameters, each refusal saying what is wrong."""

import pytest

from megaservice.components.dataprep.chunking import ChunkParams
from megaservice.components.dataprep.inputs import MAX_LINKS, read_chunk_params, read_link_list, source_name
from megaservice.exceptions import InputError


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("report.pdf", "report.pdf"),
        ("docs/a/README.md", "docs/a/README.md"),
        ("docs\\win\\file.txt", "docs/win/file.txt"),
        ("a//b.txt", "a/b.txt"),
        ("  spaced name.txt ", "spaced name.txt"),
        ("e\u0301t\u00e9.txt", "\u00e9t\u00e9.txt"),  # NFC
    ],
)
def test_source_names_kept(sent, kept):
    assert source_name(sent) == kept


@pytest.mark.parametrize(
    ("sent", "message"),
    [
        ("../secret.txt", r"'\.' or '\.\.' part"),
        ("docs/../../etc/passwd", r"'\.' or '\.\.' part"),
        ("..\\..\\boot.ini", r"'\.' or '\.\.' part"),
        ("./x.txt", r"'\.' or '\.\.' part"),
        ("/etc/passwd", "absolute path"),
        ("C:\\Windows\\win.ini", "absolute path"),
        ("c:relative.txt", "absolute path"),
        ("a\x00b.txt", "control characters"),
        ("line\nbreak.txt", "control characters"),
        ("", "no file name"),
        ("   ", "no file name"),
        (None, "no file name"),
        ("x" * 300 + ".txt", "too long"),
    ],
)
def test_source_names_refused(sent, message):
    with pytest.raises(InputError, match=message) as caught:
        source_name(sent)
    assert caught.value.status_code == 400


def test_link_list_read():
    assert read_link_list(None) == []
    assert read_link_list("  ") == []
    assert read_link_list('["https://example.org/a", "http://example.org/b", "https://example.org/a"]') == [
        "https://example.org/a",
        "http://example.org/b",
    ]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("https://example.org", "JSON list of URLs"),
        ("{'a': 1}", "JSON list of URLs"),
        ('{"url": "https://example.org"}', "not a JSON dict"),
        ('"https://example.org"', "not a JSON str"),
        ("[1, 2]", r"link_list\[0\]` must be a URL string"),
        ('["ftp://example.org/file"]', r"link_list\[0\]` is not an http\(s\) URL"),
        ('["https://example.org", "file:///etc/passwd"]', r"link_list\[1\]` is not an http\(s\) URL"),
        ('["javascript:alert(1)"]', "not an http"),
        ('["http://"]', "not an http"),
    ],
)
def test_link_list_refused(value, message):
    with pytest.raises(InputError, match=message) as caught:
        read_link_list(value)
    assert caught.value.status_code == 400


def test_link_list_too_long_is_413():
    links = "[" + ",".join(f'"https://example.org/{i}"' for i in range(MAX_LINKS + 1)) + "]"
    with pytest.raises(InputError, match="at most") as caught:
        read_link_list(links)
    assert caught.value.status_code == 413


def test_chunk_params_from_a_form():
    defaults = ChunkParams(1500, 100)
    assert read_chunk_params({}, defaults) == defaults
    assert read_chunk_params({"chunk_size": "800", "chunk_overlap": " 0 "}, defaults) == ChunkParams(800, 0)
    assert read_chunk_params({"chunk_size": ""}, defaults) == defaults
    with pytest.raises(InputError, match=r"`chunk_size` must be an integer, not 'big'"):
        read_chunk_params({"chunk_size": "big"}, defaults)
    with pytest.raises(InputError, match="chunk_overlap"):
        read_chunk_params({"chunk_size": "50"}, defaults)  # the default overlap (100) is not below 50
