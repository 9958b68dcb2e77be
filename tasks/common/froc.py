"""Lesion-level FROC: the one implementation used by training, `medsweep eval froc` and reports.

Seed 001 (FDG-PET/CT anomaly detection) thresholds a z-score map at 3.0, takes the connected
components as candidates and reports the sensitivity at a number of false positives per case
(77.8 % at 3 FP/case). Rules used here:

* A candidate is a connected component of ``z >= threshold`` (``scipy.ndimage.label``); its
  ``score`` is its peak z. Works for 2-D slices and 3-D volumes alike.
* ``hit="overlap"``: a candidate hits every lesion it shares at least one pixel with.
  ``hit="centre"``: it hits the lesion containing its *peak* (not its centroid: the peak always
  lies inside the component, a centroid of a crescent-shaped component may not).
* A lesion hit by several candidates counts once, at the score of its best candidate; the other
  candidates on it are neither TP nor FP (as in seed 000's lesion rules). A candidate that hits no
  lesion is a false positive.
* The operating point sweeps over every candidate score (a candidate counts when
  ``score >= t``). The sensitivity at ``r`` FP/case is the highest sensitivity whose mean FP per
  case is ``<= r``, 0 when no operating point qualifies, NaN when there are no lesions.
* Ground truth is a binary mask per case (0/1, bool or 0/255) whose connected components (full
  connectivity) are the lesions, or with ``gt="labels"`` a label map (0 = background).
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from orchestrator.errors import DataError

__all__ = ["Candidate", "FrocResult", "candidates", "froc", "froc_figure", "lesion_labels", "main"]

DEFAULT_FPS: tuple[float, ...] = (0.5, 1, 2, 3, 4, 8)
Hit = Literal["overlap", "centre"]


@dataclass(frozen=True, eq=False)
class Candidate:
    """One connected component of a thresholded z-map.

    Attributes:
        score: peak z inside the component.
        peak: index of the peak voxel.
        centroid: mean index of the component's voxels.
        bbox: ``(min_0, ..., min_n, max_0, ..., max_n)`` with exclusive maxima (skimage style).
        coords: ``(n_voxels, ndim)`` indices of the component.
        shape: shape of the z-map it came from (checked against the lesion mask).
    """

    score: float
    peak: tuple[int, ...]
    centroid: tuple[float, ...]
    bbox: tuple[int, ...]
    coords: NDArray[np.intp]
    shape: tuple[int, ...]

    @property
    def area(self) -> int:
        """Number of pixels (voxels)."""
        return int(self.coords.shape[0])

    def mask(self) -> NDArray[np.bool_]:
        """Boolean mask of the component, in the z-map's shape."""
        out = np.zeros(self.shape, dtype=bool)
        out[tuple(self.coords.T)] = True
        return out


def candidates(z: NDArray[Any], threshold: float = 3.0, connectivity: int = 2) -> list[Candidate]:
    """Connected components of ``z >= threshold``, highest score first.

    Args:
        z: z-score map (2-D or 3-D; NaN never exceeds the threshold).
        threshold: seed 001 uses 3.0.
        connectivity: as ``scipy.ndimage.generate_binary_structure``: 1 = faces only,
            ``z.ndim`` = full (2 in 2-D = 8-connectivity).
    """
    z = np.asarray(z)
    if z.ndim < 1 or not np.issubdtype(z.dtype, np.number):
        raise ValueError(f"z must be a numeric array, got dtype {z.dtype}, shape {z.shape}")
    if not 1 <= connectivity <= z.ndim:
        raise ValueError(f"connectivity must be in 1..{z.ndim} for {z.ndim}-D maps")
    structure = ndimage.generate_binary_structure(z.ndim, connectivity)
    labels, _ = ndimage.label(z >= threshold, structure=structure)
    out: list[Candidate] = []
    for i, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        local = np.argwhere(labels[sl] == i)
        start = np.array([s.start for s in sl])
        coords = local + start
        values = z[tuple(coords.T)]
        k = int(np.argmax(values))
        out.append(
            Candidate(
                score=float(values[k]),
                peak=tuple(int(v) for v in coords[k]),
                centroid=tuple(float(v) for v in coords.mean(axis=0)),
                bbox=tuple(int(s.start) for s in sl) + tuple(int(s.stop) for s in sl),
                coords=coords,
                shape=tuple(z.shape),
            )
        )
    out.sort(key=lambda c: -c.score)
    return out


