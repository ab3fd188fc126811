"""``mmaccel demo`` in a real browser: Playwright drives Debian's chromium against a demo this test starts on a free
loopback port, clicks Generate (image tab, then the video tab), and checks both outputs, the acceptance maps and the
stats against the pipeline's own output for the same seed."""

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
VIDEO_CLASS, VIDEO_METHOD, VIDEO_SEED = "square-down", "sjd", 5

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
    reference = pipeline_reference()  # while the server imports Gradio and loads its models
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


def pipeline_reference() -> dict:
    import torch

    from mmaccel.data.scenes import CLASS_NAMES
    from mmaccel.image.pipeline import ImageARPipeline
    from mmaccel.video.pipeline import VideoARPipeline

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pipe = ImageARPipeline.from_pretrained()
        label = [CLASS_NAMES.index(CLASS)]
        image = [pipe(class_labels=label, method=m, seed=SEED, progress=False) for m in ("ar", METHOD)]
        video = VideoARPipeline.from_pretrained()
        clips = [video(VIDEO_CLASS, method=m, seed=VIDEO_SEED, progress=False) for m in ("ar", VIDEO_METHOD)]
        return {"image": image, "video": clips}
    finally:
        torch.set_num_threads(threads)


def choose(page, tab: str, field: str, value: str) -> None:
    page.locator(f"#{tab}-{field} input").click()
    page.get_by_role("option", name=value, exact=True).click()


def fetch(page, locator):
    """The file an output component shows, as the browser got it."""
    return page.request.get(locator.get_attribute("src")).body()


def rgb(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def gif_frames(data: bytes) -> list[np.ndarray]:
    from PIL import Image, ImageSequence

    return [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(Image.open(io.BytesIO(data)))]


def stats_rows(stats) -> list[list[str]]:
    cells = [t.strip() for t in stats.inner_text().splitlines() if t.strip()]
    first = cells.index("ar")  # after the headers
    return [cells[first : first + 5], cells[first + 5 : first + 10]]


def check_rows(rows: list[list[str]], method: str, ar_steps: int, steps: int, tokens: int) -> None:
    assert rows[0][:3] == ["ar", str(ar_steps), "1"]
    assert rows[1][:3] == [method, str(steps), f"{round(tokens / steps, 3):g}"]
    wall_ar, wall_fast, speedup = float(rows[0][3]), float(rows[1][3]), float(rows[1][4])
    assert speedup == pytest.approx(wall_ar / wall_fast, abs=0.02)


def open_page(p):
    browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    return browser, browser.new_page(viewport={"width": 1400, "height": 1300})


def generate_on_tab(page, tab: str, condition: str, method: str, seed: int):
    """Pick the class, method and seed on ``tab``, click Generate and wait for both outputs and the stats."""
    from playwright import sync_api

    choose(page, tab, "class", condition)
    choose(page, tab, "method", method)
    page.locator(f"#{tab}-seed input").fill(str(seed))
    page.locator(f"#{tab}-generate").click()
    stats = page.locator(f"#{tab}-stats")
    sync_api.expect(stats).to_contain_text(method, timeout=120_000)
    sync_api.expect(page.locator(f"#{tab}-speedup")).to_contain_text("speed-up", timeout=30_000)
    page.wait_for_selector(f"#{tab}-method-map img", timeout=30_000)
    return stats_rows(stats)


def test_generate_in_the_browser_matches_the_pipeline(demo, tmp_path):
    from playwright import sync_api

    with sync_api.sync_playwright() as p:
        browser, page = open_page(p)
        page.goto(demo[0], wait_until="domcontentloaded", timeout=60_000)
        # a bad model folder gets a clear message on the page
        page.locator("#image-folder textarea, #image-folder input").first.fill("/no/such/model")
        page.locator("#image-generate").click()
        sync_api.expect(page.get_by_text("does not exist").first).to_be_visible(timeout=60_000)
        page.locator(".toast-close").first.click()  # dismiss it, so the screenshot shows the results
        page.locator("#image-folder textarea, #image-folder input").first.fill("")
        rows = generate_on_tab(page, "image", CLASS, METHOD, SEED)
        shown = {side: rgb(fetch(page, page.locator(f"#image-{side} img"))) for side in ("ar", "method-output")}
        page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)
        browser.close()
    assert (tmp_path / "demo.png").stat().st_size > 10_000
    ar, fast = demo[1]["image"]
    assert np.array_equal(shown["ar"], np.asarray(ar.images[0])), "the AR image differs from the pipeline's"
    assert np.array_equal(shown["method-output"], np.asarray(fast.images[0])), "the method's image differs"
    check_rows(rows, METHOD, ar.stats[0]["steps"], fast.stats[0]["steps"], 256)


def test_the_video_tab_in_the_browser_matches_the_pipeline(demo, tmp_path):
    from playwright import sync_api

    from mmaccel.video.cli import acceptance_strip, write_clip

    with sync_api.sync_playwright() as p:
        browser, page = open_page(p)
        page.goto(demo[0], wait_until="domcontentloaded", timeout=60_000)
        page.get_by_role("tab", name="video").click()
        rows = generate_on_tab(page, "video", VIDEO_CLASS, VIDEO_METHOD, VIDEO_SEED)
        clips = {side: fetch(page, page.locator(f"#video-{side} img")) for side in ("ar", "method-output")}
        maps = {side: rgb(fetch(page, page.locator(f"#video-{side} img"))) for side in ("ar-map", "method-map")}
        page.screenshot(path=str(tmp_path / "demo_video.png"), full_page=True)
        browser.close()
    assert (tmp_path / "demo_video.png").stat().st_size > 10_000
    for side, map_side, out in zip(("ar", "method-output"), ("ar-map", "method-map"), demo[1]["video"]):
        # the clip as `mmaccel generate video --out x.gif` writes the pipeline's frames, frame for frame
        write_clip(out.frames[0], tmp_path / f"{side}.gif")
        expected = gif_frames((tmp_path / f"{side}.gif").read_bytes())
        assert len(expected) == len(out.frames[0]) == 8
        shown = gif_frames(clips[side])
        assert len(shown) == len(expected) and all(map(np.array_equal, shown, expected)), f"{side}: clip differs"
        strip = np.asarray(acceptance_strip(out.acceptance_maps[0], out.frames[0]))
        assert np.array_equal(maps[map_side], strip), f"{map_side}: acceptance strip differs"
    ar, fast = demo[1]["video"]
    check_rows(rows, VIDEO_METHOD, ar.stats[0]["steps"], fast.stats[0]["steps"], 512)
