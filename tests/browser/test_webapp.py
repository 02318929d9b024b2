"""The web app in a real browser: headless Chromium (Debian's chromium + chromium-driver, through Selenium)
against the local stack as `make run` starts it, with the tiny models.

One person walks: sign up → compose a two-stage pipeline in the editor (the API's 422 shown at its field) →
run it (a variable filled in) → watch progress reach 100 → see the image → rate another user's pipeline →
run another with an uploaded image → delete the first execution → phone width. The walk
fails on any console error and on any request to an origin other than the stack's own two: the page's (the
app and the API) and the storage endpoint's (moto standing in for S3: presigned result URLs). Each step's
screenshot goes to $STAGEHUB_SCREENSHOTS_DIR (default .cache/screenshots/).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image

from local.stack import LocalStack

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "browser password 123"
RUN_TIMEOUT_S = 240.0
STEP_TIMEOUT_S = 20.0
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    models_dir = Path(os.environ.get("STAGEHUB_MODELS_DIR", ROOT / ".cache" / "models"))
    with LocalStack(models_dir, port=0) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        if os.environ.get("STAGEHUB_REQUIRE_BROWSER"):
            pytest.fail("chromium and chromedriver are required (make test installs them)")
        pytest.skip("chromium/chromedriver not installed (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


class Walk:
    """The browser plus what every step needs: waiting, screenshots, and the checks on logs and requests."""

    def __init__(self, driver: Any, stack: LocalStack, shots: Path) -> None:
        self.driver = driver
        self.base = stack.url
        self.shots = shots
        self.allowed_origins = {_origin(stack.url), _origin(stack.environment["AWS_ENDPOINT_URL"])}
        self.count = 0
        self.requests: list[str] = []
        self.console: list[dict[str, Any]] = []

    def until(self, condition: Any, timeout: float = STEP_TIMEOUT_S, message: str = "") -> Any:
        # The page re-renders while it is waited on: an element found a moment ago may be gone (stale).
        ignored = (NoSuchElementException, StaleElementReferenceException)
        return WebDriverWait(self.driver, timeout, poll_frequency=0.2, ignored_exceptions=ignored).until(
            condition, message
        )

    def find(self, css: str) -> Any:
        return self.until(lambda d: d.find_element(By.CSS_SELECTOR, css), message=f"no {css}")

    def heading(self, text: str) -> None:
        self.until(lambda d: text in d.find_element(By.TAG_NAME, "h1").text, message=f"no heading {text!r}")

    def type(self, css: str, text: str) -> None:
        element = self.find(css)
        element.clear()
        element.send_keys(text)

    def shot(self, name: str) -> None:
        self.count += 1
        self.driver.save_screenshot(str(self.shots / f"{self.count:02d}-{name}.png"))
        self.collect()

    def collect(self) -> None:
        self.console += [entry for entry in self.driver.get_log("browser") if entry["level"] in {"SEVERE", "ERROR"}]
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message["method"] == "Network.requestWillBeSent":
                self.requests.append(message["params"]["request"]["url"])

    def expect_failed_request(self, path: str, status: int) -> None:
        """A deliberate 4xx (to a URL starting with `path`): Chromium logs it as a console error of source
        "network"; that one entry is allowed."""
        self.collect()
        failed = f"Failed to load resource: the server responded with a status of {status} "
        found = [
            e
            for e in self.console
            if e["source"] == "network" and e["message"].startswith(f"{self.base}{path}") and failed in e["message"]
        ]
        assert len(found) == 1, f"expected one {status} for {path}, got {self.console}"
        self.console.remove(found[0])

    def check_clean(self) -> None:
        self.collect()
        assert self.console == [], f"console errors: {self.console}"
        foreign = [
            url
            for url in self.requests
            if not url.startswith(("data:", "blob:")) and _origin(url) not in self.allowed_origins
        ]
        assert foreign == [], f"requests to other origins: {foreign}"


def _other_users_pipelines(stack: LocalStack) -> tuple[dict[str, Any], dict[str, Any]]:
    """Another person's pipelines, made through the API: one to rate, one that takes an uploaded image."""
    email = f"bob-{uuid.uuid4().hex[:8]}@example.com"
    with httpx.Client(base_url=stack.url, timeout=30) as api:
        api.post("/auth/register", json={"email": email, "password": PASSWORD, "displayName": "Bob"}).raise_for_status()
        tokens = api.post("/auth/login", json={"email": email, "password": PASSWORD}).json()
        headers = {"Authorization": f"Bearer {tokens['accessToken']}"}
        body = {
            "name": "Bob's foxes",
            "description": "a fox, in four steps",
            "stages": [
                {
                    "type": "txt2img",
                    "inline": True,
                    "body": "a fox",
                    "parameters": {"steps": 2, "width": 64, "height": 64},
                },
            ],
        }
        created = api.post("/pipelines", json=body, headers=headers)
        created.raise_for_status()
        img2img = {
            "name": "Bob's ink",
            "description": "your picture, in ink",
            "stages": [{"type": "img2img", "inline": True, "body": "ink", "parameters": {"steps": 2, "strength": 0.5}}],
        }
        ink = api.post("/pipelines", json=img2img, headers=headers)
        ink.raise_for_status()
        return created.json(), ink.json()


