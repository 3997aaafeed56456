"""Small synthetic documents of every accepted type, generated in code.

The clinical text is made up for tests; the only "patient" details are obviously
synthetic (a test name, a 555 phone number, an MRN of the test kind).
"""

from __future__ import annotations

import io
import zipfile


def _pdf_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def pdf(pages: list[list[str]], outline: list[tuple[str, int, int]] | None = None) -> bytes:
    """A PDF with one text line per entry on each page (Helvetica), written by hand.

    ``outline``: (title, page index, level) bookmarks, added with pypdf's writer.
    """
    objects: list[bytes] = []
    count = len(pages)
    page_ids = [4 + 2 * i for i in range(count)]
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    kids = " ".join(f"{pid} 0 R" for pid in page_ids)
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {count} >>".encode())
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    for i, lines in enumerate(pages):
        stream = (
            "BT /F1 11 Tf 14 TL 72 760 Td "
            + " ".join(f"({_pdf_escape(line)}) Tj T*" for line in lines)
            + " ET"
        )
        data = stream.encode("latin-1")
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {page_ids[i] + 1} 0 R"
            " /Resources << /Font << /F1 3 0 R >> >> >>".encode()
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(data) + data + b"\nendstream")
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    size = len(objects) + 1
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (size, xref))
    raw = out.getvalue()
    if not outline:
        return raw
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(raw)))
    parents: dict[int, object] = {}
    for title, page, level in outline:
        parents[level] = writer.add_outline_item(
            title=title, page_number=page, parent=parents.get(level - 1)
        )
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def scanned_pdf() -> bytes:
    """A PDF whose page holds no text at all (as a scan without OCR)."""
    return pdf([[]])


def docx(parts: list[tuple[str, str]]) -> bytes:
    """A DOCX from (style, text): style "Heading 1".."Heading 3", "Normal" or "table"
    (text is "a|b;c|d": rows separated by ';', cells by '|')."""
    import docx as python_docx

    document = python_docx.Document()
    for style, text in parts:
        if style == "table":
            rows = [row.split("|") for row in text.split(";")]
            table = document.add_table(rows=len(rows), cols=len(rows[0]))
            for r, row in enumerate(rows):
                for c, cell in enumerate(row):
                    table.cell(r, c).text = cell
        elif style.startswith("Heading"):
            document.add_heading(text, level=int(style.split()[-1]))
        else:
            document.add_paragraph(text)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def zip_without_word() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("notes.txt", "not a word document")
    return buffer.getvalue()


PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00"
    b"\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N\x00"
    b"\x00\x00\x00IEND\xaeB`\x82"
)
EXE = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + b"\x00" * 48


# -- the test corpus: each document holds facts the others do not -----------------------------

SEPSIS_MD = """# Sepsis bundle

Sepsis is a life-threatening organ dysfunction caused by a dysregulated host response
to infection. Screen every adult with suspected infection using the qSOFA score.

## Antibiotics

Give broad-spectrum intravenous antibiotics within one hour of recognising septic
shock. The first-line empirical regimen at this hospital is piperacillin-tazobactam
4.5 g every six hours, adjusted for renal function.

## Fluids

Give 30 mL/kg of balanced crystalloid within the first three hours for hypotension
or a lactate of 4 mmol/L or more.
"""

HAND_HYGIENE_HTML = """<!doctype html>
<html><head><title>Hand hygiene</title><style>p { color: red }</style></head>
<body>
<h1>Hand hygiene policy</h1>
<p>Clean your hands with alcohol-based hand rub before and after every patient contact.</p>
<h2>Soap and water</h2>
<p>Wash with <b>soap and water</b> for at least 40 seconds when hands are visibly soiled
or after caring for a patient with <i>Clostridioides difficile</i> diarrhoea.</p>
<ul><li>Remove rings and wrist watches.</li><li>Dry hands with a single-use towel.</li></ul>
<script>console.log("not text")</script>
</body></html>
"""

INSULIN_DOCX = [
    ("Heading 1", "Insulin infusion protocol"),
    ("Normal", "Use a variable rate intravenous insulin infusion for diabetic ketoacidosis."),
    ("Heading 2", "Starting rate"),
    ("Normal", "Start the fixed rate insulin infusion at 0.1 units per kg per hour."),
    ("table", "Capillary glucose|Action;below 4 mmol/L|Stop the infusion and give glucose"),
    ("Heading 2", "Potassium"),
    ("Normal", "Add 40 mmol potassium chloride per litre when serum potassium is 3.5 to 5.5."),
]

FALLS_PDF_PAGES = [
    [
        "Falls prevention in older inpatients.",
        "Assess every patient over 65 for falls risk within six hours of admission.",
    ],
    [
        "Bed rails are not a restraint and must not be used to stop a confused patient",
        "from leaving bed. Provide a low-rise bed and a sensor alarm instead.",
    ],
]
FALLS_OUTLINE = [("Falls prevention", 0, 1), ("Bed rails", 1, 2)]

VISITING_TXT = """Visiting hours on the maternity ward

Partners may visit at any time. Other visitors are welcome from 2 pm to 8 pm.

Children under 12 who are not siblings of the newborn may not visit the ward.
"""

# Obviously synthetic PHI: a test patient name, MRN and a 555 phone number.
PHI_TXT = """Discharge summary (synthetic test record)

Patient: John Testpatient, MRN: 00123456, phone (555) 010-0199.
Discharged home after treatment of community-acquired pneumonia with amoxicillin.
"""

# More single-topic guidelines for the retrieval corpus (tests/app/test_retrieval.py).
EXTRA_MD = {
    "paracetamol.md": """# Paracetamol

The maximum paracetamol dose for adults is 4 g in 24 hours, reduced to 3 g in 24 hours for
adults under 50 kg or with hepatic impairment. Leave at least four hours between doses.
""",
    "oxygen.md": """# Oxygen therapy

## Saturation targets

Aim for an oxygen saturation of 94 to 98 percent in most acutely ill patients, and 88 to
92 percent in patients at risk of hypercapnic respiratory failure such as severe COPD.
""",
    "warfarin.md": """# Anticoagulation clinic

## Warfarin

The target INR for atrial fibrillation and venous thromboembolism is 2.5, within a range
of 2.0 to 3.0. Check the INR at least every twelve weeks once it is stable.
""",
    "lithium.md": """# Lithium monitoring

Check the serum lithium level twelve hours after the last dose, weekly after each dose
change until stable, then every three months. Check thyroid and renal function every six
months.
""",
}
