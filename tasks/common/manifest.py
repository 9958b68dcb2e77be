"""Image manifests (CSV: one row per image) and image loading, with errors a user can act on.

Every problem is raised as :class:`orchestrator.errors.DataError` naming the file and the line as
the user sees it in an editor: the header is line 1, the first data row is line 2. We parse with the
``csv`` module instead of pandas so that these line numbers stay exact even with blank lines or
quoted fields that span lines.

The returned DataFrame has the columns ``path`` (absolute, as ``str``), ``label`` (int 0/1, absent
when ``require_labels=False`` and the file has no label column), ``patient_id`` (``str``, only when
the group column exists), ``line`` (the file line of the row, used by later error messages) and any
other columns of the file (numeric where every value parses as a number, else ``str``).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from PIL import Image

from orchestrator.errors import DataError

__all__ = [
    "load_image",
    "load_images",
    "parse_label",
    "read_csv_rows",
    "read_manifest",
    "verify_images",
]

_SHOW_MISSING = 5  # how many missing files to name before summarising with a count
_RESERVED = ("path", "label", "patient_id", "line")


def read_csv_rows(
    csv_path: str | Path, what: str = "manifest"
) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and ``(line, fields)`` per non-blank data row, fields stripped of whitespace.

    ``line`` is the 1-based line in the file where the row starts. Shared by every CSV reader
    (manifests, prediction files) so that all messages count lines the same way.

    Raises:
        DataError: the file is missing, not UTF-8 CSV, empty, has no data rows, or a row has a
            different number of fields than the header (``what`` names the file's role).
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        problem = "is a directory, not a CSV file" if csv_path.is_dir() else "does not exist"
        raise DataError(f"{what} file {problem}", source=csv_path)
    rows: list[tuple[int, list[str]]] = []
    header: list[str] | None = None
    end = 0  # line where the previous record ended; a record may span lines (quoted newlines)
    try:
        # utf-8-sig: spreadsheet programs often write a byte-order mark before the header.
        with csv_path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            for fields in reader:
                start, end = end + 1, reader.line_num
                if not any(f.strip() for f in fields):
                    continue  # blank line
                if header is None:
                    header = [f.strip() for f in fields]
                else:
                    rows.append((start, [f.strip() for f in fields]))
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{what} is not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8 CSV",
            source=csv_path,
        ) from exc
    except csv.Error as exc:
        raise DataError(f"not valid CSV: {exc}", source=csv_path, where=f"line {end + 1}") from exc
    except OSError as exc:
        raise DataError(f"cannot read {what}: {exc}", source=csv_path) from exc
    if header is None:
        raise DataError(f"{what} is empty: expected a header line and data rows", source=csv_path)
    if not rows:
        raise DataError(f"{what} has a header but no data rows", source=csv_path)
    dup = sorted({c for c in header if header.count(c) > 1})
    if dup:
        raise DataError(f"duplicate column names in header: {dup}", source=csv_path, where="header")
    for line, fields in rows:
        if len(fields) != len(header):
            raise DataError(
                f"expected {len(header)} fields (as in the header), found {len(fields)}",
                source=csv_path,
                where=f"line {line}",
            )
    return header, rows


def parse_label(text: str, csv_path: str | Path, line: int, column: str) -> int:
    """Parse a 0/1 label cell (``"1.0"`` accepted); DataError naming the line and column."""
    where = f"line {line}, column {column!r}"
    if text == "":
        raise DataError("empty label; expected 0 or 1", source=csv_path, where=where)
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    # "1.0" is accepted because spreadsheets and pandas float columns write labels that way.
    if not value.is_integer():
        raise DataError(
            f"label {text!r} is not an integer; expected 0 or 1", source=csv_path, where=where
        )
    if value not in (0.0, 1.0):
        raise DataError(f"label {text!r} is outside {{0, 1}}", source=csv_path, where=where)
    return int(value)


def _column_values(name: str, values: list[str]) -> pd.Series:
    try:
        return pd.Series(pd.to_numeric(pd.Series(values)), name=name)
    except (ValueError, TypeError):
        return pd.Series(values, name=name, dtype=object)


def _check_missing_files(csv_path: Path, paths: list[str], lines: list[int], column: str) -> None:
    missing = [(ln, p) for ln, p in zip(lines, paths, strict=True) if not os.path.isfile(p)]
    if not missing:
        return
    shown = "; ".join(f"line {ln}: {p}" for ln, p in missing[:_SHOW_MISSING])
    more = f" (and {len(missing) - _SHOW_MISSING} more)" if len(missing) > _SHOW_MISSING else ""
    raise DataError(
        f"{len(missing)} of {len(paths)} image files do not exist: {shown}{more}",
        source=csv_path,
        where=f"line {missing[0][0]}, column {column!r}",
    )


def read_manifest(
    csv_path: str | Path,
    *,
    image_root: str | Path | None = None,
    label_column: str = "label",
    path_column: str = "path",
    group_column: str | None = "patient_id",
    require_labels: bool = True,
) -> pd.DataFrame:
    """Read and validate an image manifest CSV.

    Args:
        csv_path: the CSV file.
        image_root: folder that relative image paths are relative to; default: the CSV's folder.
        label_column: column with 0/1 labels.
        path_column: column with image paths.
        group_column: optional column with a patient (group) id; ignored when absent.
        require_labels: when False a file without a label column is accepted (inference).

    Returns:
        A DataFrame as described in the module docstring, in file order.

    Raises:
        DataError: naming the file, the line and the column of the first problem.
    """
    csv_path = Path(csv_path)
    header, rows = read_csv_rows(csv_path)
    if path_column not in header:
        raise DataError(
            f"no {path_column!r} column; columns found: {header}", source=csv_path, where="header"
        )
    has_labels = label_column in header
    if require_labels and not has_labels:
        raise DataError(
            f"no {label_column!r} column; columns found: {header}", source=csv_path, where="header"
        )
    base = Path(image_root) if image_root is not None else csv_path.parent
    base = Path(os.path.abspath(base))
    lines = [ln for ln, _ in rows]
    col = {name: i for i, name in enumerate(header)}

    paths: list[str] = []
    seen: dict[str, int] = {}
    for line, fields in rows:
        raw = fields[col[path_column]]
        where = f"line {line}, column {path_column!r}"
        if not raw:
            raise DataError("empty image path", source=csv_path, where=where)
        full = os.path.normpath(os.path.join(base, os.path.expanduser(raw)))
        if full in seen:
            raise DataError(
                f"duplicate image path {raw!r} (first on line {seen[full]})",
                source=csv_path,
                where=where,
            )
        seen[full] = line
        paths.append(full)

    data: dict[str, Any] = {"path": paths}
    if has_labels:
        data["label"] = np.array(
            [parse_label(f[col[label_column]], csv_path, ln, label_column) for ln, f in rows],
            dtype=np.int64,
        )
    if group_column is not None and group_column in header:
        groups = [f[col[group_column]] for _, f in rows]
        empty = [ln for ln, g in zip(lines, groups, strict=True) if not g]
        if empty:
            raise DataError(
                "empty group id", source=csv_path, where=f"line {empty[0]}, column {group_column!r}"
            )
        data["patient_id"] = groups
    data["line"] = np.array(lines, dtype=np.int64)
    used = {path_column, label_column, group_column}
    for name in header:
        if name not in used and name not in _RESERVED:
            data[name] = _column_values(name, [f[col[name]] for _, f in rows])

    _check_missing_files(csv_path, paths, lines, path_column)
    frame = pd.DataFrame(data)
    if "patient_id" in frame:
        frame["patient_id"] = frame["patient_id"].astype(str)
    return frame


def _image_where(row_hint: str | int | np.integer[Any] | None) -> str | None:
    # np.integer too: callers often pass a value straight from the DataFrame's `line` column.
    if isinstance(row_hint, (int, np.integer)):
        return f"manifest line {int(row_hint)}"
    return row_hint


# What PIL raises for missing, truncated, corrupt or non-image files (UnidentifiedImageError is an
# OSError; some decoders raise SyntaxError/EOFError/ValueError on garbage).
_IMAGE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


def load_image(
    path: str | Path, size: int | None, *, row_hint: str | int | np.integer[Any] | None = None
) -> NDArray[np.uint8]:
    """Load an image as RGB uint8 ``(H, W, 3)``, resized to ``size x size`` (bilinear) if given.

    Args:
        path: image file.
        size: output height and width in pixels; ``None`` keeps the file's resolution.
        row_hint: where the image was listed, for the message: an int is a manifest line number,
            a str is used as is (e.g. ``"labels.csv line 12"``).

    Raises:
        DataError: the file is missing, not an image, corrupt or truncated.
    """
    if size is not None and size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size}")
    where = _image_where(row_hint)
    if not os.path.isfile(path):
        raise DataError("image file does not exist", source=path, where=where)
    try:
        # verify() checks structure/CRCs without decoding; load() then catches truncated data.
        # verify() leaves the image unusable, hence the second open.
        with Image.open(path) as probe:
            probe.verify()
        with Image.open(path) as img:
            img.load()
            rgb = img.convert("RGB")
    except _IMAGE_ERRORS as exc:
        raise DataError(
            f"cannot read image (corrupt, truncated or not an image): {exc}",
            source=path,
            where=where,
        ) from exc
    if size is not None and rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)


def load_images(df: pd.DataFrame, size: int) -> NDArray[np.uint8]:
    """Load every ``df["path"]`` into an ``(N, size, size, 3)`` uint8 array (file order)."""
    out = np.empty((len(df), size, size, 3), dtype=np.uint8)
    lines = df["line"].tolist() if "line" in df else [None] * len(df)
    for i, (path, line) in enumerate(zip(df["path"].tolist(), lines, strict=True)):
        out[i] = load_image(path, size, row_hint=int(line) if line is not None else None)
    return out


def verify_images(df: pd.DataFrame, *, source: str | Path | None = None) -> None:
    """Check that every ``df["path"]`` opens as an image, without decoding the pixels.

    Cheap enough for a pre-flight check of large datasets (PIL ``verify()`` reads headers and, for
    PNG, chunk checksums); truncated pixel data can still surface later in :func:`load_image`.

    Raises:
        DataError: naming ``source`` (the manifest), the first bad files with their lines, and the
            count of bad files.
    """
    lines = df["line"].tolist() if "line" in df else [None] * len(df)
    bad: list[tuple[int | None, str, str]] = []
    for path, line in zip(df["path"].tolist(), lines, strict=True):
        try:
            with Image.open(path) as img:
                img.verify()
        except _IMAGE_ERRORS as exc:
            bad.append(
                (None if line is None else int(line), str(path), str(exc) or type(exc).__name__)
            )
    if not bad:
        return
    shown = "; ".join(
        (f"line {ln}: " if ln is not None else "") + f"{p} ({why})"
        for ln, p, why in bad[:_SHOW_MISSING]
    )
    more = f" (and {len(bad) - _SHOW_MISSING} more)" if len(bad) > _SHOW_MISSING else ""
    first = bad[0][0]
    raise DataError(
        f"{len(bad)} of {len(df)} images cannot be read (missing, corrupt or not an image): "
        f"{shown}{more}",
        source=source if source is not None else bad[0][1],
        where=f"line {first}, column 'path'" if first is not None and source is not None else None,
    )