def test_a_person_composes_runs_watches_rates_and_deletes(stack: LocalStack, browser: Any, tmp_path: Path) -> None:
    shots = Path(os.environ.get("STAGEHUB_SCREENSHOTS_DIR", ROOT / ".cache" / "screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    walk = Walk(browser, stack, shots)
    bobs, ink = _other_users_pipelines(stack)

    # Sign up (the app signs in right after and lands on the pipelines).
    browser.get(f"{stack.url}/")
    walk.heading("Sign in")
    walk.shot("sign-in")
    walk.find("a[href='#/register']").click()
    walk.heading("Create an account")
    walk.type("input[name=email]", f"ada-{uuid.uuid4().hex[:8]}@example.com")
    walk.type("input[name=displayName]", "Ada")
    walk.type("input[name=password]", PASSWORD)
    walk.shot("sign-up")
    walk.find("form button[type=submit]").click()
    walk.heading("All pipelines")
    walk.until(lambda d: "Bob's foxes" in d.find_element(By.TAG_NAME, "main").text)
    assert browser.switch_to.active_element.tag_name == "h1"  # each page moves the focus to its heading
    walk.shot("pipelines")

    # An error never blanks the page: an unknown pipeline says so, under the navigation.
    browser.get(f"{stack.url}/#/pipelines/{uuid.uuid4()}")
    walk.heading("Something went wrong")
    assert browser.find_elements(By.CSS_SELECTOR, "nav a[href='#/new']")
    walk.expect_failed_request("/pipelines/", 404)

    # The editor: two stages, text then image, the second fed by {{previous}}.
    walk.find("nav a[href='#/new']").click()
    walk.heading("New pipeline")
    walk.type("#pipeline-name", "Fox haiku to picture")
    walk.type("#pipeline-description", "a line of text about a subject, then a picture of it")
    first = walk.find(".stage")
    Select(first.find_element(By.CSS_SELECTOR, "select[name=type]")).select_by_value("txt2txt")
    walk.until(lambda d: first.find_elements(By.CSS_SELECTOR, "input[name=maxNewTokens]"))
    first.find_element(By.CSS_SELECTOR, "textarea[name=prompt]").send_keys("One line about {{subject}}:")
    first.find_element(By.CSS_SELECTOR, "input[name=maxNewTokens]").send_keys("8")
    walk.find("form button.secondary:not(.small)").click()  # "Add stage"
    walk.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".stage")) == 2)
    second = browser.find_elements(By.CSS_SELECTOR, ".stage")[1]
    Select(second.find_element(By.CSS_SELECTOR, "select[name=type]")).select_by_value("txt2img")
    walk.until(lambda d: second.find_elements(By.CSS_SELECTOR, "input[name=width]"))
    second.find_element(By.CSS_SELECTOR, "textarea[name=prompt]").send_keys("a painting of ")
    second.find_element(By.XPATH, ".//button[contains(., 'Insert {{previous}}')]").click()
    for name, value in (("steps", "2"), ("width", "64"), ("height", "100")):
        second.find_element(By.CSS_SELECTOR, f"input[name={name}]").send_keys(value)
    assert "subject" in browser.find_element(By.CSS_SELECTOR, "form .hint[aria-live]").text
    # The API's 422 (a height that is no multiple of 8) lands at that field, which takes the focus.
    walk.find("form .actions button[type=submit]").click()
    height = second.find_element(By.CSS_SELECTOR, "input[name=height]")
    walk.until(lambda d: height.get_attribute("aria-invalid") == "true", message="no error at the height field")
    error = browser.find_element(By.ID, f"{height.get_attribute('id')}-error")
    assert "multiple of 8" in error.text
    assert browser.switch_to.active_element == height
    walk.expect_failed_request("/pipelines", 422)
    walk.shot("editor-error")
    unlabelled = browser.execute_script(
        "return [...document.querySelectorAll('input, select, textarea')]"
        ".filter((e) => !e.hidden && !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))"
        ".map((e) => e.outerHTML)"
    )
    assert unlabelled == [], "every control of the editor has a label"
    height.clear()
    height.send_keys("64")
    walk.shot("editor")
    walk.find("form .actions button[type=submit]").click()
    walk.heading("Fox haiku to picture")
    assert len(browser.find_elements(By.CSS_SELECTOR, ".stages .stage")) == 2
    walk.shot("pipeline")

    # Run it with its variable, and watch.
    walk.find("a.button[href$='/run']").click()
    walk.heading("Run Fox haiku to picture")
    walk.type("#var-subject", "a red fox")
    walk.shot("run")
    walk.find("form .actions button[type=submit]").click()
    walk.heading("Execution")
    walk.until(
        lambda d: d.find_element(By.ID, "execution-progress").get_attribute("value") == "100",
        timeout=RUN_TIMEOUT_S,
        message="progress did not reach 100",
    )
    loaded = "return arguments[0].complete && arguments[0].naturalWidth > 0"  # the image, once it has loaded
    image = walk.until(
        lambda d: next((i for i in d.find_elements(By.CSS_SELECTOR, ".results img") if d.execute_script(loaded, i)), 0),
        timeout=STEP_TIMEOUT_S,
        message="the image was not shown",
    )
    assert browser.execute_script("return arguments[0].naturalWidth", image) == 64
    assert "SUCCEEDED" in browser.find_element(By.CSS_SELECTOR, ".execution-status").text
    assert browser.find_elements(By.CSS_SELECTOR, ".results pre.text-output")
    execution_url = browser.current_url
    walk.shot("results")

    # Rate the other person's pipeline.
    browser.get(f"{stack.url}/#/pipelines/{bobs['pipelineId']}")
    walk.heading("Bob's foxes")
    walk.find("label[for=score-4]").click()
    walk.until(lambda d: "yours: 4 of 5" in d.find_element(By.CSS_SELECTOR, "p.rating").text)
    walk.shot("rated")

    # Run the other one with an uploaded image (POST /uploads, then the presigned PUT from the page).
    picture = tmp_path / "input.png"
    Image.new("RGB", (64, 64), (200, 80, 40)).save(picture)
    browser.get(f"{stack.url}/#/pipelines/{ink['pipelineId']}/run")
    walk.heading("Run Bob's ink")
    walk.find("#var-image").send_keys(str(picture))
    walk.find("form .actions button[type=submit]").click()
    walk.heading("Execution")
    walk.until(
        lambda d: "SUCCEEDED" in d.find_element(By.CSS_SELECTOR, ".execution-status").text,
        timeout=RUN_TIMEOUT_S,
        message="the img2img execution did not succeed",
    )
    walk.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".results img"), message="no img2img output")

    # Delete the execution: it leaves the list.
    browser.get(execution_url)
    walk.heading("Execution")
    walk.find("button.danger").click()
    walk.until(lambda d: d.switch_to.alert).accept()
    walk.heading("My executions")
    short_id = execution_url.rsplit("/", 1)[1][:8]  # the list names executions by their id's first 8 characters
    walk.until(lambda d: short_id not in d.find_element(By.TAG_NAME, "main").text)
    walk.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "main .items li")) == 1)  # the img2img run is left
    walk.shot("deleted")

    # At phone width nothing needs horizontal scrolling.
    browser.set_window_size(390, 844)
    browser.get(f"{stack.url}/#/pipelines")
    walk.heading("All pipelines")
    assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth + 1")
    walk.shot("phone")

    # Sign out: the session is gone from the tab, and a reload stays signed out.
    walk.find("nav button.link").click()
    walk.heading("Sign in")
    assert browser.execute_script("return sessionStorage.length") == 0
    assert not browser.find_element(By.ID, "banner").is_displayed()  # no "session ended": they chose to leave
    browser.refresh()
    walk.heading("Sign in")
    walk.check_clean()


