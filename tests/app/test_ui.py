"""The web UI in a real browser: headless Chromium (Debian's) driven by Selenium.

Everything is real: the app in uvicorn on a loopback port, the ingestion worker in a
thread, directory sign-in against OpenLDAP, PostgreSQL, Redis, OpenBao and the
serving's tiny random model (gibberish text: the tests check structure). The three
people of the appliance each do their job through the pages only:

- a knowledge-base admin signs in and uploads a guideline, and watches it get ready;
- a clinician asks about it and reads a streamed answer whose citation opens the
  cited passage; a page left idle leaves the screen when the session times out;
- answers show their markdown (bold, lists, code) while model text stays text, each
  answer can be copied, the heading takes the conversation's new title, and the last
  answer ends in view above the question box, wide and narrow;
- a clinician reports an answer (thumbs down, a category, a comment) and an admin
  finds it in the feedback queue and marks it reviewed;
- an auditor finds those events in the audit trail and verifies the chain;
- a local (break-glass) account signs in with its authentication code;
- the library names each file input's document and each PHI badge's types.

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
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

from app.auth.principal import Principal
from app.chat import service
from app.chat.prompt import NOT_FOUND
from app.db import dispose_all, sessionmaker
from app.kb.worker import run_worker
from app.models import Conversation, Role
from app.settings import Settings
from tests.app.conftest import enrol_totp
from tests.app.data import kbdocs
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


def viewport(driver: WebDriver, width: int, height: int) -> None:
    """The page's viewport exactly ``width`` x ``height`` CSS pixels (the window aside)."""
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
    )


def in_view(driver: WebDriver, element: WebElement) -> str:
    """Why ``element`` is not fully on screen and on top at its centre and bottom; "" if it is.

    elementFromPoint finds what a click there would hit: the sticky question box, if it
    covers the element."""
    return str(
        driver.execute_script(
            """
            const target = arguments[0];
            const box = target.getBoundingClientRect();
            if (box.width === 0 || box.height === 0) return "not displayed";
            if (box.top < 0 || box.left < 0 || box.bottom > innerHeight || box.right > innerWidth) {
              return `outside the ${innerWidth}x${innerHeight} viewport: ` + JSON.stringify(box);
            }
            const x = box.left + box.width / 2;
            for (const y of [box.top + box.height / 2, box.bottom - 1]) {
              const hit = document.elementFromPoint(x, y);
              if (!hit || !target.contains(hit)) {
                return `covered at ${x},${y} by ` + (hit ? hit.outerHTML.slice(0, 80) : "nothing");
              }
            }
            return "";
            """,
            element,
        )
    )


def ask_and_wait(driver: WebDriver, question: str) -> WebElement:
    """Ask on the open chat page; the new answer's element once its stream is done."""
    done = ".message.assistant .disclaimer"
    before = len(driver.find_elements(By.CSS_SELECTOR, done))
    driver.find_element(By.ID, "question").send_keys(question)
    driver.find_element(By.ID, "ask-button").click()
    wait(driver).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, done)) > before)
    wait(driver).until(ec.element_to_be_clickable((By.ID, "ask-button")))  # the stream ended
    return driver.find_element(By.CSS_SELECTOR, "#messages > .message.assistant:last-child")


def store_exchange(settings: Settings, conversation_id: str, question: str, answer: str) -> None:
    """A question and an answer stored in the conversation through the chat service, as
    if the model had written ``answer`` (the tiny model's own text is gibberish)."""

    async def go() -> None:
        try:
            async with sessionmaker(settings)() as db:
                conversation = await db.get(Conversation, uuid.UUID(conversation_id))
                assert conversation is not None
                owner = conversation.user_id
                principal = Principal(owner, "clin1", "clin1", frozenset({Role.clinician}), "", "")
                for role, text in (("user", question), ("assistant", answer)):
                    await service.add_message(db, settings, principal, conversation.id, owner,
                                              role, text)  # fmt: skip
                await db.commit()
        finally:
            await dispose_all()

    asyncio.run(go())


def upload_on_page(browser: WebDriver, title: str, source: Path) -> None:
    """Fill the documents page's upload form with ``title`` and ``source``, and send it."""
    form = "form[action='/documents/upload']"
    browser.find_element(By.NAME, "title").send_keys(title)
    browser.find_element(By.CSS_SELECTOR, f"{form} input[type=file]").send_keys(str(source))
    browser.find_element(By.CSS_SELECTOR, f"{form} button").click()


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
    upload_on_page(browser, "Zorbexine infusion guideline", source)
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
    assert browser.find_element(By.ID, "conversation-title").text == "New conversation"
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
    # the server named the conversation after the question: the page says so at once
    assert browser.find_element(By.ID, "conversation-title").text == COVERED
    assert browser.title == f"{COVERED} · ClinChat"
    copy = browser.find_element(By.CSS_SELECTOR, f"{answer} button.copy-answer")
    assert copy.accessible_name == "Copy answer"

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
    assert browser.find_element(By.ID, "conversation-title").text == COVERED
    assert console_errors(browser) == []


MARKDOWN_ANSWER = """## Zorbexine dosing

Give **40 mg** intravenously every *6 hours* [1].
Reduce to `20 mg` when the clearance is below 30 mL/min.

1. Check the trough level before the fourth dose
2. Repeat it twice a week

- Stop the infusion above 12 mg/L
- Call the on-call pharmacist

```
<b>not bold</b> **not bold either**
```

<img src=x onerror="window.injected = 1"> <script>window.injected = 2</script>
[a link](javascript:window.injected=3) and <a href="javascript:window.injected=4">another</a>"""

LONG_ANSWER = "\n".join(f"{n}. Synthetic step number {n} of a long answer." for n in range(1, 25))


