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
- the library names each file input's document and each PHI badge's types;
- the chat page's sidebar finds a clinician's own conversation by a word of its
  question (never another clinician's), a citation opens its passage in a side panel
  (an overlay on a phone), "Regenerate" asks the last question again, the shortcuts
  work, and the dark theme is chosen, remembered and readable.

Every page is checked with axe-core (WCAG 2.1 A and AA rules): zero violations, each
one printed with its target nodes otherwise. axe.min.js comes from
tests/setup-controller.sh (a pinned release, in $CLINCHAT_CACHE/axe-core/); without it
the tests fail, they do not skip.

No page may log a console error: a Content-Security-Policy violation (an inline
script or style) would show up there.

``CLINCHAT_SCREENSHOTS=app/docs/screenshots pytest -q tests/app/test_ui.py`` also
saves the screenshots app/README.md shows (chat light and dark, the sidebar's search,
the feedback queue).
"""

from __future__ import annotations

import asyncio
import os
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
from selenium.webdriver.common.keys import Keys
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
from app.sealed import CONVERSATION_TITLE
from app.settings import CollectionSpec, Settings
from tests.app.conftest import enrol_totp
from tests.app.data import kbdocs
from tests.app.data.kbdb import isolated_settings
from tests.app.live import live_app
from tests.app.test_chat import COVERED, GUIDELINE, UNCOVERED, use
from tests.services.postgres import PrivatePostgres

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT_S = 60  # generous: CI shares 2 cores between the browser, the app and the model
# tests/setup-controller.sh pins the same version
AXE_VERSION = "4.10.3"
AXE = Path(os.environ.get("CLINCHAT_CACHE", "/var/cache/clinchat"), "axe-core", AXE_VERSION,
           "axe.min.js")  # fmt: skip
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
BRAND = "Synthetic General Hospital"


@pytest.fixture(scope="module")
def ui_settings(
    base_settings: Settings,
    postgres: PrivatePostgres,
    ldap_server,  # noqa: ANN001
) -> Settings:
    # the hospital's name and logo (here the app's own icon) in every page's top bar
    logo = Path(__file__).parents[2] / "app" / "web" / "static" / "favicon.svg"
    # and a department: the ICU's collection, read by the directory's icu-staff only
    collections = {
        "hospital-wide": CollectionSpec(name="Hospital-wide", readers=["*"]),
        "icu": CollectionSpec(name="Intensive care", readers=[ldap_server.group_dn("icu-staff")]),
    }
    return isolated_settings(base_settings, postgres, max_answer_tokens=24,
                             brand_name=BRAND, brand_logo_path=logo,
                             collections=collections)  # fmt: skip


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
    driver.set_script_timeout(WAIT_S)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def axe_source() -> str:
    if not AXE.is_file():
        pytest.fail(f"{AXE} is missing: run tests/setup-controller.sh (it fetches axe-core)")
    return AXE.read_text()


def assert_accessible(driver: WebDriver, axe_source: str, page: str) -> None:
    """axe-core's WCAG 2.1 A and AA rules find nothing on the page as it is now."""
    if not driver.execute_script("return typeof window.axe === 'object'"):
        driver.execute_script(axe_source)
    found = driver.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        axe.run(document, {runOnly: {type: "tag", values: arguments[0]},
                           resultTypes: ["violations"]})
          .then((r) => done(r.violations.map((v) => ({
                  id: v.id, impact: v.impact, help: v.help,
                  nodes: v.nodes.map((n) => n.target.join(" ") + ": " + n.failureSummary)}))),
                (e) => done([{id: "axe-error", impact: "", help: String(e), nodes: []}]));
        """,
        AXE_TAGS,
    )
    report = "\n".join(
        f"- {v['id']} ({v['impact']}): {v['help']}\n" + "\n".join(f"    {n}" for n in v["nodes"])
        for v in found
    )
    assert not found, f"axe: {len(found)} violation(s) on {page}:\n{report}"


def screenshot(driver: WebDriver, name: str) -> None:
    """The viewport as ``$CLINCHAT_SCREENSHOTS/<name>.png`` when that is set (the README's)."""
    directory = os.environ.get("CLINCHAT_SCREENSHOTS")
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
        assert driver.save_screenshot(str(Path(directory, f"{name}.png")))


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


def too_wide_for_a_phone(driver: WebDriver) -> str:
    """What, on the page as it is now, reaches past a 420 px wide screen; "" if nothing."""
    viewport(driver, 420, 800)
    try:
        return str(
            driver.execute_script(
                """
                if (document.documentElement.scrollWidth <= innerWidth) return "";
                // inside a box that scrolls (an absolutely placed element escapes one
                // that is not positioned itself)
                const clipped = (e) => {
                  const free = getComputedStyle(e).position === "absolute";
                  for (let a = e.parentElement; a; a = a.parentElement) {
                    const style = getComputedStyle(a);
                    if (style.overflowX !== "visible" &&
                        (!free || style.position !== "static")) return true;
                  }
                  return false;
                };
                // the deepest elements past the edge, or whose text overflows them
                const past = (e) => e.getBoundingClientRect().right > innerWidth + 1;
                const wide = [...document.body.querySelectorAll("*")].filter((e) => {
                  if (clipped(e) || e.getBoundingClientRect().width === 0) return false;
                  const spills = getComputedStyle(e).overflowX === "visible" &&
                    e.scrollWidth > e.clientWidth + 1 && e.clientWidth > 0;
                  return (past(e) && ![...e.children].some(past)) || spills;
                });
                return `${document.documentElement.scrollWidth} px wide: ` +
                  wide.slice(0, 5).map((e) => e.outerHTML.slice(0, 100)).join(" | ");
                """
            )
        )
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


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
    ldap_server,  # noqa: ANN001
    tmp_path: Path,
    axe_source: str,
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
    assert_accessible(browser, axe_source, "the documents page")
    assert too_wide_for_a_phone(browser) == "", "the documents page"
    assert console_errors(browser) == []


def test_clinician_reads_a_streamed_cited_answer(
    browser: WebDriver,
    live: str,
    ldap_server,  # noqa: ANN001
    axe_source: str,
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

    assert_accessible(browser, axe_source, "the chat page with an answer")

    # the citation opens its passage in a panel beside the answer, not a new page
    citation.click()
    panel = browser.find_element(By.ID, "passage-panel")
    wait(browser).until(
        ec.text_to_be_present_in_element((By.ID, "chunk-title"), "Zorbexine infusion guideline")
    )
    assert panel.is_displayed() and panel.value_of_css_property("position") == "sticky"
    messages = browser.find_element(By.ID, "messages")
    assert panel.rect["x"] >= messages.rect["x"] + messages.rect["width"], "not beside"
    assert in_view(browser, panel) == ""
    assert "zorbexine" in browser.find_element(By.ID, "chunk-text").text.lower()
    assert browser.switch_to.active_element == panel  # focus went to the passage
    assert_accessible(browser, axe_source, "the chat page with the passage open")
    # Escape closes it and gives the focus back to the citation
    panel.send_keys(Keys.ESCAPE)
    wait(browser).until(ec.invisibility_of_element(panel))
    assert browser.switch_to.active_element == citation

    # on a phone the passage covers the answers, and its Close button closes it
    viewport(browser, 420, 800)
    try:
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", citation)
        citation.click()
        wait(browser).until(ec.visibility_of(panel))
        wait(browser).until(
            ec.text_to_be_present_in_element((By.ID, "chunk-title"), "Zorbexine infusion")
        )
        assert panel.value_of_css_property("position") == "fixed"
        assert browser.find_element(By.ID, "passage-backdrop").is_displayed()
        assert in_view(browser, panel) == ""
        assert_accessible(browser, axe_source, "the passage over the chat page, 420 px")
        browser.find_element(By.ID, "passage-close").click()
        wait(browser).until(ec.invisibility_of_element(panel))
        assert browser.switch_to.active_element == citation
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})

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
    axe_source: str,
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
    assert_accessible(browser, axe_source, "the feedback queue")
    assert too_wide_for_a_phone(browser) == "", "the feedback queue"
    screenshot(browser, "feedback-queue")
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
    axe_source: str,
) -> None:
    sign_in(browser, live, "audit1", ldap_server.users["audit1"])
    browser.get(f"{live}/audit")
    table = browser.find_element(By.TAG_NAME, "table").text
    for action in ("document.create", "message.create", "auth.login"):
        assert action in table, action
    browser.find_element(By.CSS_SELECTOR, "form[action='/audit/verify'] button").click()
    wait(browser).until(ec.presence_of_element_located((By.CSS_SELECTOR, ".verdict")))
    assert "intact" in browser.find_element(By.CSS_SELECTOR, ".verdict").text.lower()
    assert_accessible(browser, axe_source, "the audit page")
    assert too_wide_for_a_phone(browser) == "", "the audit page"
    assert console_errors(browser) == []


