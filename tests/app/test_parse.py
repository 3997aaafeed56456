"""Parsing and chunking: every accepted type with its headings and pages, every refusal.

No services: these run in a second. Documents are generated in tests/app/data/kbdocs.py.
"""

from __future__ import annotations

import asyncio
import io
import zipfile

import pytest

from app.kb import parse as p
from app.kb.chunk import chunk_blocks
from app.kb.ingest import check_file
from app.kb.parse import Block, Kind, parse
from tests.app.data import kbdocs

# -- each type -----------------------------------------------------------------------------------


def test_pdf_pages_and_outline_headings() -> None:
    parsed = parse(kbdocs.pdf(kbdocs.FALLS_PDF_PAGES, kbdocs.FALLS_OUTLINE), "falls.pdf")
    assert parsed.kind is Kind.pdf and parsed.media_type == "application/pdf"
    assert [(b.page, b.headings) for b in parsed.blocks] == [
        (1, ("Falls prevention",)),
        (2, ("Falls prevention", "Bed rails")),
    ]
    assert "within six hours of admission" in parsed.blocks[0].text
    assert parsed.blocks[1].text.startswith("Bed rails are not a restraint")


def test_pdf_without_outline_keeps_pages() -> None:
    parsed = parse(kbdocs.pdf([["First page text."], ["Second page text."]]), "x.pdf")
    assert [(b.text, b.page, b.headings) for b in parsed.blocks] == [
        ("First page text.", 1, ()),
        ("Second page text.", 2, ()),
    ]


def test_docx_headings_from_styles_and_tables() -> None:
    parsed = parse(kbdocs.docx(kbdocs.INSULIN_DOCX), "insulin.docx")
    assert parsed.kind is Kind.docx
    by_text = {b.text: b.headings for b in parsed.blocks}
    top = ("Insulin infusion protocol",)
    first = "Use a variable rate intravenous insulin infusion for diabetic ketoacidosis."
    assert by_text[first] == top
    assert by_text["below 4 mmol/L | Stop the infusion and give glucose"] == (*top, "Starting rate")
    potassium = next(b for b in parsed.blocks if b.text.startswith("Add 40 mmol"))
    assert potassium.headings == (*top, "Potassium") and potassium.page is None


def test_html_headings_and_no_script_or_style() -> None:
    parsed = parse(kbdocs.HAND_HYGIENE_HTML.encode(), "hygiene.html", "text/html; charset=utf-8")
    assert parsed.kind is Kind.html
    text = parsed.text
    assert "console.log" not in text and "color: red" not in text and "<b>" not in text
    soap = next(b for b in parsed.blocks if "40 seconds" in b.text)
    assert soap.headings == ("Hand hygiene policy", "Soap and water")
    assert "soap and water for at least 40 seconds" in soap.text  # inline <b> kept in the text
    assert Block("Remove rings and wrist watches.", soap.headings) in parsed.blocks


def test_html_fragment_with_tags_is_html() -> None:
    parsed = parse(b"<h2>Dose</h2><p>One tablet daily.</p>", "frag.htm")
    assert parsed.blocks == [Block("One tablet daily.", ("Dose",))]


def test_markdown_headings() -> None:
    parsed = parse(kbdocs.SEPSIS_MD.encode(), "sepsis.md", "text/markdown")
    assert parsed.kind is Kind.markdown
    antibiotics = next(b for b in parsed.blocks if "piperacillin" in b.text)
    assert antibiotics.headings == ("Sepsis bundle", "Antibiotics")
    assert "#" not in parsed.text


def test_markdown_tables_lists_and_code() -> None:
    text = "# T\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n- item one\n- item two\n\n```\ncode  x\n```\n"
    parsed = parse(text.encode(), "t.markdown")
    assert [b.text for b in parsed.blocks] == ["a | b", "1 | 2", "item one", "item two", "code x"]


def test_plain_text_paragraphs_and_bom() -> None:
    parsed = parse(b"\xef\xbb\xbf" + kbdocs.VISITING_TXT.encode(), "visiting.txt", "text/plain")
    assert parsed.kind is Kind.text
    assert [b.text for b in parsed.blocks][0] == "Visiting hours on the maternity ward"
    assert len(parsed.blocks) == 3