def lesion_labels(
    mask: NDArray[Any],
    *,
    name: str = "mask",
    source: str | Path | None = None,
    where: str | None = None,
) -> tuple[NDArray[np.int32], int]:
    """Label the lesions of a binary mask (values {0,1}, bool or {0,255}); full connectivity.

    Raises:
        DataError: the mask has other values (``name`` and ``source`` say which mask).
    """
    mask = np.asarray(mask)
    values = np.unique(mask)
    found = set(values.tolist())
    if mask.dtype != bool and not (found <= {0, 1} or found <= {0, 255}):
        shown = ", ".join(str(v) for v in values[:6]) + (", ..." if values.size > 6 else "")
        raise DataError(
            f"{name} is not a binary lesion mask: values {shown}; expected 0/1 or 0/255",
            source=source,
            where=where,
        )
    structure = ndimage.generate_binary_structure(max(mask.ndim, 1), max(mask.ndim, 1))
    labels, n = ndimage.label(mask > 0, structure=structure)
    return labels.astype(np.int32), int(n)


@dataclass(frozen=True)
class FrocResult:
    """FROC curve and its summary.

    ``thresholds`` are the distinct candidate scores, descending; ``mean_fps[i]`` and
    ``sensitivity[i]`` hold for candidates with ``score >= thresholds[i]``.
    """

    thresholds: NDArray[np.float64]
    mean_fps: NDArray[np.float64]
    sensitivity: NDArray[np.float64]
    fps_per_case: tuple[float, ...]
    sensitivity_at: tuple[float, ...]
    n_cases: int
    n_lesions: int
    n_candidates: int
    hit: str

    @property
    def mean_sensitivity(self) -> float:
        """Mean of ``sensitivity_at`` (LUNA16's CPM when the rates are its 1/8, 1/4, ..., 8)."""
        return float(np.mean(self.sensitivity_at)) if self.sensitivity_at else math.nan

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (NaN where undefined, as in the other metrics)."""
        return {
            "n_cases": self.n_cases,
            "n_lesions": self.n_lesions,
            "n_candidates": self.n_candidates,
            "hit": self.hit,
            "sensitivity_at": {
                f"{r:g}": s for r, s in zip(self.fps_per_case, self.sensitivity_at, strict=True)
            },
            "mean_sensitivity": self.mean_sensitivity,
            "curve": {
                "threshold": self.thresholds.tolist(),
                "mean_fp_per_case": self.mean_fps.tolist(),
                "sensitivity": self.sensitivity.tolist(),
            },
        }


def _case_labels(gt: NDArray[Any], kind: str, name: str) -> tuple[NDArray[np.int32], int]:
    if kind == "mask":
        return lesion_labels(gt, name=name)
    gt = np.asarray(gt)
    if not np.issubdtype(gt.dtype, np.integer) or (gt.size and gt.min() < 0):
        raise DataError(f"{name}: a label map must hold non-negative integers, got {gt.dtype}")
    ids, inverse = np.unique(gt, return_inverse=True)  # relabel to 1..n, keeping 0
    offset = 0 if ids.size and ids[0] == 0 else 1
    return (inverse.reshape(gt.shape) + offset).astype(np.int32), int(ids.size - (1 - offset))


def _hits(c: Candidate, labels: NDArray[np.int32], hit: str) -> NDArray[np.int32]:
    if hit == "centre":
        lesion = labels[c.peak]
        return np.array([lesion] if lesion else [], dtype=np.int32)
    found = np.unique(labels[tuple(c.coords.T)])
    return found[found > 0]


def froc(
    cases: Sequence[tuple[Sequence[Candidate], NDArray[Any]]],
    fps_per_case: Sequence[float] = DEFAULT_FPS,
    hit: Hit = "overlap",
    *,
    gt: Literal["mask", "labels"] = "mask",
    names: Sequence[str] | None = None,
) -> FrocResult:
    """Lesion-level FROC over cases of ``(candidates, lesion mask)`` (rules: module docstring).

    Args:
        cases: per case its candidates and its ground truth (binary mask, or label map with
            ``gt="labels"``), in the candidates' z-map shape.
        fps_per_case: FP rates at which to report the sensitivity.
        hit: ``"overlap"`` or ``"centre"`` (the candidate's peak inside the lesion).
        gt: how to read the ground truth arrays.
        names: case names for error messages (default ``"case <index>"``).

    Raises:
        DataError: a mask is not binary, or a case's candidates come from a map of another shape.
        ValueError: no cases, or a bad ``hit``/``gt``.
    """
    if hit not in ("overlap", "centre"):
        raise ValueError(f"hit must be 'overlap' or 'centre', got {hit!r}")
    if gt not in ("mask", "labels"):
        raise ValueError(f"gt must be 'mask' or 'labels', got {gt!r}")
    if not cases:
        raise ValueError("no cases")
    best: list[float] = []  # per lesion: score of its best candidate (-inf: missed)
    fp_scores: list[float] = []
    all_scores: list[float] = []
    for i, (cands, truth) in enumerate(cases):
        name = names[i] if names is not None else f"case {i}"
        labels, n = _case_labels(truth, gt, name)
        lesion_best = np.full(n + 1, -np.inf)
        for c in cands:
            if c.shape != labels.shape:
                raise DataError(
                    f"{name}: candidates come from a z-map of shape {c.shape} but the lesion "
                    f"mask has shape {labels.shape}"
                )
            all_scores.append(c.score)
            ids = _hits(c, labels, hit)
            if ids.size:
                lesion_best[ids] = np.maximum(lesion_best[ids], c.score)
            else:
                fp_scores.append(c.score)
        best.extend(lesion_best[1:].tolist())
    rates = tuple(float(r) for r in fps_per_case)
    return _curve(np.array(best), np.array(fp_scores), np.array(all_scores), len(cases), rates, hit)


def _curve(
    best: NDArray[np.float64],
    fp_scores: NDArray[np.float64],
    all_scores: NDArray[np.float64],
    n_cases: int,
    rates: tuple[float, ...],
    hit: str,
) -> FrocResult:
    thresholds = np.unique(all_scores)[::-1]
    # Count of values >= t for each threshold, via sorted arrays.
    fp_counts = fp_scores.size - np.searchsorted(np.sort(fp_scores), thresholds, side="left")
    tp_counts = best.size - np.searchsorted(np.sort(best), thresholds, side="left")
    sens = tp_counts / best.size if best.size else np.full(thresholds.size, math.nan)
    at = []
    for r in rates:
        ok = fp_counts <= r * n_cases + 1e-9  # compare counts: no rounding in FP/case
        if not best.size:
            at.append(math.nan)
        else:
            at.append(float(sens[ok].max()) if ok.any() else 0.0)
    return FrocResult(
        thresholds=thresholds.astype(np.float64),
        mean_fps=(fp_counts / n_cases).astype(np.float64),
        sensitivity=np.asarray(sens, dtype=np.float64),
        fps_per_case=rates,
        sensitivity_at=tuple(at),
        n_cases=n_cases,
        n_lesions=int(best.size),
        n_candidates=int(all_scores.size),
        hit=hit,
    )


def froc_figure(result: FrocResult) -> Any:
    """A matplotlib Figure of the FROC curve with the reported operating points marked."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 4), dpi=100)
    ax = fig.add_subplot()
    x = np.concatenate([[0.0], result.mean_fps])
    y = np.concatenate([[0.0], result.sensitivity])
    ax.step(x, y, where="post", label="FROC")
    ax.plot(result.fps_per_case, result.sensitivity_at, "o", label="reported rates")
    ax.set_xlabel("mean false positives per case")
    ax.set_ylabel("lesion sensitivity")
    ax.set_ylim(0, 1.02)
    if result.fps_per_case:
        ax.set_xlim(0, max(result.fps_per_case) * 1.1)
    ax.set_title(f"{result.n_lesions} lesions in {result.n_cases} cases ({result.hit})")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    return fig


# --- `medsweep eval froc` --------------------------------------------------------------------
_CLI_HELP = """Lesion-level FROC of z-score maps against lesion masks.

--gt is a CSV with columns `case,mask` or a folder of masks; --pred is a CSV with columns
`case,zmap` or a folder of z-maps. Paths in a CSV are relative to the CSV's folder; in a folder
the case is the file name without extension. Masks are PNG (0/1 or 0/255, 8 or 16 bit) or .npy;
z-maps are .npy float arrays of the mask's shape (2-D or 3-D). Every case must have both."""


def _read_listing(
    path: Path, column: str, exts: tuple[str, ...]
) -> dict[str, tuple[Path, str | None]]:
    """``{case: (file, where)}`` from a CSV (``case,<column>``) or a folder of files."""
    from tasks.common.manifest import read_csv_rows

    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in exts)
        if not files:
            raise DataError(f"folder has no {'/'.join(exts)} files", source=path)
        return {p.stem: (p, None) for p in files}
    header, rows = read_csv_rows(path, what=f"{column} list")
    missing = [c for c in ("case", column) if c not in header]
    if missing:
        raise DataError(f"missing column(s) {missing}; found {header}", source=path, where="header")
    out: dict[str, tuple[Path, str | None]] = {}
    ci, fi = header.index("case"), header.index(column)
    for line, fields in rows:
        case, rel = fields[ci], fields[fi]
        if not case or not rel:
            raise DataError(f"empty 'case' or {column!r}", source=path, where=f"line {line}")
        if case in out:
            raise DataError(f"duplicate case {case!r}", source=path, where=f"line {line}")
        out[case] = (path.parent / rel, f"{path} line {line}")
    return out


