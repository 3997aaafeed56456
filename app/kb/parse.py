"""Check an uploaded file and extract its text as blocks (text, heading path, page).

The type is read from the content (magic bytes, a zip holding word/document.xml, or
text that decodes as UTF-8), then it must agree with the filename's extension and
the declared content type. Every refusal is a typed :class:`UploadRefused` with an
HTTP status and a message that never quotes the file's content or its name (names
of clinical files can hold PHI).
"""

from __future__ import annotations

import io
import re
import zipfile
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import PurePosixPath

# -- refusals ------------------------------------------------------------------------------


class UploadRefused(Exception):
    """A file the knowledge base will not take; ``message`` is safe to show and log."""

    status_code = 422
    code = "refused"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class EmptyFile(UploadRefused):
    status_code = 400
    code = "empty"


class FileTooLarge(UploadRefused):
    status_code = 413
    code = "too_large"


class UnsupportedType(UploadRefused):
    status_code = 415
    code = "unsupported_type"


class TypeMismatch(UploadRefused):
    status_code = 415
    code = "type_mismatch"


class CorruptFile(UploadRefused):
    status_code = 422
    code = "corrupt"


class NoText(UploadRefused):
    status_code = 422
    code = "no_text"


# -- types -----------------------------------------------------------------------------------


class Kind(StrEnum):
    pdf = "pdf"
    docx = "docx"
    html = "html"
    markdown = "markdown"
    text = "text"


MEDIA_TYPES = {
    Kind.pdf: "application/pdf",
    Kind.docx: "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    Kind.html: "text/html",
    Kind.markdown: "text/markdown",
    Kind.text: "text/plain",
}
EXTENSIONS = {
    ".pdf": Kind.pdf,
    ".docx": Kind.docx,
    ".html": Kind.html,
    ".htm": Kind.html,
    ".md": Kind.markdown,
    ".markdown": Kind.markdown,
    ".txt": Kind.text,
    ".text": Kind.text,
}
# Content types a client may declare for each kind. Generic ones say nothing and pass.
_DECLARED = {
    Kind.pdf: {"application/pdf", "application/x-pdf"},
    Kind.docx: {MEDIA_TYPES[Kind.docx], "application/zip"},
    Kind.html: {"text/html", "application/xhtml+xml"},
    Kind.markdown: {"text/markdown", "text/x-markdown", "text/plain"},
    Kind.text: {"text/plain"},
}
_GENERIC = {"", "application/octet-stream", "binary/octet-stream", "application/x-download"}
ACCEPTED = "PDF, DOCX, HTML, Markdown or plain text"

# A DOCX is a zip: refuse one whose text parts (XML) unpack to far more than any
# real document's (what parsing holds in memory is several times this).
_MAX_UNZIPPED = 64 * 2**20
_MAX_ZIP_ENTRIES = 5000


@dataclass(frozen=True)
class Block:
    """A paragraph (or table row, list item, code block) and where it sits."""

    text: str
    headings: tuple[str, ...] = ()
    page: int | None = None  # 1-based; None where the format has no pages


@dataclass(frozen=True)
class Parsed:
    kind: Kind
    media_type: str
    blocks: list[Block]

    @property
    def text(self) -> str:
        return "\n\n".join(block.text for block in self.blocks)


# -- reading the upload ----------------------------------------------------------------------

READ_CHUNK = 64 * 1024


async def read_limited(read: Callable[[int], Awaitable[bytes]], max_bytes: int) -> bytes:
    """Read a stream (``UploadFile.read``) chunk by chunk, refusing it past ``max_bytes``."""
    parts: list[bytes] = []
    total = 0
    while chunk := await read(READ_CHUNK):
        total += len(chunk)
        if total > max_bytes:
            raise FileTooLarge(f"the file is larger than the limit of {max_bytes} bytes")
        parts.append(chunk)
    data = b"".join(parts)
    if not data:
        raise EmptyFile("the file is empty")
    return data


# -- detection -------------------------------------------------------------------------------

