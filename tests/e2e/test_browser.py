"""The appliance as its people use it: headless Chromium (Debian's, driven by
Selenium) through nginx on the split lab, over TLS verified against the lab CA
(the browser trusts only that CA, through an NSS database of its own; no
certificate error is ignored). An admin uploads a policy, a clinician signs in
with the directory's password and reads a streamed answer citing it, an
auditor verifies the chain. Screenshots of the sign-in, the cited answer and
the audit page are kept in artifacts/e2e/ (CLINCHAT_ARTIFACTS_DIR).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from tests.e2e.conftest import REPO
from tests.e2e.lab_client import LAB_CA, POLICY_QUESTION, POLICY_TEXT, WEB, directory_password

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT_S = 120  # the lab's tiny model on a shared 2-core machine
ARTIFACTS = Path(os.environ.get("CLINCHAT_ARTIFACTS_DIR", REPO / "artifacts" / "e2e"))
TITLE = "Hand hygiene policy (browser)"


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory, converged: Path) -> Iterator[WebDriver]:
    for needed in (CHROMIUM, CHROMEDRIVER, "certutil"):
        if not shutil.which(needed):
            pytest.fail(f"{needed} is missing: run tests/setup-controller.sh")
    home = tmp_path_factory.mktemp("chromium-home")
    nssdb = home / ".pki" / "nssdb"
    nssdb.mkdir(parents=True)
    subprocess.run(["certutil", "-N", "-d", f"sql:{nssdb}", "--empty-password"], check=True)
    subprocess.run(
        ["certutil", "-A", "-d", f"sql:{nssdb}", "-t", "C,,", "-n", "clinchat-lab", "-i", LAB_CA],
        check=True,
    )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
        f"--user-data-dir={home / 'profile'}",
    ):
        options.add_argument(argument)  # fmt: skip
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: Selenium Manager (which would download one) never runs.
    service = Service(CHROMEDRIVER, env=os.environ | {"HOME": str(home)})
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(WAIT_S)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


def wait(driver: WebDriver) -> WebDriverWait:
    return WebDriverWait(driver, WAIT_S)


def screenshot(driver: WebDriver, name: str) -> None:
    path = ARTIFACTS / f"{name}.png"
    assert driver.save_screenshot(str(path)), path
    print(f"screenshot: {path}")


def console_errors(driver: WebDriver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def sign_in(driver: WebDriver, uid: str, shot: str | None = None) -> None:
    driver.delete_all_cookies()
    driver.get(f"{WEB}/login")
    assert driver.current_url.startswith("https://"), driver.current_url
    driver.find_element(By.ID, "username").send_keys(uid)
    driver.find_element(By.ID, "password").send_keys(directory_password(uid))
    if shot:
        screenshot(driver, shot)
    driver.find_element(By.CSS_SELECTOR, "form[action='/login'] button[type=submit]").click()
    wait(driver).until(ec.presence_of_element_located((By.CSS_SELECTOR, "form.signout")))


def test_admin_uploads_and_the_worker_makes_it_ready(browser: WebDriver, tmp_path: Path) -> None:
    sign_in(browser, "admin1")
    browser.get(f"{WEB}/documents")
    source = tmp_path / "hand-hygiene-browser.md"
    source.write_text(f"{POLICY_TEXT}\nReference {time.time_ns()} (browser).\n")
    browser.find_element(By.NAME, "title").send_keys(TITLE)
    browser.find_element(By.CSS_SELECTOR, "form[action='/documents/upload'] input[type=file]")\
        .send_keys(str(source))  # fmt: skip
    browser.find_element(By.CSS_SELECTOR, "form[action='/documents/upload'] button").click()
    row = f"//tr[@data-document-id][contains(., '{TITLE}')]"
    wait(browser).until(ec.presence_of_element_located((By.XPATH, row)))
    wait(browser).until(
        ec.text_to_be_present_in_element((By.XPATH, f"{row}//*[@class='doc-status']"), "ready")
    )
    assert console_errors(browser) == []


def test_clinician_reads_a_streamed_answer_citing_the_policy(browser: WebDriver) -> None:
    sign_in(browser, "clin1", shot="1-sign-in")
    browser.find_element(By.CSS_SELECTOR, "form[action='/conversations/new'] button").click()
    question = wait(browser).until(ec.presence_of_element_located((By.ID, "question")))
    question.send_keys(POLICY_QUESTION)
    browser.find_element(By.ID, "ask-button").click()
    answer = ".message.assistant"
    wait(browser).until(ec.presence_of_element_located((By.CSS_SELECTOR, f"{answer} .disclaimer")))
    citations = [c.text for c in browser.find_elements(By.CSS_SELECTOR, f"{answer} a.cite")]
    assert any("Hand hygiene policy" in text or "hand-hygiene" in text for text in citations), (
        citations
    )
    screenshot(browser, "2-cited-answer")
    assert console_errors(browser) == []


def test_auditor_verifies_the_chain(browser: WebDriver) -> None:
    sign_in(browser, "audit1")
    browser.get(f"{WEB}/audit")
    table = browser.find_element(By.TAG_NAME, "table").text
    for action in ("document.create", "message.create", "auth.login"):
        assert action in table, action
    browser.find_element(By.CSS_SELECTOR, "form[action='/audit/verify'] button").click()
    wait(browser).until(ec.presence_of_element_located((By.CSS_SELECTOR, ".verdict")))
    assert "intact" in browser.find_element(By.CSS_SELECTOR, ".verdict").text.lower()
    screenshot(browser, "3-audit")
    assert console_errors(browser) == []
