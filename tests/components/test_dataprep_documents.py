"""dataprep's readers and chunker: each format's text, pages kept, bad files refused with the file named."""

import io
import itertools
import zipfile

import orjson
import pytest

from megaservice.components.dataprep import documents
from megaservice.components.dataprep.chunking import ChunkParams, split
from megaservice.components.dataprep.documents import (
    MAX_UNPACKED_BYTES,
    SUFFIXES,
    Document,
    Section,
    format_of,
    format_of_content_type,
    read_document,
)
from megaservice.exceptions import InputError
from megaservice.testing.documents import make_docx, make_pdf, prose


def test_formats_by_suffix_and_content_type():
    assert format_of("a/b/Report.PDF") == "pdf"
    assert format_of("notes.markdown") == "markdown"
    assert format_of("data.ndjson") == "jsonl"
    assert format_of("archive.zip") is None
    assert format_of("README") is None
    assert format_of("weird.d/file") is None
    assert format_of_content_type("text/html; charset=utf-8") == "html"
    assert format_of_content_type("application/octet-stream") is None
    assert set(SUFFIXES.values()) == {"text", "markdown", "html", "pdf", "docx", "csv", "json", "jsonl"}


def test_text_in_its_encodings():
    assert read_document("a.txt", "héllo wörld".encode()).sections[0].text == "héllo wörld"
    assert read_document("a.txt", b"\xef\xbb\xbfbom").sections[0].text == "bom"
    assert read_document("a.txt", "utf sixteen".encode("utf-16")).sections[0].text == "utf sixteen"
    assert read_document("a.txt", "caf\xe9".encode("cp1252")).sections[0].text == "café"
    text = read_document("a.txt", b"one\r\ntwo\n\n\n\n\nthree   ").sections[0].text
    assert text == "one\ntwo\n\nthree"  # CRLF unified, blank runs cut


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("blob.txt", b"\x00\x01\x02\xff\xfe\x00" * 100),
        ("blob.txt", b"abc\x00def"),  # report D4: valid UTF-8, so it was read with its NUL dropped
        ("blob.txt", b"\xef\xbb\xbfabc\x00def"),
        ("blob.txt", b"a" * 10_000 + b"\x00"),  # past the first 8 KiB too
        ("blob.md", "utf-16 without its BOM".encode("utf-16-le")),
        ("blob.csv", b"a,b\n1,\x002\n"),
        ("blob.json", b'{"a": "x\x00"}'),
    ],
)
def test_binary_named_text_is_refused(name, data):
    with pytest.raises(InputError, match=r"blob\.(txt|md|csv|json): binary data") as caught:
        read_document(name, data)
    assert caught.value.status_code == 400


@pytest.mark.parametrize("data", [b"", b"   \n\t  ", b"\n\n"])
def test_an_empty_file_is_refused(data):
    with pytest.raises(InputError, match=r"empty\.txt: the file is empty") as caught:
        read_document("empty.txt", data)
    assert caught.value.status_code == 400


def test_unsupported_type_is_a_415_listing_the_supported_ones():
    with pytest.raises(InputError, match=r"tool\.exe: unsupported file type.*\.pdf") as caught:
        read_document("tool.exe", b"MZ...")
    assert caught.value.status_code == 415


def test_html_keeps_the_visible_text_and_the_title():
    html = b"""<html><head><title>The Guide</title><style>p {color: red}</style></head>
    <body><nav>Home</nav><h1>Install</h1><p>Run <b>pip</b> install, then <i>start</i>.</p>
    <script>alert('x')</script><ul><li>one</li><li>two</li></ul><template>hidden</template></body></html>"""
    document = read_document("guide.html", html)
    text = document.sections[0].text
    assert document.metadata == {"title": "The Guide"}
    assert "Run pip install, then start." in text  # inline markup does not break lines
    assert "Install\n" in text
    assert "one\n" in text and "two" in text
    for hidden in ("alert", "color: red", "hidden", "The Guide"):
        assert hidden not in text


def test_pdf_pages_and_title():
    data = make_pdf(["First page says alpha.", "Second page says beta.\nAnd a second line."], title="Specs")
    document = read_document("specs.pdf", data)
    assert [s.page for s in document.sections] == [1, 2]
    assert "alpha" in document.sections[0].text
    assert "beta" in document.sections[1].text and "second line" in document.sections[1].text
    assert document.pages == 2
    assert document.metadata == {"title": "Specs"}


def test_pdf_with_empty_pages_keeps_the_numbers_of_the_others():
    document = read_document("gaps.pdf", make_pdf(["one", "", "three"]))
    assert [(s.page, s.text) for s in document.sections] == [(1, "one"), (3, "three")]


def test_a_pdf_without_text_says_there_is_no_ocr():
    with pytest.raises(InputError, match=r"scan\.pdf: no text found.*OCR"):
        read_document("scan.pdf", make_pdf(["", ""]))


def test_a_broken_pdf_is_refused():
    with pytest.raises(InputError, match=r"bad\.pdf: not a PDF pypdf can read"):
        read_document("bad.pdf", b"%PDF-1.4\nthis is not a pdf at all")


def test_docx_paragraphs_and_tables_in_order():
    data = make_docx(
        ["# Heading", "First paragraph.", ("name", "value"), ("alpha", "1"), "After the table."], title="T"
    )
    document = read_document("doc.docx", data)
    text = document.sections[0].text
    assert text.index("Heading") < text.index("First paragraph.") < text.index("alpha | 1") < text.index("After")
    assert "name | value" in text
    assert document.metadata == {"title": "T"}


def test_a_docx_that_is_not_a_zip_is_refused():
    with pytest.raises(InputError, match=r"x\.docx: not a \.docx file"):
        read_document("x.docx", b"plain text, not a zip")


