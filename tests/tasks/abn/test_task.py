"""The ABN task: data and masks, the alpha hook, one CPU epoch with patient counts, bad input."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pydicom
import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from orchestrator.config import from_dict
from orchestrator.errors import ConfigError, DataError
from orchestrator.evaluate import eval_classification
from orchestrator.loop import run_epoch
from tasks.abn.config import ABNConfig
from tasks.abn.data import SliceCache, SliceDataset, build_augment
from tasks.abn.losses import abn_parts, combine
from tasks.abn.synth import generate
from tasks.abn.task import ABNTask, AlphaHook
from tasks.base import RunContext
from tasks.common.schedules import ValueScheduleConfig


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def ct(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """32 slices of 8 patients at 48 px, the first 4 also as DICOM (labels_dicom.csv)."""
    return generate(tmp_path_factory.mktemp("ct"), n=32, size=48, seed=4, dicom=4)


def _config(manifest: Path | str, **sections: Any) -> ABNConfig:
    raw: dict[str, Any] = {
        "data": {"manifest": str(manifest), "image_size": 48},
        "model": {"backbone": "resnet10t"},
        "train": {"epochs": 4, "batch_size": 8},
        "eval": {"attention_samples": 3},
    }
    for name, values in sections.items():
        raw[name] = {**raw.get(name, {}), **values}
    return ABNConfig.model_validate(raw)


def _rows(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="") as fh:
        header, *rows = list(csv.reader(fh))
    return header, rows


def _write(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows([header, *rows])
    return path


def _abs(ct: Path, header: list[str], rows: list[list[str]]) -> list[list[str]]:
    """Rows with absolute slice and mask paths (so a copy of the manifest may live elsewhere)."""
    cols = [header.index(c) for c in ("path", "mask")]
    return [[str(ct.parent / v) if i in cols else v for i, v in enumerate(r)] for r in rows]


# --- data ------------------------------------------------------------------------------------
def test_flips_move_slice_and_mask_together(tmp_path: Path) -> None:
    pixels = np.full((32, 32), 40, np.uint8)
    pixels[2:10, 3:12] = 220  # a bright block in the top-left corner
    lung = (pixels > 128).astype(np.uint8)
    cfg = _config(tmp_path / "unused.csv").data
    cache = SliceCache(cfg, "m.csv")
    cache.pairs["a.png"] = (pixels, lung)
    frame = pd.DataFrame({"path": ["a.png"], "mask": [""], "label": [1], "line": [2]})
    for aug, corner in (
        ({"hflip": 1.0}, (slice(2, 10), slice(20, 29))),  # top-right
        ({"hflip": 0.0, "vflip": 1.0}, (slice(22, 30), slice(3, 12))),  # bottom-left
    ):
        augment = build_augment(_config("x", augment=aug).augment)
        x, mask, label, index = SliceDataset(frame, cache, augment, in_chans=3)[0]
        assert x.shape == (3, 32, 32) and mask.shape == (1, 32, 32) and mask.dtype == torch.float32
        assert set(mask.unique().tolist()) == {0.0, 1.0}
        assert mask[0][corner].all() and int(mask.sum()) == 72
        bright = x[0] > x[0].mean()
        assert torch.equal(bright, mask[0].bool())  # the slice moved with its mask
        assert (int(label), index) == (1, 0)
    rotate = build_augment(_config("x", augment={"hflip": 0, "rotate": 30, "scale": 0.1}).augment)
    _, mask, _, _ = SliceDataset(frame, cache, rotate, in_chans=1)[0]
    assert set(mask.unique().tolist()) <= {0.0, 1.0}  # nearest neighbour keeps it binary


def test_cases_masks_are_zero_one_and_aligned(ct: Path) -> None:
    task = ABNTask(_config(ct))
    task.check_data()
    cases = task.cases()
    assert {"case", "path", "mask", "label", "patient_id", "line"} <= set(cases.columns)
    assert cases["case"].is_unique and all(Path(m).is_file() for m in cases["mask"])
    ds = task.dataset(cases.head(4), train=False)
    x, mask, _, _ = ds[0]
    assert set(mask.unique().tolist()) == {0.0, 1.0}
    lung = mask[0].bool()
    assert x[0][lung].mean() < x[0][~lung].mean()  # lungs are dark in the lung window
    summary = task.data_summary()
    assert summary["slices"] == 32 and summary["patients"] == 8
    assert summary["patient_labels"] == {"0": 4, "1": 4}


def _mixed(ct: Path, tmp_path: Path) -> tuple[Path, list[str], list[list[str]]]:
    """The first 4 slices as DICOM, the rest as PNG (absolute paths)."""
    header, rows = _rows(ct)
    _, dicom = _rows(ct.parent / "labels_dicom.csv")
    rows = _abs(ct, header, dicom + rows[len(dicom) :])
    return _write(tmp_path / "mixed.csv", header, rows), header, rows


def test_dicom_slices_read_with_the_window(ct: Path, tmp_path: Path) -> None:
    manifest, _, _ = _mixed(ct, tmp_path)
    task = ABNTask(_config(manifest))
    task.check_data()  # valid DICOM passes the header checks
    assert task.data_summary()["dicom_slices"] == 4
    png = ABNTask(_config(ct))
    first = png.dataset(png.cases().head(1), train=False)[0][0]
    dcm = task.dataset(task.cases().head(1), train=False)[0][0]
    # the same HU, windowed here instead of by the generator: equal up to 8-bit rounding
    assert (dcm - first).abs().max() < 0.05
    narrow = ABNTask(_config(manifest, data={"window_level": 40, "window_width": 400}))
    assert not torch.allclose(narrow.dataset(narrow.cases().head(1), False)[0][0], dcm)


# --- the alpha schedule ----------------------------------------------------------------------
def _alphas(epochs: int, **schedule: Any) -> list[float]:
    hook = AlphaHook(ValueScheduleConfig(**schedule), epochs)
    out = []
    for epoch in range(1, epochs + 1):
        hook.on_epoch_start(None, epoch)
        metrics: dict[str, float] = {}
        hook.on_epoch_end(None, epoch, metrics)
        out.append(metrics["train_alpha"])
    return out


def test_alpha_step_switch_as_fraction_and_as_epoch() -> None:
    # seed 003 eq. 5: alpha_high for n < s*E, alpha_low from n = s*E on (E = 10, s = 1/2)
    assert _alphas(10) == [0.9] * 4 + [0.1] * 6
    assert _alphas(10, switch=0.25) == [0.9, 0.9] + [0.1] * 8  # 2.5: epoch 3 is the first >=
    assert _alphas(6, switch=3, start=0.8, end=0.2) == [0.8, 0.8, 0.2, 0.2, 0.2, 0.2]
    assert _alphas(4, switch=1) == [0.1] * 4  # switched from the start
    assert _alphas(4, switch=9) == [0.9] * 4  # never switches within the run


def test_alpha_linear_and_cosine_ramps_reach_end_at_the_switch() -> None:
    linear = _alphas(8, switch=5, shape="linear")
    assert linear == pytest.approx([0.9, 0.7, 0.5, 0.3, 0.1, 0.1, 0.1, 0.1])
    cosine = _alphas(8, switch=5, shape="cosine")
    half = (1 - math.cos(math.pi / 4)) / 2
    assert cosine == pytest.approx(
        [0.9, 0.9 - 0.8 * half, 0.5, 0.1 + 0.8 * half, 0.1, 0.1, 0.1, 0.1]
    )


# --- training --------------------------------------------------------------------------------
def test_one_epoch_predict_and_patient_counts(ct: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    task = ABNTask(_config(ct, loss={"alpha": {"switch": 2}}))
    task.check_data()
    task.setup(RunContext(run_id="t", seed=0))
    metrics = run_epoch(task, 1)
    for key in ("train_loss", "train_loss_att", "train_loss_per", "train_loss_map", "val_auc"):
        assert math.isfinite(metrics[key]), key
    assert metrics["train_alpha"] == 0.9
    assert run_epoch(task, 2)["train_alpha"] == 0.1

    preds = task.predict("val")
    val = task.frames["val"]
    assert len(preds) == len(val) and preds["score"].between(0, 1).all()
    per_patient = preds.groupby("patient_id").agg(score=("score", "mean"), label=("label", "first"))
    correct = int(((per_patient["score"] >= 0.5) == (per_patient["label"] == 1)).sum())
    scores = task.score("val", preds)
    assert scores["patient_n"] == val["patient_id"].nunique() == len(per_patient)
    assert scores["patient_correct"] == correct
    assert scores["patient_tp"] + scores["patient_fn"] == int(per_patient["label"].sum())

    # the same numbers as `medsweep eval classification --group patient_id` on the written file
    written = task.save_artifacts(tmp_path)
    evaluated = eval_classification(tmp_path / "val_predictions.csv", "patient_id")
    assert evaluated["auc"] == pytest.approx(task.score("val", task.last_val)["auc"])
    patient = evaluated["patient"]
    assert patient["n"] == scores["patient_n"]
    overlays = sorted(p.name for p in written if p.parent.name == "attention")
    assert len(overlays) == 4 and overlays[-1] == "cases.csv"  # 3 PNGs + their table
    with Image.open(tmp_path / "attention" / overlays[0]) as img:
        assert img.size == (3 * img.size[1], img.size[1])  # slice | mask | attention
    table = pd.read_csv(tmp_path / "attention" / "cases.csv")
    assert table["file"].tolist() == overlays[:3]
    assert set(table["case"]) <= set(val["case"])


def test_train_step_uses_the_alpha_in_force(ct: Path) -> None:
    torch.manual_seed(0)
    task = ABNTask(_config(ct))
    task.setup(RunContext(run_id="t", seed=0))
    batch = next(iter(task.train_loader))
    task.alpha_hook.value = 0.3
    task.model.eval()  # fixed BatchNorm statistics: both forward passes agree
    out = task.train_step(batch)
    parts = abn_parts(task.model(batch[0]), batch[2], batch[1])
    expected = combine(parts, "dynamic", 1.0, 0.3)
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert out["loss"].item() == pytest.approx(
        0.7 * parts["per"].item() + 0.3 * (parts["map"].item() + parts["att"].item()), rel=1e-5
    )
    baseline = ABNTask(_config(ct, loss={"mode": "baseline", "gamma": 0.5}))
    baseline.setup(RunContext(run_id="b", seed=0))
    assert list(baseline.hooks()) == []  # no alpha to switch or log
    baseline.model.eval()
    b_out = baseline.train_step(batch)
    b_parts = {k[5:]: v for k, v in b_out.items() if k.startswith("loss_")}
    manual = b_parts["att"] + b_parts["per"] + 0.5 * b_parts["map"]
    assert b_out["loss"].item() == pytest.approx(manual.item(), rel=1e-5)


def test_predicts_a_manifest_without_labels_or_masks(ct: Path, tmp_path: Path) -> None:
    _, rows = _rows(ct)
    slices = _write(tmp_path / "new.csv", ["path"], [[str(ct.parent / r[0])] for r in rows[:5]])
    task = ABNTask(_config(ct))
    task.setup(RunContext(run_id="p", seed=0))
    preds = task.predict(slices)
    assert len(preds) == 5 and preds["score"].between(0, 1).all() and "label" not in preds


# --- bad input -------------------------------------------------------------------------------
def _bad_copy(ct: Path, tmp_path: Path, edit: Any) -> Path:
    header, rows = _rows(ct)
    rows = _abs(ct, header, rows)
    header, rows = edit(header, rows) or (header, rows)
    return _write(tmp_path / "bad.csv", header, rows)


def _check(manifest: Path) -> DataError:
    with pytest.raises(DataError) as info:
        ABNTask(_config(manifest)).check_data()
    return info.value


def test_missing_and_empty_masks_name_the_line(ct: Path, tmp_path: Path) -> None:
    def gone(header: list[str], rows: list[list[str]]) -> None:
        rows[2][1] = str(tmp_path / "nowhere.png")

    err = _check(_bad_copy(ct, tmp_path, gone))
    assert err.source == str(tmp_path / "bad.csv") and err.where == "line 4, column 'mask'"
    assert "nowhere.png" in err.message

    def empty(header: list[str], rows: list[list[str]]) -> None:
        rows[0][1] = ""

    assert _check(_bad_copy(ct, tmp_path, empty)).where == "line 2, column 'mask'"

    def no_column(header: list[str], rows: list[list[str]]) -> Any:
        return [h for h in header if h != "mask"], [[r[0], *r[2:]] for r in rows]

    err = _check(_bad_copy(ct, tmp_path, no_column))
    assert err.where == "header" and "lungmask" in err.message


def test_mask_of_another_size_names_the_line(ct: Path, tmp_path: Path) -> None:
    small = tmp_path / "small.png"
    Image.new("L", (24, 24)).save(small)

    def resized(header: list[str], rows: list[list[str]]) -> None:
        rows[5][1] = str(small)

    err = _check(_bad_copy(ct, tmp_path, resized))
    assert (
        err.where == "line 7, column 'mask'" and "24x24" in err.message and "48x48" in err.message
    )


def test_mixed_labels_of_a_patient_name_the_line(ct: Path, tmp_path: Path) -> None:
    def relabel(header: list[str], rows: list[list[str]]) -> None:
        rows[1][3] = str(1 - int(rows[1][3]))  # the 2nd slice of the first patient

    err = _check(_bad_copy(ct, tmp_path, relabel))
    assert err.where == "line 3, column 'label'" and "P00000" in err.message


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda ds: delattr(ds, "PixelData"), "no pixel data"),
        (lambda ds: setattr(ds, "PhotometricInterpretation", "PALETTE COLOR"), "Photometric"),
    ],
)
def test_bad_dicom_names_file_and_line(ct: Path, tmp_path: Path, damage: Any, match: str) -> None:
    _, header, rows = _mixed(ct, tmp_path)
    broken = tmp_path / "broken.dcm"
    ds = pydicom.dcmread(rows[2][0])
    damage(ds)
    ds.save_as(broken)
    rows[2][0] = str(broken)
    manifest = _write(tmp_path / "dicom.csv", header, rows)
    err = _check(manifest)
    assert err.source == str(broken) and err.where == f"{manifest} line 4"
    assert match in err.message


def test_window_width_must_be_positive(ct: Path) -> None:
    with pytest.raises(ValidationError, match="window_width"):
        _config(ct, data={"window_width": 0})
    raw = {"name": "x", "task": "abn", "data": {"manifest": str(ct), "window_width": -5}}
    with pytest.raises(ConfigError) as info:
        from_dict(raw, source="abn.yaml")
    assert info.value.source == "abn.yaml" and info.value.where == "field data.window_width"
    with pytest.raises(ValidationError, match=r"alpha\.start"):
        _config(ct, loss={"alpha": {"start": 1.5}})


# --- sweep warnings --------------------------------------------------------------------------
def _experiment(scheduler: dict[str, Any] | None, space: dict[str, Any] | None = None) -> dict:
    return {"sweep": {"scheduler": scheduler or {"type": "none"}, "space": space or {}}}


def test_asha_before_the_switch_is_warned_about(ct: Path) -> None:
    task = ABNTask(_config(ct, train={"epochs": 10}))  # switch 0.5: alpha_low from epoch 5
    (warning,) = task.sweep_warnings(_experiment({"type": "asha", "grace_period": 2}))
    assert "grace_period 2" in warning and "epoch 5" in warning
    assert task.sweep_warnings(_experiment({"type": "asha", "grace_period": 5})) == []
    assert task.sweep_warnings(_experiment(None)) == []
    searched = {"loss.alpha.switch": {"type": "uniform", "low": 0.2, "high": 0.8}}
    (late,) = task.sweep_warnings(_experiment({"type": "asha", "grace_period": 5}, searched))
    assert "epoch 8" in late
    epochs = {"train.epochs": {"type": "int", "low": 10, "high": 20, "step": 1, "log": False}}
    (longer,) = task.sweep_warnings(_experiment({"type": "asha", "grace_period": 5}, epochs))
    assert "epoch 10" in longer  # 0.5 of 20 epochs
    only_baseline = {"loss.mode": {"type": "choice", "values": ["baseline"]}}
    assert task.sweep_warnings(_experiment({"type": "asha"}, only_baseline)) == []
    baseline = ABNTask(_config(ct, loss={"mode": "baseline"}))
    assert baseline.sweep_warnings(_experiment({"type": "asha", "grace_period": 1})) == []


def test_synthesises_missing_data_and_names_bad_backbones(tmp_path: Path) -> None:
    manifest = tmp_path / "ct" / "labels.csv"
    spec = {"n": 16, "size": 32, "seed": 1, "slices_per_patient": 2, "difficulty": 0.2}
    task = ABNTask(_config(manifest, data={"synth": spec, "image_size": 32}))
    task.check_data()
    assert manifest.is_file() and task.data_summary()["patients"] == 8
    with pytest.raises(DataError) as info:
        ABNTask(_config(manifest, model={"backbone": "no_such_net"})).check_data()
    assert info.value.where == "field model.backbone" and "no_such_net" in info.value.message
    with pytest.raises(DataError, match="weights file not found"):
        bad = {"pretrained": True, "weights": str(tmp_path / "none.pth")}
        ABNTask(_config(manifest, model=bad)).check_data()
