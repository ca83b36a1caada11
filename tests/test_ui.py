"""The Prefect UI as the place to operate, driven in headless Chromium (Debian's chromium and
chromium-driver, installed by `deliver sandbox packages`): start CI from the `ci` deployment's
Run form, then approve a waiting production release by filling its Resume form."""

from __future__ import annotations

import asyncio
import datetime
import re
import shutil
import time
from collections.abc import Iterator
from typing import Any, cast
from uuid import UUID

import httpx
import pytest
from prefect import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
    DeploymentFilter,
    DeploymentFilterId,
)
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.select import Select

from deliver.demo import deploy_release, start_release
from deliver.prefect_api import wait_for_flow_run as wait_for
from deliver.sandbox.manager import BROWSER_TOOLS
from deployments import deploy_all
from tests.policies import code_of
from tests.test_ci_pipeline import SAMPLE, git
from tests.test_release import host_state, run_release

UI = "http://127.0.0.1:4200"


@pytest.fixture(scope="module")
def browser(prefect_api, sandbox_config) -> Iterator[WebDriver]:
    """Chromium, logged in to the sandbox's UI with its auth string."""
    chromium, driver = (tool.path() for tool in BROWSER_TOOLS)
    if chromium is None or driver is None:
        pytest.fail("chromium is not installed: run `.venv/bin/deliver sandbox packages` as root")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    # No name is resolved but loopback's: the UI's analytics never leave the machine.
    flags = [
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--window-size=1400,1000",
    ]
    for flag in flags:
        options.add_argument(flag)
    chrome = webdriver.Chrome(service=Service(driver), options=options)
    chrome.implicitly_wait(15)
    try:
        chrome.get(f"{UI}/")
        auth = sandbox_config.prefect_auth_file.read_text().strip()
        chrome.find_element(By.CSS_SELECTOR, "input").send_keys(auth)
        chrome.find_element(By.XPATH, "//button[normalize-space()='Login']").click()
        chrome.find_element(By.XPATH, "//a[normalize-space()='Deployments']")
        yield chrome
    finally:
        chrome.quit()


def field(browser: WebDriver, label: str) -> Any:
    """The text box of the form field labelled `label`."""
    return browser.find_element(
        By.XPATH, f"//*[normalize-space()='{label}']/following::textarea[1]"
    )


def failed_requests(browser: WebDriver) -> list[str]:
    """API calls the page made that were answered 4xx or 5xx."""
    import json

    failed = []
    for entry in cast(Any, browser).get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.responseReceived":
            response = message["params"]["response"]
            if response["status"] >= 400 and "/api/" in response["url"]:
                failed.append(f"{response['status']} {response['url']}")
    return failed


def open_resume_form(browser: WebDriver, run_id: UUID, evidence: str) -> None:
    """Open the run's Resume dialog once the page knows the run's input form (a page loaded
    just as the run suspended offers a plain yes/no resume instead)."""
    deadline = time.monotonic() + 60
    while True:
        browser.get(f"{UI}/runs/flow-run/{run_id}")
        browser.find_element(By.XPATH, "//button[normalize-space()='Resume']").click()
        time.sleep(1)
        if evidence in browser.find_element(By.TAG_NAME, "body").text:
            return
        assert time.monotonic() < deadline, "the Resume dialog never showed the approval form"
        time.sleep(2)


def choose(browser: WebDriver, label: str, option: str) -> None:
    """Pick `option` in the select field labelled `label` (a required field: no "(Optional)")."""
    select = browser.find_element(
        By.XPATH, f"(//*[normalize-space()='{label}']/following::select)[1]"
    )
    Select(select).select_by_value(option)


def replace_text(element: Any, text: str) -> None:
    element.send_keys(Keys.CONTROL, "a")
    element.send_keys(Keys.DELETE)
    element.send_keys(text)