def test_a_docx_that_unpacks_too_large_is_refused_before_it_is_read(monkeypatch):
    assert MAX_UNPACKED_BYTES == 512 * 1024 * 1024
    monkeypatch.setattr(documents, "MAX_UNPACKED_BYTES", 100_000)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("word/document.xml", b"\x00" * 100_001)
    assert len(buffer.getvalue()) < 1000
    with pytest.raises(InputError, match=r"bomb\.docx: unpacks to") as caught:
        read_document("bomb.docx", buffer.getvalue())
    assert caught.value.status_code == 413


def test_csv_rows_name_their_values():
    data = b"city;population;note\nParis;2100000;capital\nLyon;;\n\nNice;340000;coast;extra\n"
    text = read_document("cities.csv", data).sections[0].text
    assert text.splitlines() == [
        "city: Paris | population: 2100000 | note: capital",
        "city: Lyon",
        "city: Nice | population: 340000 | note: coast | extra",
    ]


def test_json_records_are_flattened():
    records = [{"id": 1, "title": "A", "tags": ["x", "y"], "author": {"name": "Ann"}}, {"id": 2, "ok": True}]
    text = read_document("items.json", orjson.dumps(records)).sections[0].text
    assert text == "id: 1\ntitle: A\ntags: x, y\nauthor.name: Ann\n\nid: 2\nok: true"
    assert read_document("s.json", b'"just a string"').sections[0].text == "just a string"


def test_jsonl_lines_and_a_bad_line_named():
    text = read_document("log.jsonl", b'{"a": 1}\n\n{"a": 2, "b": [{"c": 3}]}\n').sections[0].text
    assert text == "a: 1\n\na: 2\nb[0].c: 3"
    with pytest.raises(InputError, match=r"log\.jsonl: line 2 is not valid JSON"):
        read_document("log.jsonl", b'{"a": 1}\n{oops\n')


def test_invalid_json_is_refused():
    with pytest.raises(InputError, match=r"bad\.json: not valid JSON"):
        read_document("bad.json", b"{'single': 'quotes'}")


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("nothing.json", b'{"a": null, "b": "", "c": []}'),
        ("nothing.json", b"[null, null]"),  # report D3: a list of nulls was stored as ","
        ("nothing.json", b'{"a": [null, null, ""], "b": "  "}'),
        ("nothing.jsonl", b"[null]\n[null, null]\n"),
    ],
)
def test_json_with_nothing_in_it_has_no_text(name, data):
    with pytest.raises(InputError, match=r"nothing\.jsonl?: no text found") as caught:
        read_document(name, data)
    assert caught.value.status_code == 400


def test_json_lists_leave_out_their_nulls():
    assert read_document("l.json", b'{"tags": ["a", null, "", "b"]}').sections[0].text == "tags: a, b"


# -- chunking -------------------------------------------------------------------------------------


def test_chunks_respect_size_and_overlap_and_cover_the_text():
    text = prose(20_000, seed=3)
    document = Document("text", [Section(text)])
    pieces = split(document, ChunkParams(500, 50), source="p.txt")
    assert all(len(p.text) <= 500 for p in pieces)
    assert len(pieces) >= 20_000 // 500
    assert [p.metadata["chunk_index"] for p in pieces] == list(range(len(pieces)))
    assert all(p.metadata["source"] == "p.txt" and p.metadata["format"] == "text" for p in pieces)
    words = set(text.split())
    assert words == {w for p in pieces for w in p.text.split()}  # nothing lost
    assert all("page" not in p.metadata for p in pieces)


def test_overlap_repeats_the_end_of_the_previous_chunk():
    text = " ".join(f"w{i}" for i in range(400))
    pieces = split(Document("text", [Section(text)]), ChunkParams(100, 30), source="w.txt")
    overlaps = [set(a.text.split()) & set(b.text.split()) for a, b in itertools.pairwise(pieces)]
    assert all(overlaps)
    no_overlap = split(Document("text", [Section(text)]), ChunkParams(100, 0), source="w.txt")
    assert not any(set(a.text.split()) & set(b.text.split()) for a, b in itertools.pairwise(no_overlap))


def test_chunks_know_their_pages():
    pages = [prose(900, seed=i, paragraph=300) for i in range(4)]
    document = read_document("book.pdf", make_pdf([p.replace("\n\n", "\n") for p in pages]))
    pieces = split(document, ChunkParams(400, 40), source="book.pdf")
    assert {p.metadata["page"] for p in pieces} == {1, 2, 3, 4}
    for piece in pieces:
        first = piece.metadata["page"]
        last = piece.metadata.get("page_end", first)
        assert last >= first
        spanned = " ".join(document.sections[n - 1].text for n in range(first, last + 1))
        assert piece.text.split()[0] in spanned  # the chunk starts on its page
    assert [p.metadata["page"] for p in pieces] == sorted(p.metadata["page"] for p in pieces)


def test_markdown_is_cut_at_headings_first():
    text = "# One\n\n" + "alpha " * 60 + "\n\n# Two\n\n" + "beta " * 60
    pieces = split(Document("markdown", [Section(text)]), ChunkParams(400, 0), source="m.md")
    assert pieces[0].text.startswith("# One") and "beta" not in pieces[0].text
    assert any(p.text.startswith("# Two") for p in pieces)


@pytest.mark.parametrize(
    ("size", "overlap", "message"),
    [(0, 0, "chunk_size"), (100_001, 0, "chunk_size"), (100, 100, "chunk_overlap"), (100, -1, "chunk_overlap")],
)
def test_chunk_params_are_checked(size, overlap, message):
    with pytest.raises(InputError, match=message):
        ChunkParams(size, overlap)
