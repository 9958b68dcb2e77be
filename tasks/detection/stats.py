"""Dataset statistics of seed 000 (its figure 2) from COCO files: four PNG plots and a table.

Plots (matplotlib, Agg) written to ``out_dir``:

- ``sex.png``: images per sex, grouped by diagnosis (seed: HCC mostly men, hemangioma women);
- ``age.png``: age distribution per diagnosis (histograms sharing the age axis);
- ``size.png``: image width x height per diagnosis (one scatter panel each, marker ~ count);
- ``bbox_ratio.png``: bbox-to-image area ratio per lesion, per diagnosis (box plot, log axis).

``stats.csv`` has one row per diagnosis (category order, then ``none`` for images without
lesion): ``n_images, n_lesions, n_patients, n_male, n_female, n_sex_unknown, age_mean, age_sd,
width_mean, height_mean, area_ratio_median``. An image with lesions of several diagnoses counts
once under each of them, so image counts can add up to more than the number of images; lesion
counts add up exactly. Image sizes come from the COCO entries (no image is opened).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never a display
import matplotlib.pyplot as plt
import numpy as np

from orchestrator.errors import DataError
from tasks.detection.convert import read_coco

__all__ = ["COLUMNS", "NONE", "PLOTS", "dataset_stats"]

NONE = "none"
COLUMNS = (
    "diagnosis",
    "n_images",
    "n_lesions",
    "n_patients",
    "n_male",
    "n_female",
    "n_sex_unknown",
    "age_mean",
    "age_sd",
    "width_mean",
    "height_mean",
    "area_ratio_median",
)
PLOTS = ("sex.png", "age.png", "size.png", "bbox_ratio.png")


def _records(coco_paths: Sequence[Path]) -> tuple[list[str], list[dict[str, Any]]]:
    """Category names (first file's order, then new ones) and one record per image."""
    names: list[str] = []
    records: list[dict[str, Any]] = []
    for path in coco_paths:
        coco = read_coco(path)
        cats = {c["id"]: c["name"] for c in coco["categories"]}
        names += [n for n in cats.values() if n not in names]
        by_image: dict[int, list[dict[str, Any]]] = {img["id"]: [] for img in coco["images"]}
        for ann in coco["annotations"]:
            by_image[ann["image_id"]].append(ann)
        for img in coco["images"]:
            area = float(img["width"]) * float(img["height"])
            lesions = [(cats[a["category_id"]], a["bbox"][2] * a["bbox"][3] / area)
                       for a in by_image[img["id"]]]  # fmt: skip
            records.append(
                {
                    "diagnoses": sorted({d for d, _ in lesions}) or [NONE],
                    "lesions": lesions,
                    "age": _age(img.get("age"), path, img["id"]),
                    "sex": img.get("sex") if img.get("sex") in ("M", "F") else None,
                    "patient": img.get("patient_id"),
                    "width": float(img["width"]),
                    "height": float(img["height"]),
                }
            )
    return names, records


def _age(value: Any, path: Path, image_id: int) -> float | None:
    if value is None or value == "":
        return None
    try:
        age = float(value)
    except (TypeError, ValueError):
        raise DataError(f"age {value!r} is not a number", source=path,
                        where=f"image id {image_id}") from None  # fmt: skip
    return age if math.isfinite(age) else None


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else math.nan


def _row(diagnosis: str, recs: list[dict[str, Any]]) -> dict[str, Any]:
    ages = [r["age"] for r in recs if r["age"] is not None]
    ratios = [q for r in recs for d, q in r["lesions"] if d == diagnosis]
    sexes = [r["sex"] for r in recs]
    return {
        "diagnosis": diagnosis,
        "n_images": len(recs),
        "n_lesions": len(ratios),
        "n_patients": len({r["patient"] for r in recs if r["patient"] is not None}),
        "n_male": sexes.count("M"),
        "n_female": sexes.count("F"),
        "n_sex_unknown": sexes.count(None),
        "age_mean": _mean(ages),
        "age_sd": float(np.std(ages, ddof=1)) if len(ages) > 1 else math.nan,
        "width_mean": _mean([r["width"] for r in recs]),
        "height_mean": _mean([r["height"] for r in recs]),
        "area_ratio_median": float(np.median(ratios)) if ratios else math.nan,
    }


def _plot_sex(table: dict[str, dict[str, Any]], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    x = np.arange(len(table))
    for k, (col, label) in enumerate((("n_male", "M"), ("n_female", "F"))):
        ax.bar(x + (k - 0.5) * 0.4, [row[col] for row in table.values()], 0.4, label=label)
    ax.set_xticks(x, list(table))
    ax.set(ylabel="images", title="Images per sex")
    ax.legend()
    _save(fig, path)


def _plot_age(groups: dict[str, list[dict[str, Any]]], path: Path) -> None:
    fig, axes = plt.subplots(1, len(groups), figsize=(2.6 * len(groups), 3), sharex=True)
    for ax, (diag, recs) in zip(np.atleast_1d(axes), groups.items(), strict=True):
        ages = [r["age"] for r in recs if r["age"] is not None]
        ax.hist(ages, bins=np.arange(0, 101, 5))
        ax.set(title=f"{diag} (n={len(ages)})", xlabel="age")
    fig.suptitle("Age distribution per diagnosis")
    _save(fig, path)


def _plot_size(groups: dict[str, list[dict[str, Any]]], path: Path) -> None:
    # One panel per diagnosis: scanners share sizes, so one scatter would hide classes.
    n = len(groups)
    fig, axes = plt.subplots(1, n, figsize=(2.6 * n, 2.8), sharex=True, sharey=True)
    for ax, (diag, recs) in zip(np.atleast_1d(axes), groups.items(), strict=True):
        sizes, counts = np.unique([[r["width"], r["height"]] for r in recs], axis=0,
                                  return_counts=True)  # fmt: skip
        ax.scatter(sizes[:, 0], sizes[:, 1], s=15 + 150 * counts / counts.max(), alpha=0.6)
        for (w, h), c in zip(sizes, counts, strict=True):
            ax.annotate(str(c), (w, h), fontsize=7, ha="center", va="center")
        ax.set(title=diag, xlabel="width (px)")
    np.atleast_1d(axes)[0].set_ylabel("height (px)")
    fig.suptitle("Image size per diagnosis (marker: number of images)")
    _save(fig, path)


def _plot_ratio(groups: dict[str, list[dict[str, Any]]], path: Path) -> None:
    data = {
        d: [q for r in recs for dd, q in r["lesions"] if dd == d]
        for d, recs in groups.items()
        if d != NONE
    }
    data = {d: v for d, v in data.items() if v}
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if data:
        ax.boxplot(list(data.values()), tick_labels=list(data))
        ax.set_yscale("log")
    ax.set(ylabel="bbox area / image area", title="Bbox-to-image area ratio per diagnosis")
    _save(fig, path)


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})  # no version stamp: stable bytes
    plt.close(fig)


