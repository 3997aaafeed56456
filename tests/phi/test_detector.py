"""Unit tests per PHI type, the hard cases, and the corpus recall gate."""

import dataclasses
import time

import pytest

from app.phi import PhiType, Span, contains_phi, detect, redact
from app.phi.validate import dea_ok, iban_ok, luhn_ok, npi_ok, ssn_plausible, vin_ok
from tests.phi.corpus import N_DOCS, SEED, generate
from tests.phi.eval import TARGET_TYPES, ours, table
from tests.phi.metrics import evaluate

T = PhiType


def found(text: str) -> list[tuple[str, PhiType]]:
    return [(text[s.start : s.end], s.type) for s in detect(text)]


def covered(text: str, value: str, kind: PhiType | None = None) -> bool:
    """Every letter and digit of ``value`` (first occurrence) lies in a span (of ``kind``)."""
    start = text.index(value)
    spans = [s for s in detect(text) if kind is None or s.type is kind]
    return all(
        any(s.start <= i < s.end for s in spans)
        for i in range(start, start + len(value))
        if text[i].isalnum()
    )


# --- the API ------------------------------------------------------------------------------


def test_span_is_a_small_frozen_sorted_dataclass() -> None:
    s = Span(1, 4, PhiType.NAME)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.start = 2  # type: ignore[misc]
    assert [f.name for f in dataclasses.fields(Span)] == ["start", "end", "type"]
    assert isinstance(PhiType.NAME, str) and PhiType.NAME == "NAME"


def test_spans_sorted_non_overlapping_and_in_bounds() -> None:
    text = generate(SEED, 5)[0].text
    spans = detect(text)
    assert spans == sorted(spans)
    for a, b in zip(spans, spans[1:], strict=False):
        assert a.end <= b.start
    assert all(0 <= s.start < s.end <= len(text) for s in spans)


def test_empty_and_plain_text() -> None:
    assert detect("") == []
    assert detect("No acute distress. Lungs clear to auscultation bilaterally.") == []
    assert not contains_phi("Continue metoprolol 25 mg twice daily.")


def test_non_string_error_does_not_echo_input() -> None:
    with pytest.raises(TypeError) as err:
        detect(b"John Smith 555-0100")  # type: ignore[arg-type]
    assert "Smith" not in str(err.value) and "bytes" in str(err.value)


def test_redact_replaces_spans_with_type() -> None:
    assert redact("Pt John Smith, MRN 12345678.") == "Pt [NAME], MRN [MRN]."


# --- names ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("Pt John Smith presented with chest pain.", "John Smith"),
        ("Seen by Dr. Hope Bell in clinic.", "Hope Bell"),
        ("patient hope bell is a 45 year old", "hope bell"),
        ("Rose reports worsening pain.", "Rose"),
        ("Discussed with her daughter Rose.", "Rose"),
        ("Grant Banks was admitted overnight.", "Grant Banks"),
        ("Mr. Hodgkin returns for follow-up.", "Hodgkin"),
        ("SMITH, JOHN -- DOB 01/02/1960", "SMITH, JOHN"),
        ("Garcia, Maria", "Garcia, Maria"),
        ("pt john smith seen today", "john smith"),
        ("Signed: Thaddea Quenneville, MD", "Thaddea Quenneville"),
        ("Mrs. Xylander reports no pain.", "Xylander"),
        ("Thaddea Garcia is a 40 year old", "Thaddea Garcia"),
        ("Emergency contact: Anna Lee-Parker (sister)", "Anna Lee-Parker"),
        ("John A. Smith", "John A. Smith"),
        ("Spoke with\nMaria Gonzalez about results.", "Maria Gonzalez"),
    ],
)
def test_names(text: str, name: str) -> None:
    assert covered(text, name, T.NAME), found(text)


@pytest.mark.parametrize(
    "text",
    [
        "Diagnosed with Bell's palsy last year.",
        "History of Hodgkin lymphoma, in remission.",
        "Graves' disease treated with methimazole.",
        "Stevens-Johnson syndrome after lamotrigine.",
        "Parkinson's disease with resting tremor; history of Parkinson's.",
        "Murphy's sign positive. Babinski sign absent. Foley catheter placed.",
        "Hope for recovery was discussed. Rose from the chair unaided.",
        "Frank hematuria. Gross motor intact. The patient will follow up.",
        "Glasgow Coma Scale 15. Apgar score 9. Wells score 2.",
        "Crohn's disease flare; Wilson disease excluded; Down syndrome.",
        "Follows with Cardiology. Seen in the Emergency Department.",
    ],
)
def test_clinical_terms_are_not_names(text: str) -> None:
    assert [t for _, t in found(text) if t is T.NAME] == [], found(text)


