"""docs/studio.png, the README's first screen: the studio at 1280x900 in Debian's chromium, after
speaking a sentence with its words highlighted.

Run: .venv/bin/python scripts/studio_screenshot.py
"""

import sys
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conftest import running  # noqa: E402 (the checkout first on the path)
from tests.e2e.test_web import CHROMIUM, LAUNCH_ARGS  # noqa: E402
from voxserve.config import Settings  # noqa: E402
from voxserve.server.app import create_app  # noqa: E402

with running(create_app(Settings(data_dir=tempfile.mkdtemp()))) as url, sync_playwright() as p:
    browser = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(url + "/")
    page.evaluate("window.voxserveReady")
    page.fill("#input", "Welcome to the voxserve studio. Every word lights up as it is spoken.")
    page.click("#speak")
    page.wait_for_selector("#status:has-text('first audio')", timeout=30000)
    page.wait_for_selector("#spoken .word:nth-of-type(6)[data-heard]", timeout=15000)
    page.evaluate("document.querySelector('#code').open = true")
    page.screenshot(path="docs/studio.png")
    browser.close()
