"""The node-data overlays render in a real browser: Model Explorer with its ONNX adapter draws the tagged graph
and colours its nodes by them (tests/explorer_browser.py drives a headless Chromium). Skipped only where no
Chromium-family browser is installed (Debian: ``apt-get install chromium``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from modelexport.profile import profile
from tests import explorer_browser

BROWSER = explorer_browser.find_browser()
pytestmark = pytest.mark.skipif(BROWSER is None, reason="no Chromium-family browser (apt-get install chromium)")
SIDE_PANEL = 900  # px from the left at the 1280 px viewport: the graph is drawn left of it, below the toolbar
TOOLBAR = 100


def overlay_pixels(png) -> int:
    """Pixels of the graph area in the overlay's orange-to-dark-red colours (overlays.GRADIENT); Model Explorer's
    own nodes and layers are white, grey and blue-grey."""
    rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)[TOOLBAR:, :SIDE_PANEL]
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return int(((red - blue > 25) & (red - green > 10)).sum())


def test_the_latency_overlay_colours_the_graph_in_model_explorer(exported, tmp_path):
    onnx_path = exported("tiny-resnet").onnx_path
    profile(onnx_path, warmup=1, iterations=5, output_dir=tmp_path)
    node_data = tmp_path / "latency.node_data.json"
    name = json.loads(node_data.read_text())["name"]
    with explorer_browser.explorer_server(tmp_path / "server.log") as port:
        with explorer_browser.browser_page(BROWSER) as page:
            url = explorer_browser.explorer_url(port, onnx_path, [])
            plain = explorer_browser.screenshot(page, url, tmp_path / "plain.png")
            url = explorer_browser.explorer_url(port, onnx_path, [node_data])
            overlaid = explorer_browser.screenshot(page, url, tmp_path / "overlaid.png", overlay_name=name)
            drawn = page.evaluate("document.body.innerText")
    errors = [e for e in page.console if "Failed to load resource" not in e]  # offline: its web fonts
    print(f"overlay pixels {overlay_pixels(overlaid)} (without the overlay {overlay_pixels(plain)}); {errors}")
    assert not errors
    assert name in drawn and "Unsupported model format" not in drawn
    assert overlay_pixels(plain) < 20  # measured: 0
    assert overlay_pixels(overlaid) > 200  # measured: ~570 (most nodes are small shares, drawn in the lightest)
