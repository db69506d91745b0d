"""Screenshots of the operator view of the running local stack, for the README.

Usage (from the repository root, after ``make demo`` or ``zsad up``)::

    .venv/bin/python scripts/view_screenshots.py [--frames 60] [--fps 1] [--out docs]

Why a script and not the browser test's screenshots: the README shows what a user of ``zsad up`` sees, so the
pictures are taken from that stack (its config, cameras, model and view), with frames streamed while the live
wall is open. It logs in with the viewer token from the stack's configuration, streams synthetic frames to every
camera and saves the overview, the first camera's live wall and one frame page.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from services.config import load_config
from services.frame_path.producer import stream_synthetic
from services.local_stack.control import running_stack
from services.state_home import stack_dir

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                  "--window-size=1280,900")  # fmt: skip


def _wait(condition: object, timeout_s: float, what: str) -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()  # type: ignore[operator]
        if value:
            return value
        time.sleep(0.5)
    raise SystemExit(f"timed out waiting for {what}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=60, help="synthetic frames per camera streamed meanwhile")
    parser.add_argument("--fps", type=float, default=1.0, help="frames per second per camera")
    parser.add_argument("--out", type=Path, default=Path("docs"))
    args = parser.parse_args()
    from selenium import webdriver
    from selenium.webdriver.common.by import By

    state = running_stack(stack_dir())
    if state is None or state.status != "ready":
        print("no running local stack: start one with `zsad up` (or `make demo`)", file=sys.stderr)
        return 1
    config = load_config(Path(state.config_path))
    token = config.view.viewer_token.get_secret_value() if config.view.viewer_token else ""
    base = state.serve_url.rstrip("/")
    cameras = list(config.cameras)
    options = webdriver.ChromeOptions()
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.binary_location = shutil.which("chromium") or "chromium"
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(shutil.which("chromedriver")))
    try:
        driver.get(base + "/login")
        driver.find_element(By.ID, "token").send_keys(token)
        driver.find_element(By.ID, "login").click()
        _wait(lambda: driver.find_elements(By.CSS_SELECTOR, "tr[data-camera]"), 60, "the overview")
        driver.get(f"{base}/camera/{cameras[0]}")
        _wait(lambda: driver.find_element(By.ID, "status").text == "live", 60, "the live wall's event stream")
        senders = stream_synthetic(config, cameras, args.frames, args.fps)
        _wait(lambda: int(driver.find_element(By.ID, "seen").text or 0) >= min(args.frames, 9), 600,
              "the live wall to fill with streamed frames")  # fmt: skip
        loaded = "return [...document.querySelectorAll('.tile img')].every(i => i.complete && i.naturalWidth > 0);"
        _wait(lambda: driver.execute_script(loaded), 60, "the thumbnails to load")
        args.out.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(args.out / "operator_view_live_wall.png"))
        frame_link = driver.find_element(By.CSS_SELECTOR, ".tile a").get_attribute("href")
        for sender in senders:
            sender.join()


        def charted() -> bool:  # Prometheus has scraped enough samples for a rate
            driver.get(base + "/")
            return "frames/s: -" not in driver.find_element(By.TAG_NAME, "body").text

        _wait(charted, 300, "the overview's charts to have data")
        driver.save_screenshot(str(args.out / "operator_view_overview.png"))
        driver.get(frame_link)
        overlay = "const i = document.getElementById('overlay'); return i && i.complete && i.naturalWidth > 0;"
        _wait(lambda: driver.execute_script(overlay), 60, "the overlay")
        driver.save_screenshot(str(args.out / "operator_view_frame.png"))
    finally:
        driver.quit()
    print(f"screenshots in {args.out}/operator_view_{{live_wall,overview,frame}}.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
