"""The operator view on a running application, driven in a real headless chromium (Debian's, via selenium).

It logs in, watches the live wall receive frames streamed through Kafka and the model, opens a frame page and
checks the overlay image the browser loaded, and is refused without a token and for an operator action with a
viewer token. Screenshots go to the test's tmp dir.
"""

from __future__ import annotations

import http.client as http_client
import json
import shutil
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from ray import serve
from stream_helpers import FRAME_SIDE, camera_of, delete_app, deploy_app, produce_frames, stream_config, wait_until

from services.config import ViewConfig, ZsadConfig
from services.local_stack.service_processes import NoidaBroker, RedisServer
from services.stores.artifact_registry import ArtifactRegistry

pytestmark = [
    pytest.mark.integration,
    pytest.mark.queue_early(reason="a deployment with the view, and a browser: about 40 s"),
]

VIEWER = "viewer-" + "v" * 20
OPERATOR = "operator-" + "o" * 20
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip


def http(url: str, token: str | None = None, data: bytes | None = None) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


# One application serves the module's tests (a deployment takes 10-20 s on two cores); each test has a camera of its
# own, and sends frames to it alone.
ROLES = ("pause", "quiet", "wall")


@pytest.fixture(scope="module")
def view_app(ray_serve: None, noida_broker: NoidaBroker, redis_server: RedisServer) -> Iterator[tuple[str, ZsadConfig]]:
    """The whole application with view tokens and a camera per role; yields the view's base URL and the config."""
    unique = uuid.uuid4().hex[:8]
    cameras = {f"{role}-{unique}": {"method": "clip-ad"} for role in ROLES}
    config = stream_config(noida_broker, redis_server, unique, cameras, partitions=2, num_actors=1,
                           registry={"root": "redis://", "namespace": f"test:{unique}:registry"})  # fmt: skip
    config = config.model_copy(update={"view": ViewConfig(viewer_token=VIEWER, operator_token=OPERATOR)})
    name = f"view-{unique}"
    deploy_app(config, name, view=True)
    try:
        port = serve.context._get_global_client().http_config.port
        base = f"http://127.0.0.1:{port}/{name}"
        wait_until(lambda: http(base + "/api/ingest", VIEWER)[0] == 200, 180, "the application to come up")
        yield base, config
    finally:
        delete_app(name)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    webdriver = pytest.importorskip("selenium.webdriver")
    driver_path = shutil.which("chromedriver")
    if driver_path is None or shutil.which("chromium") is None:
        pytest.skip("Debian's chromium and chromium-driver are not installed (scripts/bootstrap.sh installs them)")
    options = webdriver.ChromeOptions()
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1280,900"]:
        options.add_argument(flag)
    options.binary_location = shutil.which("chromium")
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(condition, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_refused_without_a_token_and_for_a_viewer_action(view_app: tuple[str, ZsadConfig]) -> None:
    base, config = view_app
    camera, _ = camera_of(config, "pause")
    for path in ("/", "/api/overview", f"/camera/{camera}", f"/camera/{camera}/events", "/registry"):
        assert http(base + path)[0] == 401, path
        assert http(base + path, "x" * 24)[0] == 401, path
    form = f"camera={camera}&paused=true".encode()
    assert http(base + "/actions/pause", VIEWER, form)[0] == 403
    status, body = http(base + "/actions/pause", OPERATOR, form + b"&reason=test")
    assert status == 200, body
    overview = json.loads(http(base + "/api/overview", VIEWER)[1])
    assert {row["camera"]: row["paused"] for row in overview["cameras"]} == {c: c == camera for c in config.cameras}


def test_an_event_stream_stays_open_through_a_quiet_spell(view_app: tuple[str, ZsadConfig]) -> None:
    """A camera with no frames for longer than the Redis client's default read timeout (5 s) keeps its stream:
    the next frame's event arrives on the same connection."""
    base, config = view_app
    camera, own = camera_of(config, "quiet")
    url = urlsplit(f"{base}/camera/{camera}/events")
    connection = http_client.HTTPConnection(url.hostname, url.port, timeout=60)
    connection.request("GET", url.path, headers={"Authorization": f"Bearer {VIEWER}"})
    response = connection.getresponse()
    assert response.status == 200 and response.readline() == b"retry: 2000\n"
    time.sleep(8.0)
    produce_frames(own, 1)
    lines = []
    while not any(line.startswith(b"data: ") for line in lines):
        line = response.readline()
        assert line, f"the stream ended after {lines}"
        lines.append(line)
    connection.close()
    (data,) = [json.loads(line[6:]) for line in lines if line.startswith(b"data: ")]
    assert data["frame_id"] == f"{camera}-0"


def test_live_wall_and_frame_page_in_a_browser(view_app: tuple[str, ZsadConfig], browser, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    base, config = view_app
    camera, own = camera_of(config, "wall")
    browser.get(base + "/")
    assert "Log in" in browser.page_source  # no cookie yet: the login page, with status 401
    browser.find_element(By.ID, "token").send_keys(VIEWER)
    browser.find_element(By.ID, "login").click()
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, f"tr[data-camera='{camera}']"), 30, "the overview")
    browser.save_screenshot(str(tmp_path / "overview.png"))

    browser.get(f"{base}/camera/{camera}")
    wait_for(lambda: browser.find_element(By.ID, "status").text == "live", 30, "the event stream")
    frame_ids = produce_frames(own, 6)[camera]
    shown = wait_for(
        lambda: set(frame_ids) <= {e.get_attribute("data-frame") for e in browser.find_elements(By.CSS_SELECTOR,
                                                                                                 ".tile")},
        180, "the live wall to show the streamed frames")  # fmt: skip
    assert shown
    assert int(browser.find_element(By.ID, "seen").text) == len(frame_ids)  # each frame arrived once
    browser.save_screenshot(str(tmp_path / "live_wall.png"))

    browser.get(f"{base}/frame/{camera}/{frame_ids[-1]}")
    size = wait_for(lambda: browser.execute_script(
        "const i = document.getElementById('overlay'); return i.complete && i.naturalWidth ? "
        "[i.naturalWidth, i.naturalHeight] : null;"), 60, "the overlay image")  # fmt: skip
    assert size == [FRAME_SIDE, FRAME_SIDE]  # the overlay is drawn on the frame read back from Kafka
    assert browser.find_element(By.ID, "decision").text in ("pass", "reject")
    assert not browser.find_elements(By.ID, "mark-good")  # a viewer is offered no actions
    browser.save_screenshot(str(tmp_path / "frame.png"))

    # The viewer's session cookie cannot act, even with the page's own CSRF-less form post.
    status = browser.execute_script(
        "const r = await fetch(arguments[0], {method: 'POST', body: arguments[1], "
        "headers: {'Content-Type': 'application/x-www-form-urlencoded'}}); return r.status;",
        f"{base}/actions/mark", f"camera={camera}&frame_id={frame_ids[-1]}&label=good")  # fmt: skip
    assert status == 403