# --- dates and ages -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "2024-03-05",
        "03/05/2024",
        "3/5/24",
        "5 Mar 2024",
        "March 5th",
        "March 5, 2024",
        "5.3.24",
        "05.03.2024",
        "5th of March",
        "05-MAR-2024",
        "Mar-05-2024",
        "March 2024",
        "Mar. 5, 2024",
        "5th March 2024",
    ],
)
def test_date_formats(value: str) -> None:
    text = f"Seen on {value} for review."
    assert covered(text, value, T.DATE), found(text)


def test_dates_need_validity_or_a_cue() -> None:
    assert covered("DOB: 3/5 unknown year", "3/5", T.DATE)
    assert covered("DOB 19500305", "19500305", T.DATE)
    for text in [
        "Strength 5/5 bilaterally.",
        "BP 120/80, pain 7/10.",
        "Quit smoking in 2015.",
        "Version 13.45.2024 of the form.",
        "Grade 2/6 murmur.",
    ]:
        assert [t for _, t in found(text) if t is T.DATE] == [], found(text)


def test_date_wrapped_across_lines() -> None:
    assert covered("admitted March\n5, 2024 via ED", "March\n5, 2024", T.DATE)


@pytest.mark.parametrize(
    "value", ["92-year-old", "95 yo", "aged 91", "101 y/o", "90 years old", "93F"]
)
def test_ages_over_89(value: str) -> None:
    assert covered(f"A {value} with CHF.", value, T.AGE)


def test_ages_up_to_89_are_not_phi() -> None:
    assert detect("A 89-year-old man and a 45 yo woman.") == []


# --- contact points ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "(212) 555-0134",
        "212-555-0134",
        "212.555.0134",
        "+1 212 555 0134",
        "212-555-\n0134",
        "(212)\n555-0134",
        "+44 20 7946 0958",
    ],
)
def test_phones(value: str) -> None:
    assert covered(f"Call {value} today.", value, T.PHONE)


def test_fax_vs_phone() -> None:
    text = "Phone (212) 555-0134, fax (212) 555-0199. Please fax records to 212-555-0177."
    kinds = [t for _, t in found(text)]
    assert kinds == [T.PHONE, T.FAX, T.FAX]


def test_email_url_ip() -> None:
    text = (
        "Mail jane.roe@example.org or see https://portal.example.org/pt/1234 "
        "from 192.0.2.17 or 2001:db8::5."
    )
    assert found(text) == [
        ("jane.roe@example.org", T.EMAIL),
        ("https://portal.example.org/pt/1234", T.URL),
        ("192.0.2.17", T.IP),
        ("2001:db8::5", T.IP),
    ]
    assert detect("Version 1.2.3; range 999.1.1.1; time 10:30:00") == []


# --- identifiers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value", "kind"),
    [
        ("SSN 987-65-4321 on file", "987-65-4321", T.SSN),
        ("social security number 912 34 5678", "912 34 5678", T.SSN),
        ("SSN: 912345678.", "912345678", T.SSN),
        ("MRN: 00123456", "00123456", T.MRN),
        ("Medical record number A1234567.", "A1234567", T.MRN),
        ("MRN 4471\n2290 admitted", "4471\n2290", T.MRN),
        ("MRN: 4471-\n2290", "4471-\n2290", T.MRN),
        ("Member ID: XYZ123456789", "XYZ123456789", T.HEALTH_PLAN),
        ("Medicare MBI 1EG4-TE5-MK73", "1EG4-TE5-MK73", T.HEALTH_PLAN),
        ("Acct #: 8812345", "8812345", T.ACCOUNT),
        ("Card 4111 1111 1111 1111 declined", "4111 1111 1111 1111", T.ACCOUNT),
        ("IBAN GB82 WEST 1234 5698 7654 32", "GB82 WEST 1234 5698 7654 32", T.ACCOUNT),
        ("Driver's license D1234567", "D1234567", T.LICENSE),
        ("DEA # AB1234563", "AB1234563", T.LICENSE),
        ("licence plate ABC-1234", "ABC-1234", T.VEHICLE),
        ("VIN 1HGCM82633A004352", "1HGCM82633A004352", T.VEHICLE),
        ("Pacemaker serial number PM123456H", "PM123456H", T.DEVICE),
        (
            "UDI (01)00812345678901(17)250101(10)A123",
            "(01)00812345678901(17)250101(10)A123",
            T.DEVICE,
        ),
        ("MAC 02:1A:2B:3C:4D:5E", "02:1A:2B:3C:4D:5E", T.DEVICE),
        ("Fingerprint template ID FP-8842-AC19", "FP-8842-AC19", T.BIOMETRIC),
        ("Voiceprint hash 9f86d081884c7d65", "9f86d081884c7d65", T.BIOMETRIC),
        ("DNA profile: D8S1179: 13,14", "D8S1179: 13,14", T.BIOMETRIC),
        ("Specimen ID S24-118822", "S24-118822", T.ID),
        ("Accession # 24-0098123", "24-0098123", T.ID),
    ],
)
def test_identifiers(text: str, value: str, kind: PhiType) -> None:
    assert covered(text, value, kind), found(text)