def test_control_characters_are_removed() -> None:
    parsed = parse(b"dose\x0b one\x07 tablet", "ctl.txt")
    assert parsed.blocks[0].text == "dose one tablet"


# -- refusals ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "filename", "content_type", "error", "status"),
    [
        (b"", "empty.pdf", None, p.EmptyFile, 400),
        (kbdocs.PNG, "scan.pdf", "application/pdf", p.UnsupportedType, 415),
        (kbdocs.EXE, "setup.exe", None, p.UnsupportedType, 415),
        (kbdocs.EXE, "setup.txt", None, p.UnsupportedType, 415),
        (kbdocs.zip_without_word(), "archive.docx", None, p.UnsupportedType, 415),
        (b"just text", "notes", None, p.UnsupportedType, 415),
        (b"just text", "notes.pdf", None, p.TypeMismatch, 415),
        (kbdocs.docx([("Normal", "x")]), "notes.md", None, p.TypeMismatch, 415),
        (kbdocs.pdf([["x"]]), "notes.docx", None, p.TypeMismatch, 415),
        (b"<!doctype html><p>x</p>", "notes.txt", None, p.TypeMismatch, 415),
        (b"no tags here", "page.html", None, p.TypeMismatch, 415),
        (b"plain words", "notes.txt", "image/png", p.TypeMismatch, 415),
        (b"%PDF-1.7\n1 0 obj garbage", "broken.pdf", None, p.CorruptFile, 422),
        (kbdocs.scanned_pdf(), "scanned.pdf", None, p.NoText, 422),
        (b"  \n\n \t ", "blank.txt", None, p.NoText, 422),
    ],
)
def test_refusals(
    data: bytes, filename: str, content_type: str | None, error: type, status: int
) -> None:
    with pytest.raises(error) as caught:
        parse(data, filename, content_type)
    assert caught.value.status_code == status
    assert caught.value.message and "words" not in caught.value.message


def test_corrupt_docx() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("word/document.xml", "<not really xml")
    with pytest.raises(p.CorruptFile):
        parse(buffer.getvalue(), "broken.docx")


def test_refusal_messages_hold_no_content_or_name() -> None:
    secret = b"John Testpatient MRN 00123456 " * 3
    name = "John_Testpatient.pdf"
    for data in (secret, b"%PDF-" + secret):
        with pytest.raises(p.UploadRefused) as caught:
            parse(data, name)
        assert "Testpatient" not in caught.value.message
        assert "Testpatient" not in str(caught.value.__cause__ or "")


def test_read_limited_stops_past_the_limit() -> None:
    reads: list[int] = []
    stream = io.BytesIO(b"x" * (p.READ_CHUNK * 3))

    async def read(n: int) -> bytes:
        reads.append(n)
        return stream.read(n)

    with pytest.raises(p.FileTooLarge):
        asyncio.run(p.read_limited(read, p.READ_CHUNK + 10))
    assert len(reads) == 2  # stopped at the first chunk past the limit
    assert asyncio.run(p.read_limited(_reader(b"abc"), 10)) == b"abc"
    with pytest.raises(p.EmptyFile):
        asyncio.run(p.read_limited(_reader(b""), 10))


def _reader(data: bytes):  # noqa: ANN202
    stream = io.BytesIO(data)

    async def read(n: int) -> bytes:
        return stream.read(n)

    return read


def test_check_file_counts_phi_types() -> None:
    checked = check_file(kbdocs.PHI_TXT.encode(), "C:\\exports\\summary.txt", "text/plain")
    assert checked.filename == "summary.txt"
    assert checked.phi_types.get("NAME", 0) >= 1 and checked.phi_types.get("MRN", 0) >= 1
    assert "PHONE" in checked.phi_types
    clean = check_file(kbdocs.SEPSIS_MD.encode(), "sepsis.md", None)
    assert clean.phi_types == {}


# -- chunking ------------------------------------------------------------------------------------


