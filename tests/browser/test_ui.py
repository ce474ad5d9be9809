"""The Model health page on a real api-server with the plugin loaded, in a real headless browser.

One short simulated sequence (a bootstrap, eight nights with a drift and a promotion) runs
in-process; then one api-server serves every test here. The browser test logs in through the
form, opens Model health from Airflow's navigation, and checks what the page shows against
the lake. Needs Chromium and chromedriver from the distribution (`make test` installs them
where apt is available); without them the browser test skips and says so.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from nightshift.dates import add_days

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO / "plugins"))

import airflow_stack as stack  # noqa: E402 - found through the sys.path lines above

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]

START, HISTORY, NIGHTS, ROWS = "2026-03-01", 12, 8, 1500
CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if os.path.exists(p)), None)
CHROMEDRIVER = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if os.path.exists("/usr/bin/chromedriver") else None)
SCREENSHOTS = REPO / ".nightshift" / "screenshots"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A simulated sequence in a fresh home, then an api-server (only) on it with the plugin loaded."""
    from batch_scoring.nightly import run_nights
    from nightshift.lake import Lake
    from nightshift.settings import load_settings
    from simulator.land import simulate
    from training.retrain import retrain

    home = tmp_path_factory.mktemp("ui")
    saved = {k: os.environ.get(k) for k in ("NIGHTSHIFT_HOME", "NIGHTSHIFT_CONFIG", "MLFLOW_TRACKING_URI")}
    os.environ.update({"NIGHTSHIFT_HOME": str(home), "NIGHTSHIFT_CONFIG": str(REPO / "nightshift.toml")})
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        s = load_settings().with_overrides({"training.epochs": 4, "gate.n_boot": 300, "policy.onset_min_labels": 1000})
        lake = Lake(s.lake_uri)
        simulate(lake, s.dataset, start=START, days=HISTORY + NIGHTS, rows_per_day=ROWS, scenario="sudden-covariate",
                 onset=HISTORY + 2, seed=3, progress=False)
        retrain(s, add_days(START, HISTORY - 1), trigger="bootstrap")
        run_nights(s, add_days(START, HISTORY), add_days(START, HISTORY + NIGHTS - 1), progress=False)
        port = stack.start(home, components=("api-server",))
        stack.run_cli(home, "dags", "reserialize")  # the DAGs' forms, without a dag-processor
        try:
            yield {"home": home, "lake": lake, "settings": s, "base": f"http://127.0.0.1:{port}",
                   "password": stack.admin_password(home)}
        finally:
            stack.stop(home)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _get(url: str, token: str | None = None, cookie: str | None = None) -> tuple[int, str, str]:
    """(status, Location header, body) without following redirects."""
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if cookie:
        req.add_header("Cookie", cookie)
    try:
        with urllib.request.build_opener(NoRedirect).open(req, timeout=30) as r:
            return r.status, r.headers.get("Location", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Location", ""), e.read().decode()


def _token(server) -> str:
    req = urllib.request.Request(f"{server['base']}/auth/token", method="POST",
                                 data=json.dumps({"username": "admin", "password": server["password"]}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)["access_token"]


def test_every_route_refuses_an_unauthenticated_request(server):
    from model_health import PREFIX, ROUTES

    for route in ROUTES:
        status, location, _ = _get(server["base"] + PREFIX + route)
        assert status in (401, 403) or (status in (302, 303, 307) and "/auth/login" in location), (route, status, location)
        status, _, _ = _get(server["base"] + PREFIX + route, cookie="_token=not-a-jwt")
        assert status in (401, 403), (route, status)
    # the page sends a browser to the login, and back afterwards
    status, location, _ = _get(server["base"] + PREFIX + "/health")
    assert status == 307 and "/auth/login" in location and "next=" in location


def test_data_endpoints_answer_what_the_lake_holds(server):
    from nightshift.registry import CHAMPION, Registry

    token = _token(server)
    status, _, body = _get(server["base"] + "/nightshift/api/page", token=token)
    assert status == 200, body
    page = json.loads(body)
    champion = Registry(server["settings"], server["lake"]).current(CHAMPION).version
    assert page["champion"]["version"] == champion
    assert [n["ds"] for n in page["nights"]] == [add_days(START, HISTORY + i) for i in range(NIGHTS)]
    assert all(n["rows"] == ROWS for n in page["nights"])
    assert any(page["drift"]["alarm"]), "the simulated drift shows as an alarm"
    status, _, body = _get(server["base"] + "/nightshift/api/drift?nights=0", token=token)
    assert status == 422 and "nights=0" in body


@pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                    reason="needs Chromium and chromedriver from the distribution (apt-get install chromium "
                           "chromium-driver; `make test` does this where apt is available)")
def test_browser_logs_in_and_sees_model_health(server):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    from nightshift.registry import CHAMPION, Registry

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1600"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    wait = WebDriverWait(driver, 60)
    try:
        driver.get(server["base"] + "/")
        # the login form; "/" redirects to it, and a look during that navigation is aborted (chromedriver), so retry it
        from selenium.common.exceptions import WebDriverException

        WebDriverWait(driver, 60, ignored_exceptions=(WebDriverException,)).until(
            EC.presence_of_element_located((By.CSS_SELECTOR, "input[type=password]")))
        driver.find_element(By.CSS_SELECTOR, "input[name=username]").send_keys("admin")
        driver.find_element(By.CSS_SELECTOR, "input[type=password]").send_keys(server["password"])
        driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        # Airflow's own navigation: Browse -> Model health
        wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, "button[aria-label=Browse]"))).click()
        wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, "a[role=menuitem][data-value='Model health']"))).click()
        wait.until(EC.url_contains("/plugin/model-health"))
        wait.until(EC.frame_to_be_available_and_switch_to_it((By.TAG_NAME, "iframe")))
        version = wait.until(EC.presence_of_element_located((By.ID, "champion-version"))).text
        champion = Registry(server["settings"], server["lake"]).current(CHAMPION).version
        assert version == f"v{champion}"
        drifted = driver.find_elements(By.CSS_SELECTOR, "#drift-heatmap rect.cell.drifted")
        assert drifted, "no drifted cell in the heatmap"
        assert driver.find_elements(By.CSS_SELECTOR, "#perf-chart polyline.real")
        assert len(driver.find_elements(By.CSS_SELECTOR, "#perf-chart circle")) >= NIGHTS - 2
        assert driver.find_element(By.ID, "perf-chart").size["width"] > 300  # rendered, not just present
        driver.switch_to.default_content()
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(SCREENSHOTS / "model_health.png"))

        # the retrain form refuses to start a run without `ds`, and says why
        driver.get(server["base"] + "/dags/retrain")
        wait.until(EC.element_to_be_clickable((By.XPATH, "//button[normalize-space()='Trigger']"))).click()
        dialog = wait.until(lambda d: next((e for e in d.find_elements(By.CSS_SELECTOR, "[role=dialog]")
                                            if "Trigger Dag - retrain" in e.text), None))
        wait.until(lambda d: "This field is required" in dialog.text)
        assert "a retrain has no 'today' of its own" in dialog.text
        submit = dialog.find_element(By.XPATH, ".//button[normalize-space()='Trigger']")
        assert not submit.is_enabled(), "Trigger is enabled with an empty ds"
        driver.save_screenshot(str(SCREENSHOTS / "retrain_form.png"))
        dialog.find_element(By.ID, "element_ds").send_keys("03122026")  # mm/dd/yyyy in this locale
        wait.until(lambda d: submit.is_enabled())
    finally:
        driver.quit()


def test_model_versions_carry_their_schema_and_gate_evidence(server, tmp_path):
    """The registry side of the page: each version's description is its gate evidence in words,
    and its MLmodel holds the input and output schema."""
    from mlflow.models import Model

    from nightshift.registry import Registry

    registry = Registry(server["settings"], server["lake"])
    spec = server["settings"].dataset
    for version in registry.versions():
        mv = registry.client.get_model_version(registry.name, version)
        assert mv.description.startswith("**PROMOTE**") and "Evidence:" in mv.description, mv.description
        path = registry.client.download_artifacts(mv.run_id, "model/MLmodel", str(tmp_path / version))
        signature = Model.load(path).signature
        assert signature.inputs.input_names() == [*spec.numeric, *spec.categorical]
        assert signature.outputs.input_names() == ["score", "decision"]