def dataset_stats(coco_paths: list[Path], out_dir: Path) -> dict[str, dict[str, Any]]:
    """Write the seed's figure 2 (``PLOTS``) and ``stats.csv`` for the union of the files.

    Args:
        coco_paths: COCO files (e.g. train, val, test); their images are pooled.
        out_dir: output folder (created).

    Returns:
        The table: ``{diagnosis: {column: value}}`` with the ``COLUMNS`` of ``stats.csv``,
        in category order then ``none`` (rows with no image are left out).

    Raises:
        DataError: an unreadable COCO file or a non-numeric age.
    """
    names, records = _records([Path(p) for p in coco_paths])
    groups: dict[str, list[dict[str, Any]]] = {d: [] for d in [*names, NONE]}
    for rec in records:
        for diag in rec["diagnoses"]:
            groups[diag].append(rec)
    groups = {d: recs for d, recs in groups.items() if recs}
    table = {d: _row(d, recs) for d, recs in groups.items()}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "stats.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in table.values():
            writer.writerow({k: f"{v:.4g}" if isinstance(v, float) else v for k, v in row.items()})
    _plot_sex(table, out_dir / PLOTS[0])
    _plot_age(groups, out_dir / PLOTS[1])
    _plot_size(groups, out_dir / PLOTS[2])
    _plot_ratio(groups, out_dir / PLOTS[3])
    return table
