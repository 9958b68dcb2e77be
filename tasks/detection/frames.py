"""COCO files as a case table: one row per image, with what datasets, splits and metrics need.

Rows: ``case`` (the image's absolute path, the id the CV engine splits by), ``image_id``,
``file_name``, ``width``, ``height``, ``patient_id`` (from the image record, when present),
``label`` (the image's most frequent category id, 0 for an image without lesions: what folds are
stratified by), ``anns`` (its annotations) and ``_file`` (which COCO file it came from).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from orchestrator.errors import DataError
from tasks.detection.data import Categories, Sample, image_path


class CocoIndex:
    """Images, annotations and categories of one or more COCO files (same categories)."""

    def __init__(
        self,
        files: dict[str, tuple[str, dict[str, Any]]],
        image_root: str | None,
        one_class: bool = False,
    ) -> None:
        first_path, first = next(iter(files.values()))
        self.cats = Categories.from_coco(first, one_class=one_class)
        self.category_names = [str(c["name"]) for c in sorted(first["categories"], key=_id)]
        rows: list[dict[str, Any]] = []
        for key, (path, coco) in files.items():
            if sorted(coco["categories"], key=_id) != sorted(first["categories"], key=_id):
                raise DataError(
                    f"categories differ from those of {first_path}",
                    source=path,
                    where="categories",
                )
            rows += _rows(key, Path(path), coco, image_root)
        self.frame = pd.DataFrame(rows)

    @property
    def num_classes(self) -> int:
        return self.cats.num_classes

    def cases(self) -> pd.DataFrame:
        return self.frame.copy()

    def sample(self, row: Any) -> Sample:
        """A dataset item (boxes xyxy in image pixels, 0-based labels) of a case-table row."""
        xywh = np.array([a["bbox"] for a in row.anns], dtype=np.float32).reshape(-1, 4)
        xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        labels = np.array([self.cats.label(a["category_id"]) for a in row.anns], dtype=np.int64)
        return Sample(
            int(row.image_id), Path(row.case), int(row.width), int(row.height), xyxy, labels
        )

    def to_coco(self, predictions: pd.DataFrame) -> list[dict[str, Any]]:
        """COCO results in each image's own pixels (boxes were predicted at the network size)."""
        out: list[dict[str, Any]] = []
        rows: Any = predictions.itertuples(index=False)
        for row in rows:
            scale = np.array([row.width, row.height] * 2, dtype=np.float64) / float(row.net_size)
            boxes = np.asarray(row.boxes, dtype=np.float64).reshape(-1, 4) * scale
            for (x1, y1, x2, y2), score, label in zip(
                boxes.tolist(),
                np.asarray(row.scores).tolist(),
                np.asarray(row.labels).tolist(),
                strict=True,
            ):
                if x2 - x1 <= 0 or y2 - y1 <= 0:
                    continue
                out.append(
                    {
                        "image_id": int(row.image_id),
                        "category_id": self.cats.category_id(int(label)),
                        "bbox": [x1, y1, x2 - x1, y2 - y1],
                        "score": float(score),
                    }
                )
        return out

    def eval_pair(self, predictions: pd.DataFrame) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Ground truth of the predicted images and their detections, with consistent image ids
        (renumbered by position when images of several COCO files share an id)."""
        preds = predictions.reset_index(drop=True)
        rows = self.frame.set_index("case").loc[preds["case"]].reset_index()
        if not rows["image_id"].is_unique:
            preds = preds.assign(image_id=np.arange(1, len(preds) + 1))
            rows = rows.assign(image_id=preds["image_id"].to_numpy())
        images, anns = [], []
        records: Any = rows.itertuples(index=False)
        for row in records:
            images.append(
                {
                    "id": int(row.image_id),
                    "file_name": row.file_name,
                    "width": int(row.width),
                    "height": int(row.height),
                }
            )
            anns += [{**a, "image_id": int(row.image_id)} for a in row.anns]
        anns = [{**a, "id": i} for i, a in enumerate(anns, start=1)]
        gt = {"images": images, "annotations": anns, "categories": self._categories()}
        return self.cats.eval_gt(gt), self.to_coco(preds)

    def _categories(self) -> list[dict[str, Any]]:
        return [
            {"id": cid, "name": name}
            for cid, name in zip(self.cats.ids, self.cats.names, strict=True)
        ]


def _id(entry: dict[str, Any]) -> int:
    return int(entry["id"])


def _rows(
    key: str, path: Path, coco: dict[str, Any], image_root: str | None
) -> list[dict[str, Any]]:
    by_image: dict[int, list[dict[str, Any]]] = {img["id"]: [] for img in coco["images"]}
    for ann in coco["annotations"]:
        by_image[ann["image_id"]].append(ann)
    rows = []
    for img in coco["images"]:
        anns = by_image[img["id"]]
        top = Counter(int(a["category_id"]) for a in anns).most_common(1)
        row = {
            "case": str(image_path(path, image_root, img["file_name"])),
            "image_id": int(img["id"]),
            "file_name": img["file_name"],
            "width": int(img["width"]),
            "height": int(img["height"]),
            "label": top[0][0] if top else 0,
            "anns": anns,
            "_file": key,
        }
        if img.get("patient_id") not in (None, ""):
            row["patient_id"] = str(img["patient_id"])
        rows.append(row)
    return rows


def entry_labels(coco_path: str | Path, frame: pd.DataFrame) -> list[tuple[str, str | None]]:
    """Rows named by their COCO entry, ``images[i] (id N): file_name`` (i counts every entry of
    the file, those dropped as invalid too), for messages about single images."""
    with open(coco_path, encoding="utf-8-sig") as fh:
        raw = json.load(fh)["images"]
    at = {
        img["id"]: i
        for i, img in enumerate(raw)
        if isinstance(img, dict) and isinstance(img.get("id"), int)
    }
    out: list[tuple[str, str | None]] = []
    for image_id, name in zip(frame["image_id"], frame["file_name"], strict=True):
        where = f"images[{at[int(image_id)]}] (id {int(image_id)})"
        out.append((f"{where}: {name}", where))
    return out
