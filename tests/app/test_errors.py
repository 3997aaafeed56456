"""Error shapes that hold app-wide: no echo of the input in a 422, HTML errors for browsers."""

from collections.abc import Callable

from fastapi.testclient import TestClient

from app.models import Role

SECRET = "Zelda Quixotic-Testperson"  # obviously synthetic PHI


def test_a_422_names_the_field_and_never_echoes_the_input(client: TestClient) -> None:
    response = client.post("/api/v1/auth/login", json={"username": [SECRET], "password": 7})
    assert response.status_code == 422
    assert SECRET not in response.text
    errors = response.json()["detail"]
    assert {tuple(e["loc"]) for e in errors} == {("body", "username"), ("body", "password")}
    assert all(set(e) == {"loc", "msg", "type"} for e in errors)


def test_a_browser_without_the_role_gets_a_page_that_says_so(
    login: Callable[..., TestClient],
) -> None:
    clinician = login(Role.clinician)
    page = clinician.get("/documents", headers={"Accept": "text/html"})
    assert page.status_code == 403
    assert page.headers["content-type"].startswith("text/html")
    assert "does not have the role" in page.text
    api = clinician.get("/api/v1/documents", headers={"Accept": "text/html"})
    assert api.status_code == 403 and api.json() == {"detail": "your role does not allow this"}


def test_a_form_without_its_csrf_token_is_refused_with_a_page(
    login: Callable[..., TestClient],
) -> None:
    admin = login(Role.admin)
    del admin.headers["X-CSRF-Token"]
    page = admin.post(
        "/documents/upload",
        headers={"Accept": "text/html"},
        files={"file": ("a.md", b"# x", "text/markdown")},
    )
    assert page.status_code == 403
    assert "CSRF" in page.text and "Reload the page" in page.text
