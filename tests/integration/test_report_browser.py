"""Open a report in headless Chromium, as a reader would: the page loads offline, every
plot image loads in the browser, and the rendered page is not blank."""

from __future__ import annotations

import html as htmllib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

from surgesim.reports import build_report
from tests.fixtures.synthetic_run import write_synthetic_run

pytestmark = pytest.mark.integration

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
requires_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install -y chromium)")

# Appended to a copy of the report (the report itself has no script): after load, record
# each image's natural size where --dump-dom can read it.
IMAGE_CHECK = """<script>
window.addEventListener("load", () => {
  const imgs = Array.from(document.images);
  document.body.setAttribute("data-images", JSON.stringify(
    imgs.map(i => ({src: i.getAttribute("src"), w: i.naturalWidth, h: i.naturalHeight, ok: i.complete}))));
});
</script>"""


def chromium(*args: str, timeout: float = 180) -> str:
    """Run headless Chromium in its own session so a hung browser and its helpers can be
    killed together; a throwaway profile; no network services."""
    profile = tempfile.mkdtemp(prefix="surgesim-chromium-")
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        return out
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    run = write_synthetic_run(tmp_path_factory.mktemp("browser") / "run", duration_s=3600.0,
                              start_clock_s=7 * 3600.0 + 1200.0, capacity=0.5, plan="tight")
    return build_report(run)


@requires_chromium
def test_every_plot_loads_in_the_browser(report):
    probe = report.with_name("report-probe.html")
    probe.write_text(report.read_text().replace("</body>", IMAGE_CHECK + "</body>"))
    dom = chromium("--virtual-time-budget=10000", "--dump-dom", probe.as_uri())
    match = re.search(r'data-images="([^"]*)"', dom)
    assert match, "the page did not finish loading:\n" + dom[:500]
    images = json.loads(htmllib.unescape(match.group(1)))
    expected = re.findall(r'<img src="([^"]+)"', report.read_text())
    assert [i["src"] for i in images] == expected and len(expected) >= 5
    for img in images:
        assert img["ok"] and img["w"] > 500 and img["h"] > 100, f"{img['src']} did not load: {img}"
    assert "FAIL" in dom or "PASS" in dom


@requires_chromium
def test_screenshot_is_a_rendered_page(report, tmp_path):
    from PIL import Image

    shot = tmp_path / "report.png"
    chromium(f"--screenshot={shot}", "--window-size=1400,3000", report.as_uri())
    with Image.open(shot) as im:
        pixels = np.asarray(im.convert("RGB"))
    assert pixels.shape[:2] == (3000, 1400)
    # text, banner and plots: far from a blank or error page
    packed = (pixels[..., 0].astype(np.int32) << 16) | (pixels[..., 1].astype(np.int32) << 8) | pixels[..., 2]
    assert len(np.unique(packed)) > 500
    # the verdict banner (red or green) is near the top
    top = pixels[:300]
    red = (top[..., 0] > 240) & (top[..., 1] < 240) & (top[..., 1] > 200) & (top[..., 2] < 240)
    green = (top[..., 1] > 235) & (top[..., 0] < 235) & (top[..., 2] < 235)
    assert red.sum() + green.sum() > 10000