def test_a_returning_person_signs_in_imports_copies_cancels_filters_and_deletes(
    stack: LocalStack, browser: Any, tmp_path: Path
) -> None:
    """The rest of what a person can do: sign in, import a pipeline JSON into the editor, copy a pipeline into
    the editor, cancel an execution, filter executions by status, one author's list, delete a pipeline."""
    shots = Path(os.environ.get("STAGEHUB_SCREENSHOTS_DIR", ROOT / ".cache" / "screenshots"))
    walk = Walk(browser, stack, shots)
    walk.count = 100
    email = f"cy-{uuid.uuid4().hex[:8]}@example.com"
    with httpx.Client(base_url=stack.url, timeout=30) as api:
        api.post("/auth/register", json={"email": email, "password": PASSWORD, "displayName": "Cy"}).raise_for_status()

    # A page asked for while signed out comes back after signing in.
    browser.get(f"{stack.url}/#/executions")
    walk.heading("Sign in")
    walk.type("input[name=email]", email)
    walk.type("input[name=password]", PASSWORD)
    walk.find("form button[type=submit]").click()
    walk.heading("My executions")

    # Import a pipeline file into the editor and create it.
    document = {
        "name": "Imported slow fox",
        "description": "from a file",
        "stages": [{"type": "txt2img", "inline": True, "body": "a fox", "parameters": {"steps": 150, "width": 64}}],
    }
    imported = tmp_path / "pipeline.json"
    imported.write_text(json.dumps(document))
    browser.get(f"{stack.url}/#/new")
    walk.heading("New pipeline")
    walk.find("#import-file").send_keys(str(imported))
    walk.until(lambda d: d.find_element(By.ID, "pipeline-name").get_attribute("value") == "Imported slow fox")
    assert browser.find_element(By.CSS_SELECTOR, ".stage input[name=steps]").get_attribute("value") == "150"
    walk.find("form .actions button[type=submit]").click()
    walk.heading("Imported slow fox")
    pipeline_url = browser.current_url

    # Copy it into the editor: the copy keeps its stages.
    walk.until(lambda d: d.find_element(By.XPATH, "//button[.='Copy into the editor']")).click()
    walk.heading("New pipeline")
    assert browser.find_element(By.ID, "pipeline-name").get_attribute("value") == "Imported slow fox (copy)"
    assert browser.find_element(By.CSS_SELECTOR, ".stage textarea[name=prompt]").get_attribute("value") == "a fox"

    # Run it and cancel: 150 steps take long enough on the tiny model.
    browser.get(f"{pipeline_url}/run")
    walk.heading("Run Imported slow fox")
    walk.find("form .actions button[type=submit]").click()
    walk.heading("Execution")
    walk.find(".actions button.secondary").click()  # Cancel
    walk.until(
        lambda d: "CANCELLED" in d.find_element(By.CSS_SELECTOR, ".execution-status").text,
        timeout=RUN_TIMEOUT_S,
        message="the execution was not cancelled",
    )
    walk.shot("cancelled")

    # My executions, filtered by status.
    walk.find("nav a[href='#/executions']").click()
    walk.heading("My executions")
    Select(walk.find("#status-filter")).select_by_value("SUCCEEDED")
    walk.until(lambda d: "No SUCCEEDED executions." in d.find_element(By.TAG_NAME, "main").text)
    Select(walk.find("#status-filter")).select_by_value("CANCELLED")
    walk.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "main .items li")) == 1)
    walk.shot("filtered")

    # The author's own list, then delete the pipeline from its page.
    browser.get(pipeline_url)
    walk.heading("Imported slow fox")
    walk.find("p.meta a[href^='#/users/']").click()
    walk.heading("Pipelines by Cy")
    browser.get(pipeline_url)
    walk.heading("Imported slow fox")
    walk.find("button.danger").click()
    walk.until(lambda d: d.switch_to.alert).accept()
    walk.heading("My pipelines")
    walk.until(lambda d: "You have no pipelines yet." in d.find_element(By.TAG_NAME, "main").text)
    walk.check_clean()
