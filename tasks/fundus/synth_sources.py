"""Several synthetic fundus datasets, as seed 002 merged four Kaggle sets (``synth.generate``
with ``sources > 1``).

Each dataset has its own label coding, columns, class balance, camera (brightness, colour cast,
black-border size, resolution, aspect), and some images of source ``a`` re-appear re-encoded in
another source (near-duplicates across sources, listed in ``duplicates.csv``). Layout::

    out/sources.json                 the sources (loadable by tasks.fundus.sources.load_sources)
    out/duplicates.csv               source, path, duplicate_of_source, duplicate_of_path
    out/source_a/labels.csv          path, label (0/1), patient_id, cdr
    out/source_b/labels.csv          path, diagnosis (G/N), patient, cdr      4:3, darker, warm
    out/source_c/labels.csv          path, glaucoma (yes/no), subject, cdr    small, bright, cool
    out/source_d/labels.csv          image (file name under images/), class (glaucoma/normal),
                                     cdr; no patient column, noisier sensor
"""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from tasks.fundus.synth import (
    MAX_SIZE,
    MIN_SIZE,
    SINGLE,
    Camera,
    SourceStyle,
    pad_aspect,
    render_source,
    write_csv,
)

__all__ = ["SOURCES", "generate_sources"]

# Columns: name, label column, codes of 0/1, group column, path column, bare file names,
# file prefix, camera, size factor, aspect, glaucoma fraction (seed 002's sets: 0.26-0.47).
SOURCES = (
    replace(SINGLE, prefix="a_", glaucoma_fraction=0.47),
    SourceStyle("b", "diagnosis", ("N", "G"), "patient", "path", False, "b_",
            Camera((0.36, 0.44), 0.8, (1.08, 0.95, 0.85)), 1.25, 4 / 3, 0.26),
    SourceStyle("c", "glaucoma", ("no", "yes"), "subject", "path", False, "c_",
            Camera((0.47, 0.55), 1.15, (0.92, 1.02, 1.12)), 0.75, 1, 0.35),
    SourceStyle("d", "class", ("normal", "glaucoma"), None, "image", True, "d_",
            Camera(gain=0.95, noise=2.0), 1, 1, 0.31),
)  # fmt: skip


def _copy_duplicates(
    out: Path, rows: list[list[list[Any]]], fraction: float, seq: np.random.SeedSequence
) -> list[list[str]]:
    """Re-encode some images of source a into another source (cross-source near-duplicates)."""
    target = 2 if len(rows) > 2 else 1
    count = min(round(fraction * len(rows[target])), len(rows[0]))
    if count == 0:
        return []
    rng = np.random.default_rng(seq)
    donors = rng.choice(len(rows[0]), count, replace=False)
    slots = rng.choice(len(rows[target]), count, replace=False)
    src_t, dir_a, dir_t = SOURCES[target], out / "source_a", out / f"source_{SOURCES[target].name}"
    listed: list[list[str]] = []
    for i, j in zip(donors.tolist(), slots.tolist(), strict=True):
        rel_a, label, _, cdr = rows[0][i]
        rel_t = rows[target][j][0]
        with Image.open(dir_a / rel_a) as img, Image.open(dir_t / rel_t) as old:
            h = old.size[1]  # keep the target's resolution, then its aspect
            arr = np.asarray(img.convert("RGB").resize((h, h), Image.Resampling.BILINEAR))
        # Re-published copies are resized (above) and slightly re-toned, not re-shot.
        arr = np.clip(arr * rng.uniform(0.97, 1.03) + 0.5, 0, 255).astype(np.uint8)
        Image.fromarray(pad_aspect(arr, src_t.aspect)).save(dir_t / rel_t, compress_level=6)
        rows[target][j] = [rel_t, label, f"R{j:05d}", cdr]  # a patient of its own there
        listed.append([src_t.name, f"source_{src_t.name}/{rel_t}", "a", f"source_a/{rel_a}"])
    return sorted(listed)


def generate_sources(
    out: Path, k: int, n: int, size: int, seed: int, patients: bool, d: float, dup: float
) -> Path:
    """The ``k``-source layout of the module docstring; returns ``out/sources.json``."""
    seqs = np.random.SeedSequence(seed).spawn(k + 1)  # one per source, one for the duplicates
    chosen = SOURCES[:k]
    rows: list[list[list[Any]]] = []
    for i, src in enumerate(chosen):
        side = min(MAX_SIZE, max(MIN_SIZE, round(size * src.size_factor)))
        count = n // k + (i < n % k)
        rows.append(
            render_source(out / f"source_{src.name}", src, count, side, seqs[i], patients, d)
        )
    listed = _copy_duplicates(out, rows, dup, seqs[k])
    for src, src_rows in zip(chosen, rows, strict=True):
        write_csv(out / f"source_{src.name}" / "labels.csv", src, src_rows)
    with (out / "duplicates.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["source", "path", "duplicate_of_source", "duplicate_of_path"])
        writer.writerows(listed)
    entries = [
        {
            "name": src.name,
            "manifest": f"source_{src.name}/labels.csv",
            "label_column": src.label_column,
            "label_map": None if src.name == "a" else {src.codes[0]: 0, src.codes[1]: 1},
            "path_column": src.path_column,
            "image_root": f"source_{src.name}/images" if src.bare_names else None,
            "subsample": None,
            "group_column": src.group_column,
        }
        for src in chosen
    ]  # the fields of tasks.fundus.sources.Source; paths relative to this file's folder
    spec = {"generator": "tasks.fundus.synth", "sources": entries, "duplicates": "duplicates.csv"}
    path = out / "sources.json"
    path.write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")
    return path