_HTML_DOCUMENT = re.compile(r"\s*(<!--.*?-->\s*)*<(!doctype\s+html|html)\b", re.I | re.S)
_HTML_TAGS = re.compile(
    r"<(html|head|body|h[1-6]|p|div|table|ul|ol|section|article|main)\b[^>]*>", re.I
)
_BINARY_NAMES = [
    (b"\x89PNG", "an image"),
    (b"\xff\xd8\xff", "an image"),
    (b"GIF8", "an image"),
    (b"MZ", "a program"),
    (b"\x7fELF", "a program"),
    (b"PK\x03\x04", "an archive"),
    (b"\xd0\xcf\x11\xe0", "a legacy Office file"),
]


def _content_kind(data: bytes) -> tuple[str, str | None]:
    """("pdf"|"docx"|"html"|"text"|"binary", the decoded text for text kinds)."""
    if data.lstrip()[:5] == b"%PDF-":
        return "pdf", None
    if data.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                if "word/document.xml" in archive.namelist():
                    return "docx", None
        except zipfile.BadZipFile:
            pass
        return "binary", None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return "binary", None
    if "\x00" in text:
        return "binary", None
    return ("html" if _HTML_DOCUMENT.match(text[:4096]) else "text"), text


def _what_binary(data: bytes) -> str:
    return next((name for magic, name in _BINARY_NAMES if data.startswith(magic)), "binary data")


def _extension(filename: str) -> str:
    return PurePosixPath(filename.replace("\\", "/")).suffix.lower()


def detect(data: bytes, filename: str, content_type: str | None) -> tuple[Kind, str | None]:
    """The file's kind, checked against its extension and declared type; refuse otherwise."""
    if not data:
        raise EmptyFile("the file is empty")
    extension = _extension(filename)
    expected = EXTENSIONS.get(extension)
    if expected is None:
        shown = extension if re.fullmatch(r"\.[a-z0-9]{1,10}", extension) else "this"
        raise UnsupportedType(f"files of type {shown or 'without extension'} are not accepted: "
                              f"upload {ACCEPTED}")  # fmt: skip
    found, text = _content_kind(data)
    if found == "binary":
        raise UnsupportedType(
            f"the content is {_what_binary(data)}, not {ACCEPTED}"
            + (f" (the name says {extension})" if extension else "")
        )
    agrees = {
        Kind.pdf: found == "pdf",
        Kind.docx: found == "docx",
        Kind.html: found == "html" or (found == "text" and bool(_HTML_TAGS.search(text or ""))),
        Kind.markdown: found == "text",
        Kind.text: found == "text",
    }[expected]
    if not agrees:
        raise TypeMismatch(f"the name says {extension} but the content is {found.upper()}")
    declared = (content_type or "").split(";")[0].strip().lower()
    if declared not in _GENERIC and declared not in _DECLARED[expected]:
        raise TypeMismatch(
            f"the declared content type does not match the file's content ({expected.value})"
        )
    return expected, text


def parse(data: bytes, filename: str, content_type: str | None = None) -> Parsed:
    """Detect, check and parse a file. CPU-bound: call it in a thread from async code."""
    kind, text = detect(data, filename, content_type)
    if kind is Kind.pdf:
        blocks = _pdf(data)
    elif kind is Kind.docx:
        blocks = _docx(data)
    elif kind is Kind.html:
        blocks = _html(text or "")
    elif kind is Kind.markdown:
        blocks = _markdown(text or "")
    else:
        blocks = _plain(text or "")
    blocks = [b for b in blocks if b.text]
    if not any(ch.isalnum() for block in blocks for ch in block.text):
        hint = " (a scanned PDF needs text recognition first)" if kind is Kind.pdf else ""
        raise NoText(f"the file holds no extractable text{hint}")
    return Parsed(kind, MEDIA_TYPES[kind], blocks)


# -- text clean-up ---------------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # PostgreSQL text refuses NUL
_SPACES = re.compile(r"[ \t\u00a0]+")


def clean(text: str, keep_lines: bool = False) -> str:
    text = _CONTROL.sub(" ", text.replace("\r\n", "\n").replace("\r", "\n"))
    if not keep_lines:
        return " ".join(text.split())
    lines = (_SPACES.sub(" ", line).strip() for line in text.split("\n"))
    return "\n".join(line for line in lines if line)


def _paragraphs(text: str, keep_lines: bool) -> list[str]:
    found = (clean(p, keep_lines) for p in re.split(r"\n\s*\n", text.replace("\r\n", "\n")))
    return [p for p in found if p]


# -- the formats -----------------------------------------------------------------------------


