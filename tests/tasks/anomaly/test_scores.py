"""tasks.anomaly.scores: NLL in bits/dim, PNG complexity, Serrà's score, emphasis maps, overlays."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from matplotlib import colormaps
from PIL import Image

from tasks.anomaly.glow import Glow, bits_per_dim, preprocess
from tasks.anomaly.scores import (
    anomaly_score,
    emphasis_map,
    nll_bpd,
    overlay_png,
    png_bits_per_dim,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tiny tensors: OpenMP threads only contend on the shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_nll_bpd_matches_the_model_and_ignores_batching() -> None:
    torch.manual_seed(0)
    model = Glow(in_channels=1, levels=2, depth=1, width=8)
    images = np.random.default_rng(0).integers(0, 256, (5, 8, 8), dtype=np.uint8)
    model(preprocess(torch.from_numpy(images)[:, None])[0])  # ActNorm init
    got = nll_bpd(model, images, batch_size=2)
    y, const = preprocess(torch.from_numpy(images)[:, None], noise=False)
    with torch.no_grad():
        expected = bits_per_dim(model.log_prob(y) + const, 64).numpy()
    assert got.shape == (5,) and got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    np.testing.assert_allclose(nll_bpd(model, images[:, None], batch_size=5), got, rtol=1e-6)
    with pytest.raises(ValueError, match=r"\[N, 1, H, W\]"):
        nll_bpd(model, images[:, None].repeat(3, axis=1))


def test_png_bits_per_dim_orders_by_complexity() -> None:
    rng = np.random.default_rng(1)
    flat = np.full((32, 32), 90, np.uint8)
    noise = rng.integers(0, 256, (32, 32), dtype=np.uint8)
    ramp = np.tile(np.arange(32, dtype=np.uint8) * 8, (32, 1))
    bpd = png_bits_per_dim(np.stack([flat, ramp, noise]))
    assert bpd[0] < bpd[1] < bpd[2]
    assert 7.5 < bpd[2] < 9.5  # incompressible: ~8 bits per value plus the PNG overhead
    ok, buf = cv2.imencode(".png", ramp, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    assert ok and bpd[1] == pytest.approx(8 * buf.size / ramp.size)
    rgb = png_bits_per_dim(np.repeat(noise[None, ..., None], 3, axis=3))
    assert rgb.shape == (1,)
    with pytest.raises(ValueError, match="uint8"):
        png_bits_per_dim(np.zeros((1, 4, 4), np.float32))


def test_anomaly_score_kinds() -> None:
    nll, comp = np.array([5.0, 6.0]), np.array([4.0, 6.5])
    assert anomaly_score(nll, comp, "nll").tolist() == [5.0, 6.0]
    assert anomaly_score(nll, comp, "complexity").tolist() == [1.0, -0.5]
    with pytest.raises(ValueError, match="needs complexity_bpd"):
        anomaly_score(nll, None, "complexity")
    with pytest.raises(ValueError, match="kind must be"):
        anomaly_score(nll, comp, "other")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="differ in shape"):
        anomaly_score(nll, comp[:1], "complexity")


def test_emphasis_map_smooths_and_normalises_per_image() -> None:
    nll = np.zeros((2, 16, 16))
    nll[0, 4, 10] = 50.0  # a single hot pixel
    nll[1] = 3.0  # constant: nothing to emphasise
    out = emphasis_map(torch.from_numpy(nll), sigma=2.0)
    assert out.shape == (2, 16, 16)
    assert out[0].max() == pytest.approx(1.0) and out[0].min() == pytest.approx(0.0)
    assert np.unravel_index(out[0].argmax(), (16, 16)) == (4, 10)
    assert 0.3 < out[0, 4, 12] < 1.0  # smoothed: the neighbourhood lights up too
    assert (out[1] == 0).all()
    raw = emphasis_map(nll[0], sigma=0.0)
    assert raw.shape == (16, 16) and raw[4, 10] == 1.0 and raw.sum() == 1.0
    with pytest.raises(ValueError, match="sigma"):
        emphasis_map(nll, sigma=-1)


def test_overlay_png_blends_only_where_emphasised(tmp_path: Path) -> None:
    image = np.full((8, 8), 100, np.uint8)
    emphasis = np.zeros((8, 8))
    emphasis[2, 3] = 1.0
    path = overlay_png(image, emphasis, tmp_path / "sub" / "o.png", alpha=0.5, cmap="jet")
    with Image.open(path) as img:
        assert img.mode == "RGB" and img.size == (8, 8)
        rgb = np.asarray(img)
    assert (rgb[0, 0] == 100).all()  # emphasis 0: the original pixel
    expected = 0.5 * 100 / 255 + 0.5 * np.asarray(colormaps["jet"](1.0)[:3])
    np.testing.assert_allclose(rgb[2, 3] / 255, expected, atol=1 / 255)
    with pytest.raises(ValueError, match="do not match"):
        overlay_png(image, emphasis[:4], tmp_path / "bad.png")