def test_a_local_account_signs_in_with_its_authentication_code(
    browser: WebDriver, live: str, ui_settings: Settings, axe_source: str
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
    # the hospital's name and logo, before anyone has signed in
    assert browser.find_element(By.CSS_SELECTOR, ".brand .brand-hospital").text == BRAND
    logo = browser.find_element(By.CSS_SELECTOR, ".brand img.brand-logo")
    assert logo.size["width"] > 0 and logo.get_attribute("src").endswith("/static/brand-logo")
    assert browser.execute_async_script(
        "fetch('/static/brand-logo').then((r) => arguments[0](r.status + ' ' + "
        "r.headers.get('content-type')))"
    ) == "200 image/svg+xml"  # fmt: skip
    assert_accessible(browser, axe_source, "the sign-in page")
    submit = "form[action='/login'] button[type=submit]"
    # the password alone: the page asks for the code
    browser.find_element(By.ID, "username").send_keys(name)
    browser.find_element(By.ID, "password").send_keys(password)
    browser.find_element(By.CSS_SELECTOR, submit).click()
    wait(browser).until(ec.presence_of_element_located((By.CSS_SELECTOR, "p.error")))
    assert "second factor required" in browser.find_element(By.CSS_SELECTOR, "p.error").text
    assert_accessible(browser, axe_source, "the sign-in page asking a local account's code")
    # the refusal's own 401 is the only console entry (reading the log empties it)
    assert all("status of 401" in e for e in console_errors(browser))
    # the name is kept; the password and the code from the authenticator app
    browser.find_element(By.ID, "password").send_keys(password)
    browser.find_element(By.ID, "totp").send_keys(totp(secret, time.time()))
    browser.find_element(By.CSS_SELECTOR, submit).click()
    wait(browser).until(ec.presence_of_element_located((By.CSS_SELECTOR, "form.signout")))
    assert console_errors(browser) == []


def another_clinicians_conversation(settings: Settings, question: str) -> str:
    """A conversation of a clinician other than clin1 (a local account made here)."""
    import psycopg

    from app.db import conninfo

    name, user_id = f"clin-{uuid.uuid4().hex[:8]}", uuid.uuid4()
    with psycopg.connect(conninfo(settings)) as conn:
        conn.execute(
            "INSERT INTO users (id, username, display_name, source, roles, disabled)"
            " VALUES (%s, %s, %s, 'local', %s, false)",
            (user_id, name, name, ["clinician"]),
        )

    async def go() -> str:
        try:
            async with sessionmaker(settings)() as db:
                principal = Principal(user_id, name, name, frozenset({Role.clinician}), "", "")
                conversation = await service.create_conversation(db, settings, principal, None)
                return str(conversation.id)
        finally:
            await dispose_all()

    conversation = asyncio.run(go())
    store_exchange(settings, conversation, question, "Synthetic answer.")
    return conversation


def new_conversation_page(browser: WebDriver, live: str, settings: Settings, question: str) -> str:
    """A new conversation of the signed-in clinician holding ``question`` and an answer,
    named after the question as the first question names it; its id."""
    browser.get(f"{live}/")
    browser.find_element(By.CSS_SELECTOR, "form[action='/conversations/new'] button").click()
    wait(browser).until(ec.presence_of_element_located((By.ID, "question")))
    conversation = browser.current_url.rsplit("/", 1)[1]
    store_exchange(settings, conversation, question, "Synthetic answer with **markdown**.")

    async def rename() -> None:
        try:
            async with sessionmaker(settings)() as db:
                found = await db.get(Conversation, uuid.UUID(conversation))
                assert found is not None
                aad = CONVERSATION_TITLE.aad(found.id, found.user_id)
                found.title_enc = await service.encrypt(settings, service.new_title(question), aad)
                await db.commit()
        finally:
            await dispose_all()

    asyncio.run(rename())
    return conversation


def test_the_sidebar_finds_one_s_own_conversations(
    browser: WebDriver,
    live: str,
    ui_settings: Settings,
    ldap_server,  # noqa: ANN001
    axe_source: str,
) -> None:
    word = f"vantorel{uuid.uuid4().hex[:6]}"  # in no title: past the first 80 characters
    padding = "Before the ward round, a question for the synthetic record about the dose of"
    theirs = another_clinicians_conversation(ui_settings, f"{padding} {word} in renal failure?")
    sign_in(browser, live, "clin1", ldap_server.users["clin1"])
    mine = new_conversation_page(browser, live, ui_settings, f"{padding} {word} for children?")
    other = new_conversation_page(browser, live, ui_settings, "When is the pharmacy open?")
    browser.get(f"{live}/")
    wait(browser).until(ec.presence_of_element_located((By.CSS_SELECTOR, "table.conversations")))
    assert_accessible(browser, axe_source, "the home page (conversations)")
    browser.get(f"{live}/c/{other}")
    sidebar = wait(browser).until(ec.visibility_of_element_located((By.ID, "sidebar")))
    recent = [a.get_attribute("href").rsplit("/", 1)[1]
              for a in sidebar.find_elements(By.CSS_SELECTOR, "#conversation-list a")]  # fmt: skip
    assert recent[:2] == [other, mine], "newest first"
    current = sidebar.find_element(By.CSS_SELECTOR, "#conversation-list a[aria-current=page]")
    assert current.get_attribute("href").endswith(other)
    screenshot(browser, "chat-light")

    # Ctrl+K: the search box; a word of the question finds this clinician's conversation
    browser.find_element(By.ID, "question").send_keys(Keys.CONTROL, "k")
    box = browser.find_element(By.ID, "search-box")
    assert browser.switch_to.active_element == box
    box.send_keys(word.upper())
    results = (By.CSS_SELECTOR, "#search-results a")
    wait(browser).until(ec.visibility_of_element_located(results))
    found = [a.get_attribute("href").rsplit("/", 1)[1] for a in browser.find_elements(*results)]
    assert found == [mine], found
    assert theirs not in found
    assert word in browser.find_element(By.CSS_SELECTOR, "#search-results .snippet").text
    assert browser.find_element(By.ID, "search-status").text == "1 conversation found"
    assert not browser.find_element(By.ID, "conversation-list").is_displayed()
    screenshot(browser, "sidebar-search")
    assert_accessible(browser, axe_source, "the sidebar with search results")
    # the other clinician's own words find nothing here
    box.clear()
    box.send_keys(f"{word} renal")
    wait(browser).until(
        ec.text_to_be_present_in_element((By.ID, "search-status"), "0 conversations found")
    )
    # Escape empties the search: the recent list again
    box.send_keys(Keys.ESCAPE)
    wait(browser).until(ec.visibility_of_element_located((By.ID, "conversation-list")))

    # on a phone the sidebar is behind its button (Ctrl+K opened it: a fresh page)
    viewport(browser, 420, 800)
    try:
        browser.refresh()
        sidebar = wait(browser).until(ec.presence_of_element_located((By.ID, "sidebar")))
        toggle = browser.find_element(By.ID, "sidebar-toggle")
        assert not sidebar.is_displayed() and toggle.get_attribute("aria-expanded") == "false"
        toggle.click()
        wait(browser).until(ec.visibility_of(sidebar))
        assert toggle.get_attribute("aria-expanded") == "true"
        assert browser.execute_script(
            "return document.documentElement.scrollWidth <= innerWidth"
        ), "the page is wider than a narrow screen"
        assert_accessible(browser, axe_source, "the chat page, 420 px, sidebar open")
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})

    # Ctrl+Shift+O: a new conversation
    browser.find_element(By.ID, "question").send_keys(Keys.CONTROL, Keys.SHIFT, "o")
    wait(browser).until(lambda d: not d.current_url.endswith(other))
    assert browser.find_element(By.ID, "conversation-title").text == "New conversation"
    assert console_errors(browser) == []


