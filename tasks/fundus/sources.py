"""Several fundus datasets merged into one manifest, and near-duplicates across them (seed 002).

Seed 002 merged four public glaucoma datasets, each with its own label coding, and subsampled one
of them (168 glaucoma / 482 non-glaucoma) to temper its class imbalance. Public fundus sets also
re-publish each other's images, so one eye can appear in two sources under two patient ids; if
the copies fall on both sides of a split the validation AUC is inflated. :func:`near_duplicates`
finds such images by perceptual hash and :func:`unify_groups` gives every group one patient id, so
the patient-grouped splits keep each group on one side.

Merged manifest columns: ``path`` (absolute), ``label`` (0/1), ``patient_id`` (``<source>:<id>``,
or ``<source>:line<N>`` when the source has no group column), ``source``, ``line`` (in the
source's own CSV), then any other columns of the sources (missing values where a source lacks one).
"""

from __future__ import annotations

import itertools
import os
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import imagehash
import numpy as np
import pandas as pd
import yaml
from numpy.typing import NDArray
from PIL import Image
from pydantic import ValidationError
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from orchestrator.errors import DataError
from tasks.common.manifest import read_csv_rows, read_manifest
from tasks.detection.clean import hamming_pairs
from tasks.fundus.config import Source
from tasks.fundus.preprocess import crop_fundus

__all__ = [
    "Source",
    "duplicate_groups_report",
    "load_sources",
    "merge_sources",
    "near_duplicates",
    "unify_groups",
]

_NO_LABEL = "\x00"  # a column name no CSV has: read_manifest then leaves the labels to us
_FIRST = ("path", "label", "patient_id", "source", "line")


def load_sources(path: str | Path) -> list[Source]:
    """Sources from a JSON/YAML file ``{"sources": [...]}`` (as ``synth.generate`` writes).

    Relative ``manifest`` and ``image_root`` paths are taken relative to the file's folder.

    Raises:
        DataError: the file is unreadable or an entry is invalid (naming ``sources[i]``).
    """
    path = Path(path)
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise DataError(f"cannot read the sources file: {exc}", source=path) from exc
    if not isinstance(spec, dict) or not isinstance(spec.get("sources"), list):
        raise DataError('expected a mapping with a "sources" list', source=path)
    out: list[Source] = []
    for i, entry in enumerate(spec["sources"]):
        try:
            src = Source.model_validate(entry)
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = "".join(f".{p}" for p in first["loc"])
            raise DataError(first["msg"], source=path, where=f"field sources[{i}]{loc}") from exc
        rebased = {
            key: str(path.parent / value)
            for key in ("manifest", "image_root")
            if (value := getattr(src, key)) is not None and not Path(value).is_absolute()
        }
        out.append(src.model_copy(update=rebased))
    return out


def _check_source(src: Source) -> None:
    """Label map values and subsample keys are 0/1 (DataError naming the field)."""
    for raw, value in (src.label_map or {}).items():
        if value not in (0, 1):
            raise DataError(
                f"source {src.name!r}: label_map maps {raw!r} to {value}; expected 0 or 1",
                source=src.manifest,
                where="field label_map",
            )
    for key, count in (src.subsample or {}).items():
        if key not in ("0", "1") or count < 0:
            raise DataError(
                f"source {src.name!r}: subsample {key!r}: {count} must map label 0 or 1 to a "
                "row count >= 0",
                source=src.manifest,
                where="field subsample",
            )


def _labels(src: Source, label_map: dict[str, int], lines: list[int]) -> NDArray[np.int64]:
    """The mapped 0/1 label of each row (in file order) through ``label_map``."""
    header, rows = read_csv_rows(src.manifest)
    if src.label_column not in header:
        raise DataError(
            f"no {src.label_column!r} column; columns found: {header}",
            source=src.manifest,
            where="header",
        )
    col = header.index(src.label_column)
    raw = {line: fields[col] for line, fields in rows}
    out = np.empty(len(lines), dtype=np.int64)
    for i, line in enumerate(lines):
        if raw[line] not in label_map:
            raise DataError(
                f"label {raw[line]!r} is not in the label_map of source {src.name!r} "
                f"(known: {', '.join(map(repr, label_map))})",
                source=src.manifest,
                where=f"line {line}, column {src.label_column!r}",
            )
        out[i] = label_map[raw[line]]
    return out


