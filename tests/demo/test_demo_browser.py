"""``mmaccel demo`` in a real browser: Playwright drives Debian's chromium against a demo this test starts on a free
loopback port, clicks Generate, and checks both images and the stats against the pipeline's own output."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = "/usr/bin/chromium"
# Headless, and nothing chromium would fetch on its own (updates, sync, QUIC probes, first-run pages).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
CLASS, METHOD, SEED = "star", "sjd", 3

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is absent (apt-get install chromium)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("demo") / "demo.log"
    # One CPU thread, as this process's own pipeline run below: the images then agree bit for bit.
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1", "NO_PROXY": "127.0.0.1"}
    with open(log, "w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "mmaccel", "demo", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    reference = pipeline_reference()  # while the server imports Gradio and loads its model
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 180
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"the demo did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
    yield url, reference
    server.terminate()
    server.wait(timeout=30)


def pipeline_reference():
    import torch

    from mmaccel.data.scenes import CLASS_NAMES
    from mmaccel.image.pipeline import ImageARPipeline

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pipe = ImageARPipeline.from_pretrained()
        label = [CLASS_NAMES.index(CLASS)]
        return [pipe(class_labels=label, method=m, seed=SEED, progress=False) for m in ("ar", METHOD)]
    finally:
        torch.set_num_threads(threads)


def test_generate_in_the_browser_matches_the_pipeline(demo, tmp_path):
    from PIL import Image
    from playwright import sync_api

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1300})
        page.goto(demo[0], wait_until="domcontentloaded", timeout=60_000)
        # a bad model folder gets a clear message on the page
        page.locator("#image-folder textarea, #image-folder input").first.fill("/no/such/model")
        page.locator("#image-generate").click()
        sync_api.expect(page.get_by_text("does not exist").first).to_be_visible(timeout=60_000)
        page.locator(".toast-close").first.click()  # dismiss it, so the screenshot shows the results
        page.locator("#image-folder textarea, #image-folder input").first.fill("")
        for field, value in (("class", CLASS), ("method", METHOD)):
            page.locator(f"#image-{field} input").click()
            page.get_by_role("option", name=value, exact=True).click()
        page.locator("#image-seed input").fill(str(SEED))
        page.locator("#image-generate").click()
        stats = page.locator("#image-stats")
        sync_api.expect(stats).to_contain_text(METHOD, timeout=120_000)
        sync_api.expect(page.locator("#image-speedup")).to_contain_text("speed-up", timeout=30_000)
        page.wait_for_selector("#image-method-map img", timeout=30_000)
        shown = {}
        for side in ("ar", "method-output"):
            src = page.locator(f"#image-{side} img").get_attribute("src")
            shown[side] = np.asarray(Image.open(io.BytesIO(page.request.get(src).body())).convert("RGB"))
        cells = [t.strip() for t in stats.inner_text().splitlines() if t.strip()]
        page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)
        browser.close()
    assert (tmp_path / "demo.png").stat().st_size > 10_000
    ar, fast = demo[1]
    assert np.array_equal(shown["ar"], np.asarray(ar.images[0])), "the AR image differs from the pipeline's"
    assert np.array_equal(shown["method-output"], np.asarray(fast.images[0])), "the method's image differs"
    first = cells.index("ar")  # after the headers
    rows = [cells[first : first + 5], cells[first + 5 : first + 10]]
    assert rows[0][:3] == ["ar", str(ar.stats[0]["steps"]), "1"]
    steps = fast.stats[0]["steps"]
    assert rows[1][:3] == [METHOD, str(steps), f"{round(256 / steps, 3):g}"]
    wall_ar, wall_fast, speedup = float(rows[0][3]), float(rows[1][3]), float(rows[1][4])
    assert speedup == pytest.approx(wall_ar / wall_fast, abs=0.02)
