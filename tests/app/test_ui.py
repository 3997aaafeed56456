"""The web UI in a real browser: headless Chromium (Debian's) driven by Selenium.

Everything is real: the app in uvicorn on a loopback port, the ingestion worker in a
thread, directory sign-in against OpenLDAP, PostgreSQL, Redis, OpenBao and the
serving's tiny random model (gibberish text: the tests check structure). The three
people of the appliance each do their job through the pages only:

- a knowledge-base admin signs in and uploads a guideline, and watches it get ready;
- a clinician asks about it and reads a streamed answer whose citation opens the
  cited passage; a page left idle leaves the screen when the session times out;
- a clinician reports an answer (thumbs down, a category, a comment) and an admin
  finds it in the feedback queue and marks it reviewed;
- an auditor finds those events in the audit trail and verifies the chain;
- a local (break-glass) account signs in with its authentication code.

No page may log a console error: a Content-Security-Policy violation (an inline
script or style) would show up there.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

from app.chat.prompt import NOT_FOUND
from app.kb.worker import run_worker
from app.settings import Settings
from tests.app.conftest import enrol_totp
from tests.app.data.kbdb import isolated_settings
from tests.app.live import live_app
from tests.app.test_chat import COVERED, GUIDELINE, UNCOVERED, use
from tests.services.postgres import PrivatePostgres

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT_S = 60  # generous: CI shares 2 cores between the browser, the app and the model


@pytest.fixture(scope="module")
def ui_settings(base_settings: Settings, postgres: PrivatePostgres) -> Settings:
    return isolated_settings(base_settings, postgres, max_answer_tokens=24)


@pytest.fixture(scope="module")
def live(ui_settings: Settings) -> Iterator[str]:
    """The app and its ingestion worker, as on a host (two loops, one database)."""
    use(ui_settings)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    def work() -> None:
        loop.run_until_complete(run_worker(ui_settings, stop))

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    try:
        with live_app() as url:
            yield url
    finally:
        loop.call_soon_threadsafe(stop.set)
        worker.join(timeout=30)
        from app.main import app

        app.dependency_overrides.clear()


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    for needed in (CHROMIUM, CHROMEDRIVER):
        if not shutil.which(needed):
            pytest.fail(f"{needed} is missing: run tests/setup-controller.sh")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,1000",
        "--no-first-run",
    ):
        options.add_argument(argument)  # fmt: skip
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: Selenium Manager (which would download one) never runs.
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT_S)
    yield driver
    driver.quit()


def wait(driver: WebDriver) -> WebDriverWait:
    return WebDriverWait(driver, WAIT_S)


def console_errors(driver: WebDriver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def sign_in(driver: WebDriver, base: str, username: str, password: str) -> None:
    driver.delete_all_cookies()
    driver.get(f"{base}/login")
    driver.find_element(By.ID, "username").send_keys(username)
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "form[action='/login'] button[type=submit]").click()
    wait(driver).until(ec.presence_of_element_located((By.CSS_SELECTOR, "form.signout")))


def test_admin_uploads_a_guideline_and_sees_it_ready(
    browser: WebDriver,
    live: str,
    ldap_server,
    tmp_path: Path,  # noqa: ANN001
) -> None:
    sign_in(browser, live, "admin1", ldap_server.users["admin1"])
    browser.get(f"{live}/documents")
    source = tmp_path / "zorbexine.md"
    source.write_text(GUIDELINE)
    browser.find_element(By.NAME, "title").send_keys("Zorbexine infusion guideline")
    browser.find_element(By.CSS_SELECTOR, "form[action='/documents/upload'] input[type=file]")\
        .send_keys(str(source))  # fmt: skip
    browser.find_element(By.CSS_SELECTOR, "form[action='/documents/upload'] button").click()
    row = "tr[data-document-id]"
    wait(browser).until(ec.presence_of_element_located((By.CSS_SELECTOR, row)))
    assert "Zorbexine infusion guideline" in browser.find_element(By.CSS_SELECTOR, row).text
    # documents.js polls the version's progress until the worker has finished it
    wait(browser).until(
        ec.text_to_be_present_in_element((By.CSS_SELECTOR, f"{row} .doc-status"), "ready")
    )
    percent = browser.find_element(By.CSS_SELECTOR, f"{row} .doc-percent").text
    assert percent == "100%"
    assert console_errors(browser) == []


def test_clinician_reads_a_streamed_cited_answer(
    browser: WebDriver,
    live: str,
    ldap_server,  # noqa: ANN001
) -> None:
    sign_in(browser, live, "clin1", ldap_server.users["clin1"])
    browser.find_element(By.CSS_SELECTOR, "form[action='/conversations/new'] button").click()
    question = wait(browser).until(ec.presence_of_element_located((By.ID, "question")))
    # Count the changes to the answer while it arrives: streamed means several.
    browser.execute_script(
        """
        window.answerUpdates = 0;
        new MutationObserver((changes) => {
          for (const change of changes) {
            if (change.target.closest && change.target.closest('.message.assistant')) {
              window.answerUpdates += 1;
            }
          }
        }).observe(document.getElementById('messages'),
                   {childList: true, subtree: true, characterData: true});
        """
    )
    question.send_keys(COVERED)
    browser.find_element(By.ID, "ask-button").click()
    answer = ".message.assistant"
    wait(browser).until(ec.presence_of_element_located((By.CSS_SELECTOR, f"{answer} .disclaimer")))
    assert browser.execute_script("return window.answerUpdates") > 3
    assert browser.find_element(By.CSS_SELECTOR, ".message.user").text.endswith(COVERED)
    citation = browser.find_element(By.CSS_SELECTOR, f"{answer} a.cite")
    assert citation.text.startswith("[1] Zorbexine infusion guideline")
    assert browser.find_element(By.CSS_SELECTOR, f"{answer} .disclaimer").text

    citation.click()  # opens the passage in a dialog, not a new page
    dialog = browser.find_element(By.ID, "chunk-dialog")
    wait(browser).until(
        ec.text_to_be_present_in_element((By.ID, "chunk-title"), "Zorbexine infusion guideline")
    )
    assert dialog.is_displayed()
    assert "zorbexine" in browser.find_element(By.ID, "chunk-text").text.lower()
    dialog.find_element(By.CSS_SELECTOR, "button").click()

    # The conversation is kept: reloading shows the answer with its citation.
    browser.refresh()
    wait(browser).until(ec.presence_of_element_located((By.CSS_SELECTOR, f"{answer} a.cite")))
    assert console_errors(browser) == []


def test_a_reported_answer_reaches_the_admins_queue(
    browser: WebDriver,
    live: str,
    ldap_server,  # noqa: ANN001
) -> None:
    sign_in(browser, live, "clin1", ldap_server.users["clin1"])
    browser.find_element(By.CSS_SELECTOR, "form[action='/conversations/new'] button").click()
    question = wait(browser).until(ec.presence_of_element_located((By.ID, "question")))
    question.send_keys(UNCOVERED)  # the fixed not-found answer: no model call
    browser.find_element(By.ID, "ask-button").click()
    # the thumbs come with the streamed answer's done event
    answer = ".message.assistant"
    down = wait(browser).until(
        ec.element_to_be_clickable((By.CSS_SELECTOR, f"{answer} .feedback-down"))
    )
    assert down.accessible_name == "Report a problem"
    up = browser.find_element(By.CSS_SELECTOR, f"{answer} .feedback-up")
    assert up.accessible_name == "Helpful"
    down.click()
    form = f"{answer} .feedback-form"
    select = (By.CSS_SELECTOR, f"{form} select")
    category = wait(browser).until(ec.visibility_of_element_located(select))
    assert down.get_attribute("aria-expanded") == "true"
    Select(category).select_by_value("outdated_policy")
    comment = f"Synthetic UI comment {uuid.uuid4().hex[:8]}"
    browser.find_element(By.CSS_SELECTOR, f"{form} textarea").send_keys(comment)
    browser.find_element(By.CSS_SELECTOR, f"{form} button[type=submit]").click()
    status = (By.CSS_SELECTOR, f"{answer} .feedback-status")
    wait(browser).until(ec.text_to_be_present_in_element(status, "sent for review"))
    assert down.get_attribute("aria-pressed") == "true"
    assert console_errors(browser) == []

    sign_in(browser, live, "admin1", ldap_server.users["admin1"])
    browser.find_element(By.LINK_TEXT, "Feedback").click()
    wait(browser).until(ec.presence_of_element_located((By.CSS_SELECTOR, "article.feedback-item")))
    (item,) = [i for i in browser.find_elements(By.CSS_SELECTOR, "article.feedback-item")
               if comment in i.text]  # fmt: skip
    for shown in ("Thumbs down", "Outdated policy", UNCOVERED, NOT_FOUND, "clin1"):
        assert shown in item.text, shown
    item.find_element(By.CSS_SELECTOR, "form.review button[type=submit]").click()
    # back on the open queue, without it
    wait(browser).until(ec.staleness_of(item))
    assert comment not in browser.find_element(By.TAG_NAME, "main").text
    browser.get(f"{live}/admin/feedback?status=reviewed")
    assert comment in browser.find_element(By.TAG_NAME, "main").text
    assert "Reviewed by admin1" in browser.find_element(By.TAG_NAME, "main").text
    assert console_errors(browser) == []


def test_an_idle_page_leaves_the_screen(
    browser: WebDriver,
    live: str,
    ui_settings: Settings,
    ldap_server,  # noqa: ANN001
) -> None:
    use(ui_settings.model_copy(update={"session_idle_timeout_s": 3}))
    try:
        sign_in(browser, live, "clin1", ldap_server.users["clin1"])
        assert browser.find_element(By.TAG_NAME, "body").get_attribute("data-idle-timeout") == "3"
        # nobody touches it: the page goes to the sign-in form by itself
        wait(browser).until(ec.url_contains("/login"))
        assert browser.find_elements(By.CSS_SELECTOR, "form.signout") == []
        assert browser.find_element(By.ID, "username").is_displayed()
    finally:
        use(ui_settings)


def test_auditor_finds_the_events_and_verifies_the_chain(
    browser: WebDriver,
    live: str,
    ldap_server,  # noqa: ANN001
) -> None:
    sign_in(browser, live, "audit1", ldap_server.users["audit1"])
    browser.get(f"{live}/audit")
    table = browser.find_element(By.TAG_NAME, "table").text
    for action in ("document.create", "message.create", "auth.login"):
        assert action in table, action
    browser.find_element(By.CSS_SELECTOR, "form[action='/audit/verify'] button").click()
    wait(browser).until(ec.presence_of_element_located((By.CSS_SELECTOR, ".verdict")))
    assert "intact" in browser.find_element(By.CSS_SELECTOR, ".verdict").text.lower()
    assert console_errors(browser) == []


def test_a_local_account_signs_in_with_its_authentication_code(
    browser: WebDriver, live: str, ui_settings: Settings
) -> None:
    import psycopg
    from argon2 import PasswordHasher

    from app.auth.totp import totp
    from app.db import conninfo

    name, password, user_id = f"bg-{uuid.uuid4().hex[:8]}", "synthetic-Passw0rd-ui", uuid.uuid4()
    with psycopg.connect(conninfo(ui_settings)) as conn:
        conn.execute(
            "INSERT INTO users (id, username, display_name, source, password_hash, roles,"
            " disabled) VALUES (%s, %s, %s, 'local', %s, %s, false)",
            (user_id, name, name, PasswordHasher().hash(password), ["admin"]),
        )
    secret = enrol_totp(ui_settings, user_id, name)
    browser.delete_all_cookies()
    browser.get(f"{live}/login")
    field = browser.find_element(By.ID, "totp")
    assert field.get_attribute("autocomplete") == "one-time-code"
    assert field.get_attribute("inputmode") == "numeric"
    submit = "form[action='/login'] button[type=submit]"
    # the password alone: the page asks for the code
    browser.find_element(By.ID, "username").send_keys(name)
    browser.find_element(By.ID, "password").send_keys(password)
    browser.find_element(By.CSS_SELECTOR, submit).click()
    wait(browser).until(ec.presence_of_element_located((By.CSS_SELECTOR, "p.error")))
    assert "second factor required" in browser.find_element(By.CSS_SELECTOR, "p.error").text
    # the refusal's own 401 is the only console entry (reading the log empties it)
    assert all("status of 401" in e for e in console_errors(browser))
    # the name is kept; the password and the code from the authenticator app
    browser.find_element(By.ID, "password").send_keys(password)
    browser.find_element(By.ID, "totp").send_keys(totp(secret, time.time()))
    browser.find_element(By.CSS_SELECTOR, submit).click()
    wait(browser).until(ec.presence_of_element_located((By.CSS_SELECTOR, "form.signout")))
    assert console_errors(browser) == []
