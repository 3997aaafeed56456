"""app/README.md documents every setting, so hospital IT never has to read the code."""

from pathlib import Path

from app.settings import Settings

README = Path(__file__).resolve().parents[2] / "app" / "README.md"


def test_every_setting_is_in_the_readme() -> None:
    text = README.read_text()
    missing = [
        f"CLINCHAT_{name.upper()}"
        for name in Settings.model_fields
        if f"`CLINCHAT_{name.upper()}`" not in text
    ]
    assert missing == [], f"add to app/README.md's settings table: {missing}"