def _pdf(data: bytes) -> list[Block]:
    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted and not reader.decrypt(""):
            raise CorruptFile("the PDF is protected by a password")
        outline = _pdf_outline(reader)
        blocks = []
        for number, page in enumerate(reader.pages, start=1):
            headings = _headings_at(outline, number)
            for paragraph in _paragraphs(page.extract_text() or "", keep_lines=False):
                blocks.append(Block(paragraph, headings, number))
        return blocks
    except UploadRefused:
        raise
    except Exception as exc:  # pypdf raises many kinds: every one means "cannot read"
        raise CorruptFile(f"the PDF cannot be read ({type(exc).__name__})") from exc


def _pdf_outline(reader: object) -> list[tuple[int, int, str]]:
    """(first page, level, title) of each bookmark: PDFs keep their headings there."""
    found: list[tuple[int, int, str]] = []

    def walk(items: list, level: int) -> None:
        for item in items:
            if isinstance(item, list):
                walk(item, level + 1)
                continue
            page = reader.get_destination_page_number(item)  # type: ignore[attr-defined]
            title = clean(str(getattr(item, "title", "") or ""))
            if page is not None and page >= 0 and title:
                found.append((page + 1, level, title))

    try:
        walk(reader.outline, 1)  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 -- a broken outline costs the headings, not the document
        return []
    return sorted(found, key=lambda entry: entry[0])


def _headings_at(outline: list[tuple[int, int, str]], page: int) -> tuple[str, ...]:
    path: list[str] = []
    for first, level, title in outline:
        if first > page:
            break
        path = [*path[: level - 1], title]
    return tuple(path)


_HEADING_STYLE = re.compile(r"^heading\s*(\d)$", re.I)


def _heading_level(style_name: str, style_id: str) -> int:
    if style_name.lower() == "title" or style_id.lower() == "title":
        return 1
    for name in (style_name, style_id):
        match = _HEADING_STYLE.match(name or "")
        if match:
            return max(1, int(match.group(1)))
    return 0


def _docx_text_parts(data: bytes) -> bytes:
    """The DOCX re-packed from what its XML parts really unpack to, read in small steps
    under ``_MAX_UNZIPPED``, the other parts (images, fonts, embedded files) left empty.

    The sizes in a zip's headers are the sender's word. Read whole, zipfile inflates a
    member up to 2 GiB in one call before it cuts it to the declared size, so a 1.5 MB
    file that declares 4 KB took the app to 2.5 GiB. python-docx only sees this copy.
    """
    out = io.BytesIO()
    total = 0
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive, zipfile.ZipFile(out, "w") as copy:
            entries = archive.infolist()
            if len(entries) > _MAX_ZIP_ENTRIES:
                raise FileTooLarge("the DOCX has more parts than the limit")
            for entry in entries:
                if entry.is_dir():
                    continue
                if not entry.filename.endswith((".xml", ".rels")):
                    copy.writestr(entry.filename, b"")
                    continue
                if total + entry.file_size > _MAX_UNZIPPED:
                    raise FileTooLarge("the DOCX unpacks to more than the limit")
                parts: list[bytes] = []
                with archive.open(entry) as member:
                    while chunk := member.read(READ_CHUNK):
                        total += len(chunk)
                        if total > _MAX_UNZIPPED:
                            raise FileTooLarge("the DOCX unpacks to more than the limit")
                        parts.append(chunk)
                copy.writestr(entry.filename, b"".join(parts))
    except UploadRefused:
        raise
    except (
        zipfile.BadZipFile,
        zlib.error,
        EOFError,
        NotImplementedError,
        RuntimeError,
        ValueError,
    ) as exc:
        raise CorruptFile(f"the DOCX cannot be read ({type(exc).__name__})") from exc
    return out.getvalue()


def _docx(data: bytes) -> list[Block]:
    import docx
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    unpacked = _docx_text_parts(data)
    try:
        document = docx.Document(io.BytesIO(unpacked))
        headings: list[str] = []
        blocks: list[Block] = []
        for item in document.iter_inner_content():
            if isinstance(item, Paragraph):
                text = clean(item.text)
                if not text:
                    continue
                style = item.style
                level = _heading_level(
                    (style.name or "") if style else "", (style.style_id or "") if style else ""
                )
                if level:
                    headings = [*headings[: level - 1], text]
                else:
                    blocks.append(Block(text, tuple(headings)))
            elif isinstance(item, Table):
                for row in item.rows:
                    cells: list[str] = []
                    for cell in row.cells:  # merged cells repeat: keep each once
                        text = clean(cell.text)
                        if text and (not cells or cells[-1] != text):
                            cells.append(text)
                    if cells:
                        blocks.append(Block(" | ".join(cells), tuple(headings)))
        return blocks
    except UploadRefused:
        raise
    except Exception as exc:
        raise CorruptFile(f"the DOCX cannot be read ({type(exc).__name__})") from exc