def test_identifier_cues_do_not_grab_words_or_doses() -> None:
    assert detect("Patient ID band checked. Serial troponins negative.") == []
    assert detect("Metoprolol 25 mg, HR 88, A1c 7.2%, ICD-10 E11.9") == []


def test_validators() -> None:
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert npi_ok("1234567893") and not npi_ok("1234567890")
    assert not ssn_plausible("000", "12", "3456") and not ssn_plausible("666", "12", "3456")
    assert not ssn_plausible("123", "00", "3456") and ssn_plausible("987", "65", "4321")
    assert vin_ok("1HGCM82633A004352") and not vin_ok("1HGCM82633A004353")
    assert dea_ok("AB1234563") and not dea_ok("AB1234564")
    assert iban_ok("GB82 WEST 1234 5698 7654 32") and not iban_ok("GB83 WEST 1234 5698 7654 32")


# --- places -----------------------------------------------------------------------------------


def test_address_and_zip() -> None:
    text = "Lives at 1234 Maple Avenue, Apt 4B, Fairview, OH 43210 with her husband."
    assert covered(text, "1234 Maple Avenue, Apt 4B, Fairview", T.ADDRESS)
    assert covered(text, "43210", T.ZIP)
    assert covered("Lives in Riverton with family.", "Riverton", T.ADDRESS)
    assert covered("Resident of Elm County.", "Elm County", T.ADDRESS)
    assert covered("P.O. Box 123", "P.O. Box 123", T.ADDRESS)
    assert covered("ZIP code 43210-1234", "43210-1234", T.ZIP)


# --- names and ages the external sets showed missing (2026-12-07) ------------------------------


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("Reviewed in clinic with Sigríður Þórsdóttir today.", "Sigríður Þórsdóttir"),
        ("Letter copied to Mr Ó Briain.", "Ó Briain"),
        ("pt zdzisław wójcik on ward round", "zdzisław wójcik"),
        # census surnames the hand-written lists never had
        ("Consent witnessed by Bernadette Quattlebaum.", "Bernadette Quattlebaum"),
        # handover lines: a bed, then a name; a name, then an age
        ("bed 7 teodor brandvold, fall overnight", "teodor brandvold"),
        ("Bay 2: Oyelade Fadekemi 71 - awaiting echo", "Oyelade Fadekemi"),
        ("Results: Ruaraidh Mackinven, 58, stable", "Ruaraidh Mackinven"),
    ],
)
def test_names_of_every_script_and_position(text: str, name: str) -> None:
    assert covered(text, name, T.NAME), found(text)


@pytest.mark.parametrize(
    "text",
    [
        "Transfer to Ward 7B when a bed is free.",  # a word-name before a number labels it
        "Barthel index 40, Zimmer frame indoors.",  # census names before a clinical head
        "AKI on CKD, review the EHR and ASA grade.",  # short capitals are shorthand
        "left sternal border murmur, rockwood 5",  # lone lower-case census words
        "Seen in the Sjögren's clinic; Ménière's disease stable.",  # eponyms with accents
        # policy prose: role labels, numbered clauses, what a role does
        "- **Charge RN:** allocates the side rooms.",
        "4.2 Ward staff record the time of each dose.",
        "The RN confirms aloud the dose and the route.",
        "Use the liquid form if the patient cannot swallow.",
        "| Do not crush | Give whole |",
        "Offered to day-case and long-stay patients.",
    ],
)
def test_clinical_words_stay_words(text: str) -> None:
    assert not [f for f in found(text) if f[1] is T.NAME], found(text)


@pytest.mark.parametrize(
    ("text", "age"),
    [
        ("Independent at home, aged 101.", "101"),
        ("Bed 4 - Halvard Roed, 93, delirium", "93"),
        ("triage: F 96, fall, long lie", "96"),
        ("She is ninety-three and lives alone.", "ninety-three"),
    ],
)
def test_ages_over_89_in_list_and_word_forms(text: str, age: str) -> None:
    assert covered(text, age, T.AGE), found(text)


def test_day_month_dates_after_an_event_cue() -> None:
    assert covered("Fall 30/05, CT 14/06: no bleed", "30/05", T.DATE)
    assert covered("Fall 30/05, CT 14/06: no bleed", "14/06", T.DATE)
    assert not found("power 5/5 in all limbs, pain 7/10")


