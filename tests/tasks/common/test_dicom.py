"""DICOM and PNG slice reading: HU rescaling, windowing, photometry and every error path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from orchestrator.errors import DataError
from tasks.common.dicom import is_dicom, read_hu, read_slice, write_ct_slice

# Stored values and what they mean with slope 2, intercept -1400: HU = 2 * stored - 1400.
STORED = np.array([[0, 300], [500, 775]], dtype=np.uint16)
HU = np.array([[-1400.0, -800.0], [-400.0, 150.0]], dtype=np.float32)
# Lung window (-600, 1500): low = -1350, so v = clip((HU + 1350) / 1500, 0, 1).
WINDOWED = np.array([[0.0, 550 / 1500], [950 / 1500, 1.0]], dtype=np.float32)


def _dicom(
    path: Path,
    *,
    photometric: str = "MONOCHROME2",
    pixels: np.ndarray | None = STORED,
    frames: int = 1,
    window: tuple[float, float] | None = None,
) -> Path:
    """A tiny CT DICOM file, built by hand as a user's scanner export would be."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.PhotometricInterpretation = photometric
    ds.RescaleSlope, ds.RescaleIntercept = 2, -1400
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if pixels is not None:
        ds.Rows, ds.Columns = pixels.shape
        ds.SamplesPerPixel = 3 if photometric == "RGB" else 1
        if photometric == "RGB":
            ds.PlanarConfiguration = 0
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        if frames > 1:
            ds.NumberOfFrames = frames
        data = np.repeat(pixels[None], frames * ds.SamplesPerPixel, axis=0)
        ds.PixelData = data.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def test_read_hu_rescales_and_read_slice_windows(tmp_path: Path) -> None:
    path = _dicom(tmp_path / "a.dcm")
    np.testing.assert_allclose(read_hu(path), HU)
    out = read_slice(path)
    assert out.dtype == np.float32 and out.shape == (2, 2)
    np.testing.assert_allclose(out, WINDOWED, atol=1e-6)
    # A narrower window: level -600, width 400 -> HU -800 is the bottom, -400 the top.
    np.testing.assert_allclose(read_slice(path, window=(-600.0, 400.0)), [[0, 0], [1, 1]])


def test_dicom_recognised_by_preamble_without_suffix(tmp_path: Path) -> None:
    path = _dicom(tmp_path / "IM0001")
    assert is_dicom(path)
    np.testing.assert_allclose(read_slice(path), WINDOWED, atol=1e-6)


def test_monochrome1_is_inverted_but_hu_are_not(tmp_path: Path) -> None:
    path = _dicom(tmp_path / "m1.dcm", photometric="MONOCHROME1")
    np.testing.assert_allclose(read_slice(path), 1.0 - WINDOWED, atol=1e-6)
    np.testing.assert_allclose(read_hu(path), HU)


def test_window_none_uses_the_files_window(tmp_path: Path) -> None:
    path = _dicom(tmp_path / "w.dcm", window=(-600.0, 400.0))
    np.testing.assert_allclose(read_slice(path, window=None), [[0, 0], [1, 1]])
    bare = _dicom(tmp_path / "bare.dcm")
    with pytest.raises(DataError, match="no WindowCenter") as err:
        read_slice(bare, window=None)
    assert err.value.where == "field window"


def test_png_is_read_as_windowed_8bit_and_rgb_as_luminance(tmp_path: Path) -> None:
    grey = np.array([[0, 128], [200, 255]], dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "g.png")
    np.testing.assert_allclose(read_slice(tmp_path / "g.png"), grey / 255.0, atol=1e-7)
    rgb = np.zeros((2, 2, 3), dtype=np.uint8)
    rgb[..., 0] = 255  # pure red -> ITU-R 601 luma 0.299 * 255 = 76
    Image.fromarray(rgb).save(tmp_path / "c.jpg", quality=100)
    assert read_slice(tmp_path / "c.jpg")[0, 0] == pytest.approx(76 / 255, abs=2 / 255)
    # The window does not apply to already-windowed images.
    np.testing.assert_allclose(read_slice(tmp_path / "g.png", window=(0.0, 10.0)), grey / 255.0)


def test_write_ct_slice_round_trips_and_is_deterministic(tmp_path: Path) -> None:
    hu = np.array([[-1000.4, -850.0], [40.6, 700.0]], dtype=np.float32)
    for name in ("a.dcm", "b.dcm"):
        write_ct_slice(tmp_path / name, hu, "P1", 3, uid_key="k")
    np.testing.assert_allclose(read_hu(tmp_path / "a.dcm"), np.rint(hu))
    assert (tmp_path / "a.dcm").read_bytes() == (tmp_path / "b.dcm").read_bytes()


# ---------------------------------------------------------------------------------------------
# Errors: each names the file and the manifest row.
# ---------------------------------------------------------------------------------------------
HINT = "labels.csv line 7"


def _raises(path: Path, match: str, **kwargs: object) -> DataError:
    with pytest.raises(DataError, match=match) as err:
        read_slice(path, row_hint=HINT, **kwargs)  # type: ignore[arg-type]
    assert str(path) in str(err.value)
    return err.value


def test_dicom_without_pixel_data(tmp_path: Path) -> None:
    err = _raises(_dicom(tmp_path / "sr.dcm", pixels=None), "no pixel data")
    assert err.where == HINT and HINT in str(err)


@pytest.mark.parametrize("photometric", ["RGB", "PALETTE COLOR"])
def test_unsupported_photometric_interpretation(tmp_path: Path, photometric: str) -> None:
    path = _dicom(tmp_path / "rgb.dcm", photometric=photometric)
    err = _raises(path, f"unsupported PhotometricInterpretation '{photometric}'")
    assert err.where == HINT
    with pytest.raises(DataError, match="PhotometricInterpretation"):
        read_hu(path)


@pytest.mark.parametrize("width", [0.0, -10.0, float("nan")])
def test_window_width_must_be_positive(tmp_path: Path, width: float) -> None:
    err = _raises(_dicom(tmp_path / "a.dcm"), "width must be a positive", window=(-600.0, width))
    assert err.where == "field window" and HINT in str(err)


def test_multi_frame_is_rejected(tmp_path: Path) -> None:
    _raises(_dicom(tmp_path / "mf.dcm", frames=2), "single 2-D slice")


def test_unreadable_files(tmp_path: Path) -> None:
    _raises(tmp_path / "missing.dcm", "does not exist")
    (tmp_path / "junk.dcm").write_bytes(b"not a dicom file at all")
    _raises(tmp_path / "junk.dcm", "cannot read DICOM")
    (tmp_path / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    _raises(tmp_path / "junk.png", "cannot read image")
    Image.fromarray(np.zeros((2, 2), dtype=np.uint16)).save(tmp_path / "deep.png")
    _raises(tmp_path / "deep.png", "8-bit")
    Image.fromarray(np.zeros((2, 2), dtype=np.uint8)).save(tmp_path / "plain.png")
    with pytest.raises(DataError, match="not a DICOM file"):
        read_hu(tmp_path / "plain.png", row_hint=HINT)