def runs_of(deployment_id: str, since: datetime.datetime) -> list[Any]:
    async def read() -> list[Any]:
        async with get_client() as client:
            runs = await client.read_flow_runs(
                deployment_filter=DeploymentFilter(
                    id=DeploymentFilterId(any_=[UUID(deployment_id)])
                )
            )
            return [r for r in runs if r.created and r.created >= since]

    return asyncio.run(read())


def ci_image(run_id: UUID) -> str:
    async def read() -> list[Any]:
        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    key=ArtifactFilterKey(any_=["ci-stock-api"]),
                    flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]),
                )
            )

    (report,) = asyncio.run(read())
    found = re.search(r"- image: `([^`]+)`", str(report.data))
    assert found, report.data
    return found[1]


def test_ci_from_the_run_form_then_approval_from_the_resume_form(browser, sandbox_config, tmp_path):
    # An unmodified copy of the sample: its Dockerfile builds FROM python:3.12-slim as written,
    # and the form needs only what a person would fill in.
    repo = tmp_path / "ui-app"
    shutil.copytree(SAMPLE, repo, ignore=shutil.ignore_patterns(".venv", "__pycache__", ".*_cache"))
    (repo / "ui.txt").write_text(f"{time.time()}\n")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "from the UI")
    (ci,) = deploy_all(only=["ci"])
    started = datetime.datetime.now(datetime.UTC)

    browser.get(f"{UI}/deployments")
    browser.find_element(By.XPATH, "//a[normalize-space()='ci']").click()
    browser.find_element(By.XPATH, "//button[normalize-space()='Run']").click()
    browser.find_element(By.XPATH, "//*[normalize-space()='Custom run']").click()
    replace_text(field(browser, "Repo"), str(repo))
    replace_text(field(browser, "Ref (Optional)"), "main")
    replace_text(field(browser, "Spec Path (Optional)"), "deliver.yaml")
    browser.find_element(By.XPATH, "//button[normalize-space()='Submit']").click()

    deadline = time.monotonic() + 60
    while not (created := runs_of(ci.deployment_id, started)):
        if time.monotonic() > deadline:
            browser.save_screenshot(str(tmp_path / "run-form.png"))
            page = browser.find_element(By.TAG_NAME, "body").text
            raise AssertionError(
                f"the Run form created no run: {failed_requests(browser)}; "
                f"the page shows:\n{page[-600:]}"
            )
        time.sleep(1)
    (run,) = created
    assert run.parameters["parameters"]["repo"] == str(repo)
    run = wait_for(run.id, until={"COMPLETED"}, timeout_s=400)
    assert run.state.is_completed(), run.state
    image = ci_image(run.id)
    version = git(repo, "rev-parse", "--short=7", "HEAD")

    state, result = run_release(image, "staging", version)
    assert state.is_completed(), result
    release = {
        "image": image,
        "environment": "production",
        "version": version,
        "git_sha": git(repo, "rev-parse", "HEAD"),
        "requested_by": "ui-test",
    }
    run_id = start_release(deploy_release(sandbox_config.work_pool), release)
    waiting = wait_for(run_id, until={"PAUSED"}, timeout_s=180)
    assert waiting.state.name == "Suspended", waiting.state

    open_resume_form(browser, run_id, f"Release {version} to production")
    choose(browser, "Decision", "approve")  # required: the form presets none
    replace_text(field(browser, "Approver"), "demo-approver")
    replace_text(field(browser, "Code (Optional)"), code_of("demo-approver"))
    replace_text(field(browser, "Reason (Optional)"), "approved in the UI")
    browser.find_element(By.XPATH, "//button[normalize-space()='Submit']").click()

    finished = wait_for(run_id, until={"COMPLETED"}, timeout_s=180)
    assert finished.state.is_completed(), finished.state
    live = host_state(sandbox_config, "production")["live"]
    assert (live["version"], live["image"]) == (version, image)
    assert httpx.get(f"{sandbox_config.production_front_url}/health", timeout=5).is_success
    approval = host_state(sandbox_config, "production")["history"][-1]["approval"]
    assert (approval["approver"], approval["reason"]) == ("demo-approver", "approved in the UI")
