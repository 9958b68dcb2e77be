"""Read CT slices from DICOM (raw HU, windowed here) or from already-windowed PNG/JPEG files.

DICOM files are recognised by their ``.dcm``/``.dicom`` suffix or by the ``DICM`` marker after
the 128-byte preamble. Pixel values are rescaled to Hounsfield units with pydicom's
``apply_modality_lut`` (RescaleSlope/RescaleIntercept, or a Modality LUT), then windowed with
``v = clip((HU - (level - width / 2)) / width, 0, 1)``, the same formula as
`tasks.abn.synth.hu_to_pixel`. MONOCHROME1 slices (minimum value shown white) are inverted after
windowing so that the result looks as the file is displayed; `read_hu` never inverts.

Every problem is a :class:`orchestrator.errors.DataError` naming the file and, when given, the
manifest row (``row_hint``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from orchestrator.errors import DataError

__all__ = ["LUNG_WINDOW", "is_dicom", "read_hu", "read_slice", "write_ct_slice"]

LUNG_WINDOW = (-600.0, 1500.0)  # (level, width) in HU
CT_INTERCEPT = -1024.0  # what write_ct_slice stores: HU + 1024 as uint16
_DICOM_SUFFIXES = (".dcm", ".dicom")
_PHOTOMETRIC = ("MONOCHROME1", "MONOCHROME2")
_PIXEL_ELEMENTS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_HIGH_DEPTH_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")
# What PIL raises for truncated, corrupt or non-image files.
_IMAGE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)
# What pydicom's pixel decoding raises for missing elements, handlers or broken data.
_PIXEL_ERRORS = (AttributeError, KeyError, NotImplementedError, RuntimeError, TypeError, ValueError)

FloatImage = NDArray[np.float32]


def is_dicom(path: str | Path) -> bool:
    """True for a ``.dcm``/``.dicom`` file name or a file with the DICOM preamble marker."""
    path = Path(path)
    if path.suffix.lower() in _DICOM_SUFFIXES:
        return True
    try:
        with path.open("rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def _check_file(path: Path, row_hint: str | None) -> None:
    if not path.is_file():
        problem = "is a directory, not an image file" if path.is_dir() else "does not exist"
        raise DataError(f"image file {problem}", source=path, where=row_hint)


def _dataset(path: Path, row_hint: str | None) -> Any:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path)
    except (InvalidDicomError, OSError, EOFError, ValueError, KeyError, TypeError) as exc:
        raise DataError(
            f"cannot read DICOM file (corrupt, truncated or not DICOM): {exc}",
            source=path,
            where=row_hint,
        ) from exc


def _hu(ds: Any, path: Path, row_hint: str | None) -> FloatImage:
    """The slice's pixels rescaled to HU, after checking pixel data and photometry."""
    from pydicom.pixels import apply_modality_lut

    if not any(name in ds for name in _PIXEL_ELEMENTS):
        raise DataError(
            "DICOM file has no pixel data (no PixelData element): expected an image slice, "
            "e.g. not a structured report or a DICOMDIR",
            source=path,
            where=row_hint,
        )
    photometric = str(ds.get("PhotometricInterpretation", "")).strip() or "missing"
    if photometric not in _PHOTOMETRIC:
        raise DataError(
            f"unsupported PhotometricInterpretation {photometric!r}: expected MONOCHROME2 or "
            "MONOCHROME1 (a grey CT slice)",
            source=path,
            where=row_hint,
        )
    try:
        pixels = ds.pixel_array
        hu = apply_modality_lut(pixels, ds)
    except _PIXEL_ERRORS as exc:
        raise DataError(
            f"cannot decode DICOM pixel data: {exc}", source=path, where=row_hint
        ) from exc
    if hu.ndim != 2:
        raise DataError(
            f"expected a single 2-D slice, found pixel data of shape {tuple(hu.shape)} "
            "(multi-frame or volume files: export one slice per file)",
            source=path,
            where=row_hint,
        )
    return np.asarray(hu, dtype=np.float32)


def _file_window(ds: Any, path: Path, row_hint: str | None) -> tuple[float, float]:
    """The DICOM's own WindowCenter/WindowWidth (first value when several are given)."""
    from pydicom.multival import MultiValue

    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center is None or width is None:
        listed = f" (slice listed at {row_hint})" if row_hint else ""
        raise DataError(
            f"no window given and the DICOM has no WindowCenter/WindowWidth{listed}; pass a "
            "window (level, width), e.g. the lung window (-600, 1500)",
            source=path,
            where="field window",
        )
    values = [v[0] if isinstance(v, MultiValue) else v for v in (center, width)]
    return float(values[0]), float(values[1])


def _apply_window(hu: FloatImage, window: tuple[float, float]) -> FloatImage:
    level, width = window
    low = level - width / 2.0
    return np.clip((hu - low) / width, 0.0, 1.0).astype(np.float32)