def _subsample(frame: pd.DataFrame, src: Source, seed: int) -> pd.DataFrame:
    """Keep ``src.subsample[label]`` random rows of each listed label; others stay whole."""
    if not src.subsample:
        return frame
    # The source name enters the seed so two subsampled sources draw independently.
    rng = np.random.default_rng([seed, zlib.crc32(src.name.encode())])
    keep = np.ones(len(frame), dtype=bool)
    for key, count in sorted(src.subsample.items()):
        rows = np.flatnonzero(frame["label"].to_numpy() == int(key))
        if count > len(rows):
            raise DataError(
                f"source {src.name!r}: subsample asks for {count} rows of label {key}, the "
                f"manifest has {len(rows)}",
                source=src.manifest,
                where="field subsample",
            )
        keep[rows] = False
        keep[rng.choice(rows, size=count, replace=False)] = True
    return frame[keep].reset_index(drop=True)


def _read_source(src: Source, seed: int) -> pd.DataFrame:
    _check_source(src)
    frame = read_manifest(
        src.manifest,
        image_root=src.image_root,
        label_column=src.label_column if src.label_map is None else _NO_LABEL,
        path_column=src.path_column,
        group_column=src.group_column,
        require_labels=src.label_map is None,
    )
    if src.label_map is not None:
        frame = frame.drop(columns=[src.label_column], errors="ignore")
        frame.insert(1, "label", _labels(src, src.label_map, frame["line"].tolist()))
    if "patient_id" in frame:
        frame["patient_id"] = src.name + ":" + frame["patient_id"].astype(str)
    elif src.group_column not in (None, "patient_id"):  # asked for explicitly, so it must exist
        raise DataError(
            f"no {src.group_column!r} column (group_column of source {src.name!r})",
            source=src.manifest,
            where="header",
        )
    else:
        frame["patient_id"] = [f"{src.name}:line{line}" for line in frame["line"]]
    frame["source"] = src.name
    return _subsample(frame, src, seed)


def merge_sources(sources: list[Source], seed: int) -> pd.DataFrame:
    """Read, map, subsample and concatenate the sources into one manifest.

    Args:
        sources: the datasets; names must be distinct.
        seed: seed of the subsampling (fixed per sweep so every trial sees the same rows).

    Returns:
        The merged DataFrame (columns in the module docstring), sources in the given order.

    Raises:
        DataError: an unreadable manifest or image path, a raw label the mapping does not cover
            (naming manifest, line and column), a mapping value outside {0, 1} (``field
            label_map``), a bad subsample, or one image listed by two sources (naming both).
    """
    if not sources:
        raise DataError("no sources to merge", where="field sources")
    names = [s.name for s in sources]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DataError(f"source names must be distinct; repeated: {dup}", where="field sources")
    frames: list[pd.DataFrame] = []
    seen: dict[str, tuple[Source, int]] = {}
    for src in sources:
        frame = _read_source(src, seed)
        for path, line in zip(frame["path"], frame["line"], strict=True):
            if path in seen:
                other, other_line = seen[path]
                raise DataError(
                    f"image {path} is also listed by source {other.name!r} ({other.manifest}, "
                    f"line {other_line}); list each image in one source",
                    source=src.manifest,
                    where=f"line {line}",
                )
            seen[path] = (src, int(line))
        frames.append(frame)
    merged = pd.concat(frames, ignore_index=True)
    return merged[[*_FIRST, *(c for c in merged.columns if c not in _FIRST)]]


def _hash_bits(path: str, hash_size: int, border_threshold: int | None) -> NDArray[np.bool_]:
    try:
        with Image.open(path) as img:
            rgb = np.asarray(img.convert("RGB"))
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"cannot read image for hashing: {exc}", source=path) from exc
    if border_threshold is not None:  # sources differ in border size; hash the fundus itself
        rgb = crop_fundus(rgb, border_threshold)
    digest = imagehash.phash(Image.fromarray(rgb), hash_size=hash_size)
    return np.asarray(digest.hash, dtype=bool).ravel()