# --- the corpus gate ----------------------------------------------------------------------------


def test_corpus_is_deterministic_and_covers_every_text_type() -> None:
    a, b = generate(SEED, 20), generate(SEED, 20)
    assert [d.text for d in a] == [d.text for d in b]
    types = {s.type for d in generate() for s in d.spans}
    assert types == set(PhiType)


def test_corpus_recall(capsys: pytest.CaptureFixture[str]) -> None:
    docs = generate(SEED, N_DOCS)
    t0 = time.perf_counter()
    report = evaluate(docs, ours)
    elapsed = time.perf_counter() - t0
    with capsys.disabled():
        print(
            f"\napp.phi on the synthetic corpus (seed {SEED}, {len(docs)} notes, {elapsed:.2f} s):"
        )
        print(table({"app.phi": report}, docs))
    low = {
        t.value: round(report.per_type[t.value].recall or 0.0, 3)
        for t in TARGET_TYPES
        if (report.per_type[t.value].recall or 0.0) < 0.98
    }
    assert not low, f"recall below 0.98: {low}"
    assert (report.total().precision or 0.0) >= 0.95


# --- a note not written from the corpus templates -----------------------------------------------

_NOTE = """ED NOTE 11/02/2023 21:14
Name: Margaret O'Connor    DOB: 7/14/1931    MRN: 00482913
Margaret is a 92 y.o. woman brought in by her son Patrick after a fall at home
(44 Linden Rd, Dover, NH 03820).
PMH: Parkinson's disease, Bell's palsy 2011, s/p Whipple. Lives with daughter-in-law Grace.
Son's cell 603-555-0148. PCP Dr. Ahmed Siddiqui, fax (603) 555-0190.
Exam: GCS 15, strength 4/5 LLE, 2+ edema. Hgb 9.8. INR 2.4 on warfarin 5 mg.
Plan: admit to medicine, follow up with Dr Bell in neurology on Dec 3rd.
Insurance: Medicare 1EG4-TE5-MK73. Pt's email mocon31@example.net.
"""


def test_free_text_note() -> None:
    assert redact(_NOTE) == (
        "ED NOTE [DATE] 21:14\n"
        "Name: [NAME]    DOB: [DATE]    MRN: [MRN]\n"
        "[NAME] is a [AGE] woman brought in by her son [NAME] after a fall at home\n"
        "([ADDRESS] [ZIP]).\n"
        "PMH: Parkinson's disease, Bell's palsy 2011, s/p Whipple. "
        "Lives with daughter-in-law [NAME].\n"
        "Son's cell [PHONE]. PCP Dr. [NAME], fax [FAX].\n"
        "Exam: GCS 15, strength 4/5 LLE, 2+ edema. Hgb 9.8. INR 2.4 on warfarin 5 mg.\n"
        "Plan: admit to medicine, follow up with Dr [NAME] in neurology on [DATE].\n"
        "Insurance: Medicare [HEALTH_PLAN]. Pt's email [EMAIL].\n"
    )


def test_bundled_lists_load() -> None:
    from app.phi.names import lexicon

    lex = lexicon()
    assert len(lex.first) > 1000 and len(lex.last) > 1000
    assert "hope" in lex.ambiguous and "bell" in lex.eponyms and "palsy" in lex.heads
    assert len(lex.census) > 50_000 and not lex.census & (lex.common | lex.terms | lex.eponyms)


@pytest.mark.parametrize(
    ("text", "url"),
    [
        ("Portal: clinic.example.org/results/123.", "clinic.example.org/results/123"),
        ("see WWW.Example.COM today", "WWW.Example.COM"),
        ("host -intranet.hospital/wiki/ here", "intranet.hospital/wiki"),
        ("a.b.c.health.x9 then", "a.b.c.health"),
    ],
)
def test_bare_host_names(text: str, url: str) -> None:
    spans = [text[s.start : s.end] for s in detect(text) if s.type is PhiType.URL]
    assert spans == [url]


@pytest.mark.parametrize("text", ["v1.2.3 release", "e.g. fever", "x_clinic.com", "1.5 mg"])
def test_dotted_words_that_are_not_host_names(text: str) -> None:
    assert not [s for s in detect(text) if s.type is PhiType.URL]


def test_a_dotted_run_is_matched_once_from_its_start() -> None:
    """The bare-host pattern cannot backtrack from every label of a long dotted run (it
    did, quadratically: seconds for 8,000 characters, from text anyone can send)."""
    from app.phi.patterns import _DOTTED_RE

    run = "a." * 4000 + "1"
    assert [m.span() for m in _DOTTED_RE.finditer(run)] == [(0, len(run))]
    assert not [s for s in detect(run) if s.type is PhiType.URL]
