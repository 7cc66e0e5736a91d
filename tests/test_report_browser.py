"""report.html in a real browser: headless Chromium renders it, and the embedded plots show up on screen."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from PIL import Image
from synthetic_runs import analysis_result, eval_scores, make_run

from uniapl.analysis.plots import EXPERT_COLOR, POLICY_COLOR
from uniapl.analysis.report import write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def pixels_near(image: Image.Image, hex_color: str, tolerance: int = 30) -> int:
    target = tuple(int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return sum(
        count
        for count, rgb in image.getcolors(maxcolors=10_000_000)
        if all(abs(a - b) <= tolerance for a, b in zip(rgb, target))
    )


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install -y chromium)")
def test_report_html_renders_its_embedded_plots(tmp_path):
    runs = [
        make_run(tmp_path, "uniapl-seed1", "uniapl", 1, eval_scores(0.25, 0.375), analysis_result([10, 12, 30], [11, 13, 15])),
        make_run(tmp_path, "grpo-seed1", "grpo", 1, None, None, with_discriminator=False),
    ]
    out = tmp_path / "report"
    write_report(runs, out)
    page = (out / "report.html").read_text()
    # the page must stand alone: render a copy far from the PNG files
    alone = tmp_path / "elsewhere" / "report.html"
    alone.parent.mkdir()
    alone.write_text(page)
    shot = tmp_path / "screenshot.png"
    subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1300,5000",
         f"--screenshot={shot}", alone.as_uri()],
        check=True, capture_output=True, timeout=120,
    )
    with Image.open(shot) as image:
        rgb = image.convert("RGB")
    # the page's own text and tables are black and grey; blue and orange come only from the plots
    assert pixels_near(rgb, POLICY_COLOR) > 2_000, "the plots did not render (no policy-blue pixels on the page)"
    assert pixels_near(rgb, EXPERT_COLOR) > 1_000, "the histograms did not render (no expert-orange pixels on the page)"
