"""Query expansion: clinical shorthand spelled out before the search (app/kb/expand.py)."""

from __future__ import annotations

from app.kb.expand import LIST, abbreviations, expand


def test_an_abbreviation_is_followed_by_its_expansion() -> None:
    assert expand("PIVC site red, leave it?") == (
        f"PIVC ({abbreviations()['pivc']}) site red, leave it?"
    )
    assert "cannula" in abbreviations()["pivc"]


def test_matching_ignores_case_and_takes_the_longest_phrase() -> None:
    assert "difficile" in expand("is gel ok after a c diff pt")
    assert expand("pt on Tazocin").count("(") == 2
    assert "potassium" in expand("K+ of 2.9 on the VBG")


def test_a_word_that_is_also_an_abbreviation_expands_only_in_capitals() -> None:
    assert expand("leave it or pull it?") == "leave it or pull it?"
    assert "operating" in expand("back from OR at noon")


def test_plain_text_is_unchanged() -> None:
    for text in ("What is the capital of France?", "", "   ", "ünïcode and 12:30"):
        assert expand(text) == text


def test_the_list_is_well_formed() -> None:
    rows = [
        line.split("\t")
        for line in LIST.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert rows[0] == ["abbreviation", "expansion"]
    assert all(len(row) == 2 and row[0].strip() and row[1].strip() for row in rows)
    keys = [row[0].lower() for row in rows[1:]]
    assert len(keys) == len(set(keys)) == len(abbreviations()) >= 300