def test_regenerate_asks_the_last_question_again(
    browser: WebDriver,
    live: str,
    ldap_server,  # noqa: ANN001
) -> None:
    sign_in(browser, live, "clin1", ldap_server.users["clin1"])
    browser.find_element(By.CSS_SELECTOR, "form[action='/conversations/new'] button").click()
    wait(browser).until(ec.presence_of_element_located((By.ID, "question")))
    first = ask_and_wait(browser, UNCOVERED)  # the fixed not-found answer: no model call
    # only the last answer has the button
    (button,) = browser.find_elements(By.CSS_SELECTOR, "button.regenerate")
    assert first.find_elements(By.CSS_SELECTOR, "button.regenerate") == [button]
    assert button.accessible_name == "Regenerate"
    done = ".message.assistant .disclaimer"
    button.click()
    wait(browser).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, done)) == 2)
    wait(browser).until(ec.element_to_be_clickable((By.ID, "ask-button")))
    questions = browser.find_elements(By.CSS_SELECTOR, ".message.user .message-content")
    assert [q.text for q in questions] == [UNCOVERED, UNCOVERED]
    answers = browser.find_elements(By.CSS_SELECTOR, ".message.assistant")
    assert len(answers) == 2  # the earlier answer stays
    (button,) = browser.find_elements(By.CSS_SELECTOR, "button.regenerate")
    assert answers[1].find_elements(By.CSS_SELECTOR, "button.regenerate") == [button]
    # stored: after a reload the same two exchanges, the button under the last answer
    browser.refresh()
    wait(browser).until(ec.presence_of_element_located((By.CSS_SELECTOR, "button.regenerate")))
    assert len(browser.find_elements(By.CSS_SELECTOR, ".message.user")) == 2
    last = browser.find_elements(By.CSS_SELECTOR, ".message.assistant")[-1]
    assert last.find_elements(By.CSS_SELECTOR, "button.regenerate")
    assert console_errors(browser) == []