def test_answers_render_markdown_as_text_and_end_in_view(
    browser: WebDriver,
    live: str,
    ui_settings: Settings,
    ldap_server,  # noqa: ANN001
) -> None:
    sign_in(browser, live, "clin1", ldap_server.users["clin1"])
    browser.find_element(By.CSS_SELECTOR, "form[action='/conversations/new'] button").click()
    wait(browser).until(ec.presence_of_element_located((By.ID, "question")))
    conversation = browser.current_url.rsplit("/", 1)[1]
    store_exchange(ui_settings, conversation, "Format the dosing, please.", MARKDOWN_ANSWER)
    store_exchange(ui_settings, conversation, "And every step?", LONG_ANSWER)
    browser.execute_cdp_cmd(
        "Browser.grantPermissions",
        {"origin": live, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]},
    )
    viewport(browser, 1280, 900)
    try:
        browser.refresh()
        heading = (By.CSS_SELECTOR, ".message.assistant .message-content h3")
        wait(browser).until(ec.presence_of_element_located(heading))
        formatted = browser.find_elements(By.CSS_SELECTOR, ".message.assistant")[0]
        content = formatted.find_element(By.CLASS_NAME, "message-content")
        found = {
            tag: [e.text for e in content.find_elements(By.TAG_NAME, tag)]
            for tag in ("h3", "strong", "em", "code", "li", "pre", "img", "script", "a")
        }
        assert found["h3"] == ["Zorbexine dosing"]
        assert found["strong"] == ["40 mg"] and found["em"] == ["6 hours"]
        assert found["code"][0] == "20 mg"
        assert len(found["li"]) == 4 and found["li"][0].startswith("Check the trough")
        assert found["pre"] == ["<b>not bold</b> **not bold either**"]
        # the model's HTML is text: nothing of it became an element or ran
        assert found["img"] == found["script"] == found["a"] == []
        assert browser.execute_script("return window.injected") is None
        for shown in ('<img src=x onerror="window.injected = 1">',
                      "<script>window.injected = 2</script>",
                      "a link (javascript:window.injected=3)", "[1]"):  # fmt: skip
            assert shown in content.text, shown

        # the copy button puts the answer's plain text on the clipboard
        copy = formatted.find_element(By.CSS_SELECTOR, "button.copy-answer")
        assert copy.accessible_name == "Copy answer"
        copy.click()
        status = formatted.find_element(By.CSS_SELECTOR, ".copy-status")
        wait(browser).until(lambda _: status.text == "Copied")
        copied = browser.execute_async_script(
            "navigator.clipboard.readText().then(arguments[0], (e) => arguments[0](String(e)))"
        )
        assert copied.startswith("Zorbexine dosing\n\nGive 40 mg intravenously"), copied
        assert "1. Check the trough" in copied and "- Call the on-call" in copied

        # a page longer than the screen: the answer that has just come in ends in view,
        # above the question box, and the heading takes the conversation's new title
        assert browser.find_element(By.ID, "conversation-title").text == "New conversation"
        answer = ask_and_wait(browser, UNCOVERED)
        for part in ("disclaimer", "feedback-down"):
            assert in_view(browser, answer.find_element(By.CLASS_NAME, part)) == "", part
        assert browser.find_element(By.ID, "conversation-title").text == UNCOVERED
        assert browser.title == f"{UNCOVERED} · ClinChat"

        viewport(browser, 420, 800)
        answer = ask_and_wait(browser, UNCOVERED)
        for part in ("disclaimer", "feedback-down"):
            assert in_view(browser, answer.find_element(By.CLASS_NAME, part)) == "", part
        assert browser.execute_script(
            "return document.documentElement.scrollWidth <= innerWidth"
        ), "the page is wider than a narrow screen"
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
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


def test_the_library_names_its_inputs_and_the_phi_it_found(
    browser: WebDriver,
    live: str,
    ldap_server,
    tmp_path: Path,  # noqa: ANN001
) -> None:
    """Last in the module: the summary it uploads holds synthetic PHI."""
    sign_in(browser, live, "admin1", ldap_server.users["admin1"])
    browser.get(f"{live}/documents")
    source = tmp_path / "summary.txt"
    source.write_text(kbdocs.PHI_TXT)
    upload_on_page(browser, "Synthetic discharge summary", source)
    wait(browser).until(ec.url_contains("uploaded=1"))
    rows = browser.find_elements(By.CSS_SELECTOR, "tr[data-document-id]")
    assert len(rows) >= 2
    for row in rows:
        title = row.find_element(By.CSS_SELECTOR, "td").text
        new_version = row.find_element(By.CSS_SELECTOR, "input[type=file]")
        assert new_version.accessible_name == f"New version of {title}"
    inputs = browser.find_elements(By.CSS_SELECTOR, "input[type=file]")
    assert all(i.accessible_name for i in inputs) and len(inputs) == len(rows) + 1
    (row,) = [r for r in rows if "Synthetic discharge summary" in r.text]
    badge = row.find_element(By.CSS_SELECTOR, ".phi-badge")
    # the types shown, each one's count in visually hidden text (read out) and the tooltip
    assert badge.get_attribute("textContent") == "PHI: MRN (1), NAME (1), PHONE (1)"
    assert badge.get_attribute("title") == "MRN: 1, NAME: 1, PHONE: 1"
    # retiring looks unlike uploading
    retire = row.find_element(By.CSS_SELECTOR, "form.retire button")
    upload_button = browser.find_element(By.CSS_SELECTOR, "form[action='/documents/upload'] button")
    assert retire.value_of_css_property("background-color") != \
        upload_button.value_of_css_property("background-color")  # fmt: skip
    assert console_errors(browser) == []
