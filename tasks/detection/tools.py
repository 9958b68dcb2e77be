"""`medsweep data coco|clean|stats`: dataset tools of the detection task family (seed 000).

Each `*_main(argv)` parses its own arguments (argparse exits 2 on bad ones) and raises
DataError on bad files, which the CLI turns into exit 2 with the file and row named.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def _print(summary: Any, as_json: bool, lines: list[str]) -> None:
    """`--json`: the summary as one JSON object; otherwise readable lines."""
    if as_json:
        print(json.dumps(summary, indent=2, default=str))
        return
    from rich.console import Console

    console = Console(highlight=False, soft_wrap=True)
    for line in lines:
        console.print(line, markup=False)


def _count_images(paths: list[Path]) -> int | None:
    """Images listed in COCO files (None when one cannot be read: the tool reports that)."""
    total = 0
    for path in paths:
        try:
            total += len(json.loads(path.read_text()).get("images") or [])
        except (OSError, ValueError, AttributeError):
            return None
    return total


def coco_main(argv: list[str]) -> int:
    from tasks.detection.convert import csv_to_coco

    p = argparse.ArgumentParser(
        prog="medsweep data coco",
        description="CSV of lesions (image,x,y,w,h,diagnosis,age,sex,patient_id) -> COCO "
        "train/val/test files split by patient.",
    )
    p.add_argument("csv")
    p.add_argument("--out", required=True, help="folder for train.json, val.json, test.json")
    p.add_argument("--image-root", help="folder of the CSV's image paths (default: CSV folder)")
    p.add_argument(
        "--split", type=float, nargs=3, default=(0.8, 0.1, 0.1), metavar=("TRAIN", "VAL", "TEST")
    )
    p.add_argument("--categories", nargs="+", help="category names in id order")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    if abs(sum(a.split) - 1) > 1e-6 or min(a.split) < 0:
        p.error(f"--split fractions must be >= 0 and sum to 1, got {a.split}")
    paths = csv_to_coco(
        Path(a.csv),
        Path(a.out),
        image_root=Path(a.image_root) if a.image_root else None,
        split=tuple(a.split),
        seed=a.seed,
        categories=a.categories,
    )
    lines = []
    for split, path in paths.items():
        images = _count_images([Path(path)])
        lines.append(f"{split}: {path} ({images if images is not None else '?'} images)")
    _print({k: str(v) for k, v in paths.items()}, a.json, lines)
    return 0


def clean_main(argv: list[str]) -> int:
    from tasks.detection.clean import clean

    p = argparse.ArgumentParser(
        prog="medsweep data clean",
        description="Seed 000 cleansing: drop small images, near-duplicates (perceptual hash; "
        "a group never straddles splits), inpaint burned-in colour scales; writes a report.",
    )
    p.add_argument("coco", nargs="+", help="COCO files of the splits (train.json val.json ...)")
    p.add_argument("--out", required=True)
    p.add_argument("--min-size", type=int, default=400, help="drop images at or below this size")
    p.add_argument("--hash-threshold", type=int, default=4, help="max Hamming distance")
    p.add_argument("--no-overlays", action="store_true", help="keep colour scales as they are")
    p.add_argument("--image-root", help="folder of the images' file_name")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    summary = clean(
        [Path(c) for c in a.coco],
        Path(a.out),
        min_size=a.min_size,
        hash_threshold=a.hash_threshold,
        remove_overlays=not a.no_overlays,
        image_root=Path(a.image_root) if a.image_root else None,
    )
    if not summary["images_kept"]:
        from orchestrator.errors import DataError

        raise DataError(
            f"every one of the {summary['images_in']} images was dropped "
            f"({summary.get('dropped_small', 0)} at or below --min-size {a.min_size}, "
            f"{summary.get('dropped_duplicate', 0)} near-duplicates); nothing is left to train "
            "on. The reasons per image are in cleaning_report.csv; lower --min-size or "
            "--hash-threshold",
            source=Path(a.out) / "cleaning_report.csv",
        )
    _print(summary, a.json, _clean_lines(summary, Path(a.out)))
    return 0


def _clean_lines(summary: dict[str, Any], out: Path) -> list[str]:
    lines = [
        f"kept {summary['images_kept']} of {summary['images_in']} images "
        f"({summary['annotations_kept']} annotations) in {out}",
        f"  dropped: {summary.get('dropped_small', 0)} small, "
        f"{summary.get('dropped_duplicate', 0)} near-duplicates "
        f"({summary['duplicate_groups']} groups); "
        f"inpainted colour scales: {summary.get('inpainted_overlay', 0)}",
    ]
    for split, counts in summary["splits"].items():
        lines.append(
            f"  {split}: {counts['images_kept']} of {counts['images_in']} images, "
            f"{counts['annotations_kept']} annotations"
        )
    lines.append(f"  every removal and why: {out / 'cleaning_report.csv'}")
    return lines


def stats_main(argv: list[str]) -> int:
    from tasks.detection.stats import dataset_stats

    p = argparse.ArgumentParser(
        prog="medsweep data stats",
        description="Seed 000 figure 2: images per sex, age per diagnosis, image size per "
        "diagnosis, bbox-to-image area ratio per diagnosis (PNG plots + stats.csv).",
    )
    p.add_argument("coco", nargs="+")
    p.add_argument("--out", required=True)
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    paths = [Path(c) for c in a.coco]
    if _count_images(paths) == 0:
        from orchestrator.errors import DataError

        raise DataError(
            "the COCO file(s) list no images; there is nothing to plot",
            source=", ".join(map(str, paths)),
        )
    table = dataset_stats(paths, Path(a.out))
    lines = [f"{len(table)} diagnoses; plots and stats.csv in {a.out}"]
    lines += [
        f"  {d}: {row['n_images']} images, {row['n_lesions']} lesions, {row['n_patients']} patients"
        for d, row in table.items()
    ]
    _print(table, a.json, lines)
    return 0
