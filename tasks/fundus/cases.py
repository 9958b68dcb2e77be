"""The fundus case table: one manifest, or several sources merged (seed 002's four datasets).

With `data.sources`, every source's labels are mapped to 0/1, sources are subsampled as asked,
and perceptual-hash near-duplicates (`data.dedup`) get one shared ``patient_id``, so the
patient-grouped splits keep each group of copies on one side of every boundary. The hashing runs
once per image set: its groups are cached next to the preprocessed images, together with a CSV
report of the groups that span sources (``<cache>/dedup/<key>.duplicates.csv``).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from orchestrator.errors import DataError
from tasks.common.io import atomic_write_csv, atomic_write_json
from tasks.common.manifest import read_manifest, verify_images
from tasks.fundus.config import FundusData, Source
from tasks.fundus.data import cache_root

DEDUP_VERSION = 1  # bump when the grouping changes for the same inputs


@dataclass(frozen=True)
class Duplicates:
    """Near-duplicate groups of a merged table (as row positions) and their report."""

    groups: list[list[int]]
    cross_source_groups: int
    report: Path

    def summary(self) -> dict[str, Any]:
        return {
            "groups": len(self.groups),
            "images": sum(len(g) for g in self.groups),
            "cross_source_groups": self.cross_source_groups,
            "report": str(self.report),
        }


def source_list(cfg: FundusData) -> list[Source]:
    """`data.sources` as a list (a file is read; its relative paths are from its folder)."""
    from tasks.fundus.sources import load_sources

    if isinstance(cfg.sources, str):
        return load_sources(cfg.sources)
    return list(cfg.sources or [])


def data_root(cfg: FundusData) -> Path:
    """The folder written paths are made relative to."""
    if cfg.manifest is not None:
        return Path(cfg.image_root or Path(cfg.manifest).parent).resolve()
    if isinstance(cfg.sources, str):
        return Path(cfg.sources).resolve().parent
    folders = [str(Path(s.manifest).resolve().parent) for s in source_list(cfg)]
    return Path(os.path.commonpath(folders)) if folders else Path.cwd()


def read_table(cfg: FundusData) -> tuple[pd.DataFrame, Duplicates | None]:
    """The labelled case table (``case`` = ``path``) and, for merged sources, its duplicates."""
    if cfg.manifest is not None:
        root = Path(cfg.image_root) if cfg.image_root else None
        frame = read_manifest(Path(cfg.manifest), image_root=root)
        return frame.assign(case=frame["path"]), None
    from tasks.fundus.sources import merge_sources, unify_groups

    frame = merge_sources(source_list(cfg), seed=cfg.subsample_seed)
    dups = None
    if cfg.dedup is not None:
        dups = find_duplicates(cfg, frame)
        frame = unify_groups(frame, dups.groups)
    return frame.assign(case=frame["path"]), dups


def verify(cfg: FundusData, frame: pd.DataFrame) -> None:
    """Every image opens; a bad one is named with its own manifest and line (DataError)."""
    if "source" not in frame.columns:
        verify_images(frame, source=cfg.manifest)
        return
    manifests = {s.name: s.manifest for s in source_list(cfg)}
    for name, part in frame.groupby("source", sort=False):
        verify_images(part, source=manifests[str(name)])


def _dedup_key(cfg: FundusData, paths: list[str]) -> str:
    assert cfg.dedup is not None
    h = hashlib.sha256(
        json.dumps(
            {
                "version": DEDUP_VERSION,
                "threshold": cfg.dedup.threshold,
                "hash_size": cfg.dedup.hash_size,
                "border": cfg.border_threshold if cfg.crop_border else None,
            },
            sort_keys=True,
        ).encode()
    )
    for p in sorted(paths):
        try:
            st = os.stat(p)
        except OSError as exc:
            raise DataError(f"cannot read image file: {exc.strerror}", source=p) from exc
        h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    return h.hexdigest()[:24]


def find_duplicates(cfg: FundusData, frame: pd.DataFrame) -> Duplicates:
    """Near-duplicate groups of a merged table, hashed once per image set and cached."""
    from tasks.fundus.sources import duplicate_groups_report, near_duplicates

    assert cfg.dedup is not None
    paths = frame["path"].astype(str).tolist()
    folder = cache_root(cfg) / "dedup"
    key = _dedup_key(cfg, paths)
    index, report = folder / f"{key}.json", folder / f"{key}.duplicates.csv"
    row = {p: i for i, p in enumerate(paths)}
    try:
        stored = json.loads(index.read_text(encoding="utf-8"))
        groups = [sorted(row[p] for p in g) for g in stored["groups"]]
        cross = int(stored["cross_source_groups"])
    except (OSError, ValueError, KeyError, TypeError):
        verify(cfg, frame)  # a bad file is named with its manifest line, not by the hasher
        border = cfg.border_threshold if cfg.crop_border else None
        groups = near_duplicates(
            paths, cfg.dedup.threshold, cfg.dedup.hash_size, border_threshold=border
        )
        table = duplicate_groups_report(frame, groups)
        cross = int(table["group"].nunique())
        atomic_write_csv(table, report)
        named = [[paths[i] for i in g] for g in groups]
        atomic_write_json(index, {"groups": named, "cross_source_groups": cross})  # last
    return Duplicates(groups, cross, report)