def test_chunks_never_cross_pages_or_sections() -> None:
    blocks = [
        Block("Alpha one. " * 5, ("A",), 1),
        Block("Alpha two.", ("A",), 2),
        Block("Beta.", ("A", "B"), 2),
        Block("Gamma.", ("C",), 2),
    ]
    chunks = chunk_blocks(blocks, max_chars=200)
    assert [(c.section, c.page) for c in chunks] == [
        ("A", 1),
        ("A", 2),
        ("A > B", 2),
        ("C", 2),
    ]
    assert chunks[2].embedding_input() == "A > B\nBeta."


def test_long_sections_split_at_sentences_with_overlap() -> None:
    sentences = [f"Sentence number {i} says something about dosing." for i in range(40)]
    blocks = [Block(" ".join(sentences[:20]), ("S",)), Block(" ".join(sentences[20:]), ("S",))]
    chunks = chunk_blocks(blocks, max_chars=300, overlap_chars=60)
    assert len(chunks) > 4
    assert all(len(c.text) <= 300 for c in chunks)
    for chunk in chunks:  # every chunk starts and ends at a sentence boundary
        assert chunk.text.startswith("Sentence number") and chunk.text.endswith(".")
    for before, after in zip(chunks, chunks[1:], strict=False):
        last = before.text.rsplit("Sentence number", 1)[1]
        assert after.text.startswith("Sentence number" + last)  # overlap: the last sentence
    joined = " ".join(c.text for c in chunks)
    assert all(s in joined for s in sentences)


def test_words_longer_than_a_chunk_are_cut() -> None:
    chunks = chunk_blocks([Block("x" * 450 + " tail")], max_chars=200, overlap_chars=0)
    assert [len(c.text) for c in chunks] == [200, 200, 50 + 1 + 4]


def test_paragraphs_pack_together_up_to_the_limit() -> None:
    blocks = [Block(f"Paragraph {i}.") for i in range(3)]
    assert [c.text for c in chunk_blocks(blocks, max_chars=200)] == [
        "Paragraph 0.\n\nParagraph 1.\n\nParagraph 2."
    ]


def _understated(docx: bytes, name: str, padding: int) -> bytes:
    """The DOCX with ``padding`` spaces after the real text of ``name``, its headers
    declaring only the real size and CRC: the 1.5 MB that unpacked to 1.5 GB."""
    import struct
    import zlib

    with zipfile.ZipFile(io.BytesIO(docx)) as archive:
        real = {i.filename: archive.read(i) for i in archive.infolist()}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for filename, content in real.items():
            if filename != name:
                archive.writestr(filename, content)
                continue
            with archive.open(filename, "w", force_zip64=False) as member:
                member.write(content)
                block = b" " * 2**20
                for _ in range(padding // len(block)):
                    member.write(block)
    data = bytearray(buffer.getvalue())
    size, crc = len(real[name]), zlib.crc32(real[name])
    encoded = name.encode()
    local = data.index(b"PK\x03\x04")
    while data[local + 30 : local + 30 + len(encoded)] != encoded:
        local = data.index(b"PK\x03\x04", local + 4)
    struct.pack_into("<I", data, local + 14, crc)
    struct.pack_into("<I", data, local + 22, size)
    central = data.index(b"PK\x01\x02")
    while data[central + 46 : central + 46 + len(encoded)] != encoded:
        central = data.index(b"PK\x01\x02", central + 4)
    struct.pack_into("<I", data, central + 16, crc)
    struct.pack_into("<I", data, central + 24, size)
    return bytes(data)


def test_a_docx_understating_its_size_is_read_in_bounded_memory() -> None:
    import tracemalloc

    bomb = _understated(kbdocs.docx(kbdocs.INSULIN_DOCX), "word/document.xml", 200 * 2**20)
    assert len(bomb) < 2 * 2**20  # 200 MiB of spaces compress to a few hundred kB
    tracemalloc.start()
    try:
        parsed = parse(bomb, "insulin.docx")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # Only the declared bytes are inflated: the real document, nothing of the padding.
    assert any(b.text.startswith("Add 40 mmol") for b in parsed.blocks)
    assert peak < 32 * 2**20, f"peak {peak / 2**20:.0f} MiB"


def test_a_docx_whose_text_parts_unpack_past_the_limit_is_refused() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("word/document.xml", b" " * (p._MAX_UNZIPPED + 1))
    with pytest.raises(p.FileTooLarge):
        parse(buffer.getvalue(), "big.docx")
