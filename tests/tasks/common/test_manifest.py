"""tasks.common.manifest: valid manifests load; every bad input names file, line and column."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from orchestrator.errors import DataError
from tasks.common.manifest import load_image, load_images, read_manifest, verify_images


def _png(path: Path, size: tuple[int, int] = (20, 10), mode: str = "RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def images(tmp_path: Path) -> Path:
    for i in range(4):
        _png(tmp_path / "img" / f"{i}.png")
    return tmp_path


def _csv(folder: Path, text: str, name: str = "m.csv") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def test_valid_manifest(images: Path) -> None:
    absolute = images / "img" / "3.png"
    csv = _csv(
        images,
        "path,label,patient_id,cdr\n"
        "img/0.png,0,007,0.3\n"
        "img/1.png,1,007,0.6\n"
        "\n"  # a blank line is skipped but still counted for line numbers
        f"{absolute},1.0,8,0.7\n",
    )
    df = read_manifest(csv)
    assert df["path"].tolist() == [str(images / "img" / f"{i}.png") for i in (0, 1, 3)]
    assert df["label"].tolist() == [0, 1, 1] and df["label"].dtype == np.int64
    assert df["patient_id"].tolist() == ["007", "007", "8"]  # ids stay strings, zeros kept
    assert df["line"].tolist() == [2, 3, 5]
    assert df["cdr"].tolist() == [0.3, 0.6, 0.7]


def test_image_root_and_optional_columns(
    images: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    elsewhere = tmp_path_factory.mktemp("csvs")
    csv = _csv(elsewhere, "file\n0.png\n1.png\n")
    df = read_manifest(csv, image_root=images / "img", path_column="file", require_labels=False)
    assert list(df.columns) == ["path", "line"]
    assert df["path"].iloc[1] == str(images / "img" / "1.png")
    with pytest.raises(DataError, match=r"no 'label' column; columns found: \['file'\]"):
        read_manifest(csv, image_root=images / "img", path_column="file")


def test_custom_label_and_group_columns(images: Path) -> None:
    csv = _csv(images, "path,y,eye_of\nimg/0.png,1,a\nimg/1.png,1,a\n")
    df = read_manifest(csv, label_column="y", group_column="eye_of")
    assert df["label"].tolist() == [1, 1] and df["patient_id"].tolist() == ["a", "a"]


@pytest.mark.parametrize(
    ("text", "match", "where"),
    [
        ("", "is empty", None),
        ("path,label\n", "header but no data rows", None),
        (
            "file,label\nimg/0.png,0\n",
            r"no 'path' column; columns found: \['file', 'label'\]",
            "header",
        ),
        ("path,label\nimg/0.png,0\nimg/1.png,2\n", "outside", "line 3, column 'label'"),
        ("path,label\nimg/0.png,yes\n", "not an integer", "line 2, column 'label'"),
        ("path,label\nimg/0.png,0.5\n", "not an integer", "line 2, column 'label'"),
        ("path,label\nimg/0.png,\n", "empty label", "line 2, column 'label'"),
        ("path,label\nimg/0.png,1\n,0\n", "empty image path", "line 3, column 'path'"),
        ("path,label\nimg/0.png,1\n./img/0.png,0\n", "first on line 2", "line 3, column 'path'"),
        ("path,label\nimg/0.png,1,x\n", "expected 2 fields", "line 2"),
        (
            'path,label,note\nimg/0.png,1,"two\nlines"\nimg/1.png,7,x\n',
            "outside",
            "line 4, column 'label'",
        ),
        ("path,label,patient_id\nimg/0.png,1,\n", "empty group id", "line 2, column 'patient_id'"),
        ("path,path\nimg/0.png,img/1.png\n", "duplicate column names", "header"),
    ],
)
def test_bad_manifest(images: Path, text: str, match: str, where: str | None) -> None:
    csv = _csv(images, text)
    with pytest.raises(DataError, match=match) as info:
        read_manifest(csv)
    assert info.value.source == str(csv)
    assert info.value.where == where


def test_missing_file_and_non_utf8(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist") as info:
        read_manifest(tmp_path / "nope.csv")
    assert info.value.source == str(tmp_path / "nope.csv")
    bad = tmp_path / "latin1.csv"
    bad.write_bytes("path,label\nbild_\xe4.png,1\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        read_manifest(bad)


def test_missing_images_are_counted_and_named(images: Path) -> None:
    rows = "".join(f"img/missing{i}.png,0\n" for i in range(8))
    csv = _csv(images, "path,label\nimg/0.png,1\n" + rows)
    with pytest.raises(DataError, match=r"8 of 9 image files do not exist") as info:
        read_manifest(csv)
    msg = str(info.value)
    assert "line 3: " + str(images / "img" / "missing0.png") in msg
    assert "missing4.png" in msg and "missing5.png" not in msg and "(and 3 more)" in msg
    assert info.value.where == "line 3, column 'path'"


def test_load_image_converts_and_resizes(tmp_path: Path) -> None:
    grey = _png(tmp_path / "g.png", (30, 20), mode="L")
    arr = load_image(grey, 16)
    assert arr.shape == (16, 16, 3) and arr.dtype == np.uint8
    assert np.array_equal(arr[..., 0], arr[..., 2])  # grey became RGB
    assert load_image(grey, None).shape == (20, 30, 3)


def test_load_image_errors_name_file_and_line(tmp_path: Path) -> None:
    good = _png(tmp_path / "ok.png", (64, 64))
    truncated = tmp_path / "trunc.png"
    truncated.write_bytes(good.read_bytes()[:-200])
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"this is not an image" * 10)
    for path in (truncated, garbage):
        with pytest.raises(DataError, match="cannot read image") as info:
            load_image(path, 8, row_hint=5)
        assert info.value.source == str(path) and info.value.where == "manifest line 5"
    with pytest.raises(DataError, match="cannot read image") as info:
        load_image(garbage, None, row_hint=np.int64(7))  # as taken from df["line"]
    assert info.value.where == "manifest line 7"
    with pytest.raises(DataError, match="does not exist") as info:
        load_image(tmp_path / "gone.png", 8, row_hint="labels.csv line 9")
    assert info.value.where == "labels.csv line 9"


def test_load_images_and_verify(images: Path) -> None:
    csv = _csv(images, "path,label\nimg/0.png,0\nimg/1.png,1\nimg/2.png,1\n")
    df = read_manifest(csv)
    batch = load_images(df, 12)
    assert batch.shape == (3, 12, 12, 3) and batch.dtype == np.uint8
    assert np.array_equal(batch[1], load_image(images / "img" / "1.png", 12))
    verify_images(df, source=csv)  # all fine: no error
    (images / "img" / "2.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"1 of 3 images cannot be read .*line 4: ") as info:
        verify_images(df, source=csv)
    assert info.value.where == "line 4, column 'path'"
    with pytest.raises(DataError, match="manifest line 4"):
        load_images(df, 12)