def test_the_dark_theme_is_chosen_remembered_and_readable(
    browser: WebDriver,
    live: str,
    ldap_server,  # noqa: ANN001
    axe_source: str,
) -> None:
    sign_in(browser, live, "clin1", ldap_server.users["clin1"])
    browser.find_element(By.CSS_SELECTOR, "table.conversations a").click()
    wait(browser).until(ec.presence_of_element_located((By.ID, "question")))

    def background() -> str:
        return browser.find_element(By.TAG_NAME, "body").value_of_css_property("background-color")

    light = background()
    toggle = browser.find_element(By.ID, "theme-toggle")
    assert toggle.accessible_name == "Dark theme"
    assert toggle.get_attribute("aria-pressed") == "false"
    try:
        toggle.click()
        assert toggle.get_attribute("aria-pressed") == "true"
        dark = background()
        assert dark != light, dark
        # remembered: the next page is dark from the start
        browser.refresh()
        wait(browser).until(ec.presence_of_element_located((By.ID, "question")))
        assert background() == dark
        assert browser.find_element(By.ID, "theme-toggle").get_attribute("aria-pressed") == "true"
        screenshot(browser, "chat-dark")
        assert_accessible(browser, axe_source, "the chat page, dark theme")
        browser.find_element(By.ID, "theme-toggle").click()
        assert background() == light
    finally:
        browser.execute_script("localStorage.removeItem('clinchat-theme')")
    assert console_errors(browser) == []