def test_registry_page_promotes_and_rolls_back_in_a_browser(
    view_app: tuple[str, ZsadConfig], browser, redis_server: RedisServer, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from test_prompt_hot_swap import METHOD, make_versions

    base, config = view_app
    registry = ArtifactRegistry(config.registry.root, redis_server.client(), namespace=config.registry.namespace)
    first, second = make_versions(registry, tmp_path / "artifacts", 2)
    registry.promote(METHOD, first, actor="test", reason="the first champion")
    earlier = {entry["id"] for entry in registry.audit(100)}  # e.g. another test's pause, made in the view too
    browser.get(base + "/login")
    browser.find_element(By.ID, "token").send_keys(OPERATOR)
    browser.find_element(By.ID, "login").click()
    wait_for(lambda: "Log in" not in browser.page_source, 30, "the operator's login")
    browser.get(base + "/registry")
    versions = {row.find_element(By.CSS_SELECTOR, "td:nth-child(2)").text: row
                for row in browser.find_elements(By.CSS_SELECTOR, "#versions tr")[1:]}  # fmt: skip
    assert set(versions) == {first, second}
    versions[second].find_element(By.TAG_NAME, "button").click()  # promote the second to champion
    wait_for(lambda: registry.aliases(METHOD).get("champion") == second, 30, "the promotion")
    assert f"champion → {second}" in browser.find_element(By.ID, "aliases").text  # back on the registry page
    assert "promoted in the view" in browser.find_element(By.ID, "audit").text
    browser.save_screenshot(str(tmp_path / "registry.png"))

    browser.find_element(By.CSS_SELECTOR, "#aliases button").click()  # roll the champion back
    wait_for(lambda: registry.aliases(METHOD).get("champion") == first, 30, "the rollback")
    assert f"champion → {first}" in browser.find_element(By.ID, "aliases").text
    history = [entry for entry in registry.audit(10)
               if entry.get("actor") == "operator-view" and entry["id"] not in earlier]  # fmt: skip
    assert [entry.get("action") for entry in history] == ["rollback", "promote"]  # newest first