def _load_array(file: Path, where: str | None) -> NDArray[Any]:
    if not file.is_file():
        raise DataError("file does not exist", source=file, where=where)
    try:
        if file.suffix.lower() == ".npy":
            return np.asarray(np.load(file, allow_pickle=False))
        from PIL import Image

        with Image.open(file) as img:
            return np.asarray(img)
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"cannot read array or image: {exc}", source=file, where=where) from exc


def _load_cases(gt: Path, pred: Path) -> list[tuple[str, Path, str | None, Path, str | None]]:
    masks = _read_listing(gt, "mask", (".png", ".npy"))
    zmaps = _read_listing(pred, "zmap", (".npy",))
    for a, b, src, other in ((masks, zmaps, pred, gt), (zmaps, masks, gt, pred)):
        lost = [c for c in a if c not in b]
        if lost:
            shown = ", ".join(f"{c!r} ({a[c][1] or a[c][0]})" for c in lost[:5])
            more = f" and {len(lost) - 5} more" if len(lost) > 5 else ""
            raise DataError(
                f"no entry for {len(lost)} case(s) listed in {other}: {shown}{more}", source=src
            )
    return [(c, *masks[c], *zmaps[c]) for c in masks]


def main(argv: Sequence[str] | None = None) -> int:
    """``medsweep eval froc``: print a table, or one JSON object with ``--json``."""
    p = argparse.ArgumentParser(
        prog="medsweep eval froc",
        description=_CLI_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--gt", required=True, type=Path, help="MASKS_DIR or CSV (case,mask)")
    p.add_argument("--pred", required=True, type=Path, help="Z_MAPS_DIR or CSV (case,zmap)")
    p.add_argument("--threshold", type=float, default=3.0, help="z threshold (default 3.0)")
    p.add_argument("--connectivity", type=int, default=2, help="1 = faces, 2 = + edges, ...")
    p.add_argument("--hit", choices=("overlap", "centre"), default="overlap")
    p.add_argument("--fps", type=float, nargs="+", default=list(DEFAULT_FPS), help="FP rates")
    p.add_argument("--plot", type=Path, help="write the FROC curve to this PNG")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    a = p.parse_args(list(argv) if argv is not None else None)
    cases = []
    for case, mfile, mwhere, zfile, zwhere in _load_cases(a.gt, a.pred):
        mask = _load_array(mfile, mwhere)
        labels, _ = lesion_labels(mask, name=f"mask of case {case!r}", source=mfile, where=mwhere)
        z = _load_array(zfile, zwhere).astype(np.float64)
        if z.shape != labels.shape:
            raise DataError(
                f"z-map shape {z.shape} differs from the shape {labels.shape} of the mask "
                f"{mfile} of case {case!r}",
                source=zfile,
                where=zwhere,
            )
        if not 1 <= a.connectivity <= z.ndim:
            p.error(f"--connectivity must be in 1..{z.ndim} for {z.ndim}-D maps")
        cases.append((candidates(z, a.threshold, a.connectivity), labels))
    result = froc(cases, a.fps, a.hit, gt="labels")
    if a.plot:
        froc_figure(result).savefig(a.plot)
    if a.json:
        out = result.to_dict() | {"threshold": a.threshold}
        print(json.dumps(out, indent=2, allow_nan=True))
        return 0
    _print_table(result, a.threshold)
    return 0


def _print_table(result: FrocResult, threshold: float) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"FROC, z >= {threshold:g}")
    table.add_column("FP / case", justify="right")
    table.add_column("sensitivity", justify="right")
    for r, s in zip(result.fps_per_case, result.sensitivity_at, strict=True):
        table.add_row(f"{r:g}", f"{s:.3f}")
    table.add_row("mean", f"{result.mean_sensitivity:.3f}")
    console = Console(highlight=False)
    console.print(table)
    console.print(
        f"{result.n_cases} cases, {result.n_lesions} lesions, {result.n_candidates} candidates, "
        f"hit = {result.hit}"
    )