def test_the_break_glass_page_is_accessible(
    browser: WebDriver,
    live: str,
    ldap_server,  # noqa: ANN001
    axe_source: str,
) -> None:
    sign_in(browser, live, "clin1", ldap_server.users["clin1"])
    browser.get(f"{live}/break-glass")
    wait(browser).until(ec.presence_of_element_located((By.ID, "reason")))
    assert_accessible(browser, axe_source, "the break-glass page")
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


ICU_GUIDELINE = """# Velmarine arterial line care

## Flushing
Flush every Velmarine arterial line with heparinised saline at 3 ml an hour, and
change the transducer set every 96 hours on the intensive care unit.
"""
ICU_QUESTION = "How often is a Velmarine arterial line flushed?"
ICU_TITLE = "Velmarine arterial line care"


def test_a_department_s_guideline_reaches_only_its_clinicians(
    browser: WebDriver,
    live: str,
    ldap_server,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    """The admin files a guideline under the ICU's collection; icu1 (ICU staff in the
    directory) gets it cited and opens the passage; clin1 gets no citation of it, and
    its passage's URL answers 404 in clin1's browser."""
    sign_in(browser, live, "admin1", ldap_server.users["admin1"])
    browser.get(f"{live}/documents")
    source = tmp_path / "velmarine.md"
    source.write_text(ICU_GUIDELINE)
    Select(browser.find_element(By.NAME, "collection")).select_by_visible_text("Intensive care")
    upload_on_page(browser, ICU_TITLE, source)
    row = "tr[data-document-id]:first-child"
    wait(browser).until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, row), ICU_TITLE))
    assert "Intensive care" in browser.find_element(By.CSS_SELECTOR, row).text
    wait(browser).until(
        ec.text_to_be_present_in_element((By.CSS_SELECTOR, f"{row} .doc-status"), "ready")
    )

    def ask_as(uid: str) -> list[WebElement]:
        sign_in(browser, live, uid, ldap_server.users[uid])
        browser.get(f"{live}/")
        browser.find_element(By.CSS_SELECTOR, "form[action='/conversations/new'] button").click()
        wait(browser).until(ec.presence_of_element_located((By.ID, "question")))
        answer = ask_and_wait(browser, ICU_QUESTION)
        return [c for c in answer.find_elements(By.CSS_SELECTOR, "a.cite") if ICU_TITLE in c.text]

    cited = ask_as("icu1")
    assert cited, "the ICU's clinician gets the ICU's guideline cited"
    chunk = cited[0].get_attribute("data-chunk")
    cited[0].click()
    wait(browser).until(ec.text_to_be_present_in_element((By.ID, "chunk-title"), ICU_TITLE))
    assert "velmarine" in browser.find_element(By.ID, "chunk-text").text.lower()
    assert console_errors(browser) == []

    assert ask_as("clin1") == [], "another clinician never sees it cited"
    status = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch('/api/v1/chunks/' + arguments[0]).then((r) => done(r.status));",
        chunk,
    )
    assert status == 404