def near_duplicates(
    paths: Sequence[str],
    threshold: int = 20,
    hash_size: int = 16,
    *,
    border_threshold: int | None = 10,
) -> list[list[int]]:
    """Groups of images whose perceptual hashes (pHash) are within ``threshold`` bits.

    Chains join (a~b, b~c gives one group), as in ``tasks.detection.clean``. The defaults differ
    from the detection cleaner's 64-bit hash at distance 4: fundus photographs share one layout
    (bright disc, dark rim, vessel arcades), so 64-bit hashes of *different* eyes often match.
    Measured on synthetic sets of 400 images (64-128 px): at 64 bits, 13-25 unrelated pairs lay
    within 4 bits (enough to chain a 7,000-image merge into one giant group); at 256 bits no
    unrelated pair came closer than 34, while resized copies were mostly within 20 (small
    upscaled copies up to 46, which are missed). Check the group sizes in
    :func:`duplicate_groups_report`: groups of dozens of images mean the threshold is too loose.

    Args:
        paths: image files.
        threshold: largest Hamming distance between near-duplicates, of ``hash_size**2`` bits.
        hash_size: pHash side; 8 gives 64-bit hashes.
        border_threshold: crop the black border (pixels at most this bright) before hashing, so
            one image re-published with another border still matches; None hashes as is.

    Returns:
        Groups of two or more indices into ``paths``, each sorted, ordered by first index.
    """
    if threshold < 0 or hash_size < 2:
        raise ValueError(f"need threshold >= 0 and hash_size >= 2, got {threshold}, {hash_size}")
    if len(paths) < 2:
        return []
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        bits = np.stack(
            list(pool.map(lambda p: _hash_bits(str(p), hash_size, border_threshold), paths))
        )
    pairs = hamming_pairs(bits, threshold)
    n = len(paths)
    rows, cols = [a for a, _, _ in pairs], [b for _, b, _ in pairs]
    graph = coo_matrix((np.ones(len(pairs)), (rows, cols)), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    members: dict[int, list[int]] = {}
    for i, c in enumerate(comp.tolist()):
        members.setdefault(c, []).append(i)
    return sorted((m for m in members.values() if len(m) > 1), key=lambda m: m[0])


def duplicate_groups_report(
    df: pd.DataFrame,
    groups: list[list[int]] | None = None,
    *,
    threshold: int = 20,
    cross_source_only: bool = True,
) -> pd.DataFrame:
    """One row per member of each near-duplicate group of a merged manifest.

    Args:
        df: a merged manifest (:func:`merge_sources`).
        groups: row positions per group; None computes :func:`near_duplicates` of ``df.path``.
        threshold: pHash distance when ``groups`` is None.
        cross_source_only: list only groups that span two or more sources.

    Returns:
        Columns ``group`` (0..), ``n_sources``, ``sources`` (``a;c``), ``label_conflict``
        (members disagree on the label), then ``source``, ``path``, ``line``, ``label`` and
        ``patient_id`` of the member.
    """
    if groups is None:
        groups = near_duplicates(df["path"].astype(str).tolist(), threshold)
    columns = ["group", "n_sources", "sources", "label_conflict"]
    member_cols = [c for c in ("source", "path", "line", "label", "patient_id") if c in df]
    records: list[dict[str, Any]] = []
    listed = 0
    for members in groups:
        part = df.iloc[members]
        names = sorted(part["source"].astype(str).unique()) if "source" in part else []
        if cross_source_only and len(names) < 2:
            continue
        head = {
            "group": listed,
            "n_sources": len(names),
            "sources": ";".join(names),
            "label_conflict": "label" in part and part["label"].nunique() > 1,
        }
        for row in part[member_cols].itertuples(index=False):
            records.append({**head, **dict(zip(member_cols, row, strict=True))})
        listed += 1
    return pd.DataFrame(records, columns=[*columns, *member_cols])


def unify_groups(df: pd.DataFrame, groups: list[list[int]]) -> pd.DataFrame:
    """A copy of ``df`` whose ``patient_id`` is shared by every near-duplicate group.

    Patients are joined transitively: if an image of patient A duplicates one of patient B, all
    images of A and B get one id (the smallest of theirs), because each patient must stay on one
    side of a split. The old id is kept in ``original_patient_id``.

    Args:
        df: a manifest with ``patient_id`` (rows without one count as their own patient).
        groups: row positions per group, e.g. from :func:`near_duplicates`.
    """
    out = df.copy()
    ids = (
        out["patient_id"].astype(str).to_numpy()
        if "patient_id" in out
        else np.array([f"row{i}" for i in range(len(out))])
    )
    codes, names = pd.factorize(ids, sort=True)  # sorted: code order = id order
    rows, cols = [], []
    for members in groups:
        for a, b in itertools.pairwise(members):
            rows.append(codes[a])
            cols.append(codes[b])
    n = len(names)
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    smallest = pd.Series(np.arange(n)).groupby(comp).transform("min").to_numpy()
    out["original_patient_id"] = ids
    out["patient_id"] = np.asarray(names)[smallest[codes]]
    return out
