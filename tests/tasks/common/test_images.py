"""The shared black-image policy (`tasks.common.images`): what counts as black, error vs skip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from orchestrator.errors import DataError
from tasks.common.images import black_image_error, black_rows, is_black, without_black


def _save(path: Path, pixels: np.ndarray) -> str:
    Image.fromarray(pixels).save(path)
    return str(path)


def _content(path: Path) -> str:
    """A grey disc on a black border (most of the image is border)."""
    yy, xx = np.mgrid[:48, :48]
    disc = ((yy - 24) ** 2 + (xx - 24) ** 2 < 12**2).astype(np.uint8) * 120
    return _save(path, np.stack([disc] * 3, axis=2))


def _speckled(path: Path) -> str:
    """Black with ~5% scattered bright pixels (noise, burned-in dots): more than `min_content`,
    yet the median filter leaves nothing."""
    img = np.zeros((48, 48, 3), np.uint8)
    rng = np.random.default_rng(0)
    img[rng.integers(0, 48, 120), rng.integers(0, 48, 120)] = 255
    assert (img.max(axis=2) > 10).mean() > 0.04
    return _save(path, img)


@pytest.fixture()
def frame(tmp_path: Path) -> pd.DataFrame:
    paths = [
        _content(tmp_path / "a.png"),
        _save(tmp_path / "black.png", np.zeros((48, 48, 3), np.uint8)),
        _content(tmp_path / "c.png"),
        _speckled(tmp_path / "speckled.png"),
    ]
    return pd.DataFrame({"path": paths, "label": [0, 1, 0, 1], "line": [2, 3, 4, 5]})


def test_error_names_every_black_image_by_line(frame: pd.DataFrame, tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        without_black(frame, "error", threshold=10, cache_dir=tmp_path / "c", source="m.csv")
    e = err.value
    assert e.source == "m.csv" and e.where == "line 3, column 'path'"
    assert e.message.startswith("2 of 4 images are black (no content brighter than the border")
    assert f"line 3: {frame['path'][1]}; line 5: {frame['path'][3]};" in e.message
    assert "data.black_images: skip" in e.message


def test_skip_leaves_them_out_and_counts_them(frame: pd.DataFrame, tmp_path: Path) -> None:
    kept, n = without_black(frame, "skip", threshold=10, cache_dir=None, source="m.csv")
    assert n == 2
    assert kept["path"].tolist() == [frame["path"][0], frame["path"][2]]
    assert kept.index.tolist() == [0, 1]


def test_clean_images_pass_both_policies(frame: pd.DataFrame) -> None:
    clean = frame.iloc[[0, 2]]
    for policy in ("error", "skip"):
        kept, n = without_black(clean, policy, threshold=10, cache_dir=None, source="m.csv")
        assert n == 0 and kept["path"].tolist() == clean["path"].tolist()


def test_the_message_of_an_unchanged_fundus_frame_is_the_same(tmp_path: Path) -> None:
    df = pd.DataFrame({"path": ["x.png", "y.png"]})  # no lines: paths only, no `where`
    e = black_image_error(df, [1], "m.csv")
    assert e.where is None
    assert e.message == (
        "1 of 2 images are black (no content brighter than the border threshold): y.png; "
        "remove them, or set data.black_images: skip to leave them out and count them"
    )


def test_custom_labels_and_threshold_text(frame: pd.DataFrame) -> None:
    def labels(f: pd.DataFrame) -> list[tuple[str, str | None]]:
        return [(f"images[{i}]: x", f"images[{i}]") for i in range(len(f))]

    with pytest.raises(DataError) as err:
        without_black(
            frame, "error", threshold=10, cache_dir=None, source="a.json", what="T", labels=labels
        )
    assert err.value.where == "images[1]"
    assert "brighter than T): images[1]: x; images[3]: x;" in err.value.message


def test_answers_are_cached_per_file_state(frame: pd.DataFrame, tmp_path: Path) -> None:
    paths = frame["path"].tolist()
    assert black_rows(paths, cache_dir=tmp_path / "c") == [1, 3]
    assert len(list((tmp_path / "c").glob("*.json"))) == 1
    _content(Path(paths[1]))  # the file changes: its answer is judged again
    assert black_rows(paths, cache_dir=tmp_path / "c") == [3]


def test_wide_images_are_judged_as_a_min_max_scaling_loader_sees_them(tmp_path: Path) -> None:
    flat = tmp_path / "flat.png"  # constant 16-bit: clipped it is white, scaled it is black
    Image.fromarray(np.full((32, 32), 30000, np.uint16)).save(flat)
    dim = tmp_path / "dim.png"  # values 0..8 of 65535: clipped black, scaled full range
    Image.fromarray((np.indices((32, 32)).sum(axis=0) % 9).astype(np.uint16)).save(dim)
    assert not is_black(flat, 10, 0.01) and is_black(flat, 10, 0.01, stretch=True)
    assert is_black(dim, 10, 0.01) and not is_black(dim, 10, 0.01, stretch=True)
    # the two rules are cached apart
    assert black_rows([str(flat)], cache_dir=tmp_path / "c") == []
    assert black_rows([str(flat)], cache_dir=tmp_path / "c", stretch=True) == [0]