def _check_window(window: tuple[float, float], path: Path, row_hint: str | None) -> None:
    level, width = window
    if not (np.isfinite(level) and np.isfinite(width)) or width <= 0:
        listed = f" (slice listed at {row_hint})" if row_hint else ""
        raise DataError(
            f"window (level, width) = ({level}, {width}){listed}: the width must be a positive "
            "number of HU, e.g. the lung window (-600, 1500)",
            source=path,
            where="field window",
        )


def _read_picture(path: Path, row_hint: str | None) -> FloatImage:
    """An 8-bit PNG/JPEG as grey [0, 1] (RGB -> ITU-R 601 luminance, as PIL's ``L`` mode)."""
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in _HIGH_DEPTH_MODES:
                raise DataError(
                    f"{img.mode!r} image (16-bit or float): expected an 8-bit grey or RGB image "
                    "already windowed; give raw CT values as DICOM instead",
                    source=path,
                    where=row_hint,
                )
            grey = img.convert("L")
    except _IMAGE_ERRORS as exc:
        raise DataError(
            f"cannot read image (corrupt, truncated or not an image): {exc}",
            source=path,
            where=row_hint,
        ) from exc
    return np.asarray(grey, dtype=np.float32) / 255.0


def read_slice(
    path: str | Path,
    window: tuple[float, float] | None = LUNG_WINDOW,
    row_hint: str | None = None,
) -> FloatImage:
    """One slice as float32 ``[H, W]`` in [0, 1].

    Args:
        path: a DICOM file (raw values) or an 8-bit PNG/JPEG (assumed already windowed, so
            ``window`` does not apply to it).
        window: ``(level, width)`` in HU for DICOM; None uses the file's own
            WindowCenter/WindowWidth.
        row_hint: where the file was listed, e.g. ``"labels.csv line 12"``, for messages.

    Raises:
        DataError: missing or unreadable file, DICOM without pixel data, unsupported
            PhotometricInterpretation, multi-frame data, a window width <= 0
            (``where="field window"``), or a 16-bit PNG.
    """
    path = Path(path)
    _check_file(path, row_hint)
    if window is not None:
        _check_window(window, path, row_hint)
    if not is_dicom(path):
        return _read_picture(path, row_hint)
    ds = _dataset(path, row_hint)
    hu = _hu(ds, path, row_hint)
    if window is None:
        window = _file_window(ds, path, row_hint)
        _check_window(window, path, row_hint)
    out = _apply_window(hu, window)
    if str(ds.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1":
        out = 1.0 - out  # low values are displayed white
    return out


def read_hu(path: str | Path, row_hint: str | None = None) -> FloatImage:
    """A DICOM slice in Hounsfield units (rescaled, not windowed, never inverted), float32.

    Raises:
        DataError: the file is missing, not DICOM, or fails the checks of `read_slice`.
    """
    path = Path(path)
    _check_file(path, row_hint)
    if not is_dicom(path):
        raise DataError(
            "not a DICOM file (no .dcm suffix and no DICM preamble marker): HU values need "
            "DICOM; an 8-bit PNG holds windowed values only",
            source=path,
            where=row_hint,
        )
    return _hu(_dataset(path, row_hint), path, row_hint)


def write_ct_slice(
    path: str | Path,
    hu: NDArray[np.floating[Any]],
    patient_id: str = "anonymous",
    instance: int = 1,
    *,
    uid_key: str | None = None,
    window: tuple[float, float] = LUNG_WINDOW,
) -> None:
    """Write a 2-D HU array as a CT Image Storage DICOM file.

    Stored values are ``round(HU) + 1024`` as uint16 (clipped to 0..65535) with RescaleSlope 1,
    RescaleIntercept -1024, MONOCHROME2, explicit VR little endian, and ``window`` as
    WindowCenter/WindowWidth. Used by synthetic data generators and tests.

    Args:
        path: output file.
        hu: ``[H, W]`` Hounsfield units.
        patient_id: PatientID.
        instance: InstanceNumber (the slice's index in its series).
        uid_key: makes the study/series/instance UIDs deterministic (derived from the key, the
            patient and the instance), so the same arguments give byte-identical files; None
            gives random UIDs.
        window: WindowCenter/WindowWidth written to the file.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid

    def uid(kind: str) -> UID:
        sources = None if uid_key is None else [f"{uid_key}-{patient_id}-{kind}"]
        return generate_uid(entropy_srcs=sources)

    if hu.ndim != 2:
        raise ValueError(f"expected a 2-D HU array, got shape {hu.shape}")
    sop = uid(f"instance-{instance}")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = CTImageStorage, sop, "CT"
    ds.PatientID, ds.InstanceNumber = patient_id, instance
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uid("study"), uid("series")
    ds.Rows, ds.Columns = hu.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = CT_INTERCEPT, 1, "HU"
    ds.WindowCenter, ds.WindowWidth = window
    stored = np.clip(np.rint(hu) - CT_INTERCEPT, 0, 65535).astype(np.uint16)
    ds.PixelData = stored.tobytes()
    ds.save_as(path, enforce_file_format=True)