_HTML_SKIP = {"script", "style", "noscript", "template", "head", "svg", "iframe", "object"}
_HTML_HEADINGS = {f"h{n}" for n in range(1, 7)}
_HTML_BLOCKS = _HTML_HEADINGS | {
    "p", "li", "pre", "blockquote", "td", "th", "dt", "dd", "caption", "figcaption", "div",
    "section", "article", "main", "header", "footer", "aside", "nav", "body", "html", "table",
    "tr", "ul", "ol", "dl", "form", "fieldset", "address", "details", "summary", "figure",
}  # fmt: skip


def _html(text: str) -> list[Block]:
    from bs4 import BeautifulSoup, NavigableString
    from bs4.element import Comment, Declaration, Doctype, ProcessingInstruction

    try:
        soup = BeautifulSoup(text, "html.parser")
    except Exception as exc:
        raise CorruptFile(f"the HTML cannot be read ({type(exc).__name__})") from exc
    headings: list[str] = []
    blocks: list[Block] = []
    owner: object = None
    parts: list[str] = []

    def flush() -> None:
        nonlocal headings
        content = clean("".join(parts))
        name = getattr(owner, "name", "")
        if not content:
            return
        if name in _HTML_HEADINGS:
            level = int(name[1])
            headings = [*headings[: level - 1], content]
        else:
            blocks.append(Block(content, tuple(headings)))

    # Each run of text belongs to its nearest block element (p, li, h2, td...); inline
    # elements (b, a, span) stay within their block's text.
    for string in soup.find_all(string=True):
        if not isinstance(string, NavigableString) or isinstance(
            string, Comment | Declaration | Doctype | ProcessingInstruction
        ):
            continue
        if any(parent.name in _HTML_SKIP for parent in string.parents):
            continue
        block = next((p for p in string.parents if p.name in _HTML_BLOCKS), None)
        if block is not owner:
            flush()
            owner, parts = block, []
        parts.append(str(string))
    flush()
    return blocks


def _markdown(text: str) -> list[Block]:
    from bs4 import BeautifulSoup
    from markdown_it import MarkdownIt

    try:
        tokens = MarkdownIt("commonmark", {"html": True}).enable("table").parse(text)
    except Exception as exc:
        raise CorruptFile(f"the Markdown cannot be read ({type(exc).__name__})") from exc
    headings: list[str] = []
    blocks: list[Block] = []
    heading_level = 0
    row: list[str] | None = None
    for token in tokens:
        if token.type == "heading_open":
            heading_level = int(token.tag[1])
        elif token.type == "heading_close":
            heading_level = 0
        elif token.type == "tr_open":
            row = []
        elif token.type == "tr_close":
            if row:
                blocks.append(Block(" | ".join(row), tuple(headings)))
            row = None
        elif token.type == "inline":
            content = clean(_inline_text(token.children or []))
            if not content:
                continue
            if heading_level:
                headings = [*headings[: heading_level - 1], content]
            elif row is not None:
                row.append(content)
            else:
                blocks.append(Block(content, tuple(headings)))
        elif token.type in ("fence", "code_block"):
            content = clean(token.content, keep_lines=True)
            if content:
                blocks.append(Block(content, tuple(headings)))
        elif token.type == "html_block":
            content = clean(BeautifulSoup(token.content, "html.parser").get_text(" "))
            if content:
                blocks.append(Block(content, tuple(headings)))
    return blocks


def _inline_text(children: list) -> str:
    out = []
    for child in children:
        if child.type in ("text", "code_inline"):
            out.append(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            out.append(" ")
        elif child.type == "image":
            out.append(child.content)  # the alt text
    return "".join(out)


def _plain(text: str) -> list[Block]:
    return [Block(paragraph) for paragraph in _paragraphs(text, keep_lines=True)]
