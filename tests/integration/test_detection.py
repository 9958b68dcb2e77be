"""Seed 000's lineage end to end on the shared Ray: SimSiam pretraining run -> CenterNet sweep
that loads its best backbone, starts frozen and searches the unfreezing order."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import orchestrator
from orchestrator.results import ResultsStore

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def liver(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tasks.detection.synth import generate

    return generate(tmp_path_factory.mktemp("liver"), n=40, size=64, seed=3)


def test_simsiam_then_detection_with_unfreezing(
    tmp_path: Path, liver: Path, ray_session: None
) -> None:
    store = tmp_path / "store"
    simsiam = tmp_path / "simsiam.yaml"
    simsiam.write_text(
        f"""
name: ssl
task: simsiam
data: {{images: {liver.parent.parent / "images"}, image_size: 64}}
model: {{backbone: resnet18, proj_dim: 64, pred_dim: 16}}
train: {{epochs: 1, batch_size: 16}}
store: {{root: {store}}}
"""
    )
    out = orchestrator.run(simsiam, name="ssl")
    assert out.errors == 0
    results = ResultsStore(store)
    ssl_run = results.runs("ssl").iloc[0]
    backbone = results.artifacts_dir("ssl", ssl_run["run_id"]) / "backbone.pt"
    assert backbone.is_file()

    det = tmp_path / "det.yaml"
    det.write_text(
        f"""
name: det
task: detection
data: {{train: {liver}, val: {liver.parent / "val.json"}, image_size: 64}}
model: {{backbone: resnet18, pretrained: true, weights_from: {{sweep: ssl}}}}
schedule: {{enabled: true, mode: interval, every: 1}}
eval: {{topk: 20}}
train: {{epochs: 2, batch_size: 8}}
store: {{root: {store}}}
sweep:
  metric: val_AP50
  num_samples: 2
  max_concurrent: 2
  space:
    schedule.order: {{type: permutation, items: [layer4, layer3, layer2, layer1, stem]}}
"""
    )
    out = orchestrator.sweep(det, name="det")
    assert (out.trials, out.errors) == (2, 0)
    runs = results.runs("det")
    assert set(runs["status"]) == {"completed"}
    for _, row in runs.iterrows():
        config = json.loads(row["config"])
        # lineage: the resolved config records which file the backbone came from
        assert config["model"]["weights_from"]["path"] == str(backbone.resolve())
        order = json.loads(row["params"])["schedule.order"]
        assert sorted(order) == ["layer1", "layer2", "layer3", "layer4", "stem"]
        assert config["schedule"]["order"] == order
        best = json.loads(row["best"])
        for key in ("val_mAP", "val_AP50", "val_lesion_f1", "val_lesion_threshold"):
            assert key in best
        art = results.artifacts_dir("det", row["run_id"])
        lesion = json.loads((art / "val_lesion.json").read_text())
        assert lesion["labels"] == ["cyst", "HCC", "hemangioma", "Meta", "None"]
        assert (art / "val_lesion_confusion.png").is_file()
    metrics = results.metrics("det")
    unfrozen = metrics[(metrics["split"] == "train") & (metrics["name"] == "unfrozen")]
    # starts frozen; with every: 1 the first stage trains from epoch 2 on
    per_run = unfrozen.sort_values("epoch").groupby("run_id")["value"].apply(list)
    assert per_run.map(lambda v: v == [0.0, 1.0]).all(), per_run

    # `medsweep predict` with the stored best weights writes COCO detections that
    # `medsweep eval detection` scores to the numbers the run stored for its best epoch
    from orchestrator.cli import main

    row = runs.sort_values("objective").iloc[-1]
    dets = tmp_path / "val_dets.json"
    val = liver.parent / "val.json"
    assert (
        main(
            [
                "predict",
                row["run_id"],
                "--store",
                str(store),
                "--data",
                str(val),
                "--out",
                str(dets),
            ]
        )
        == 0
    )
    from orchestrator.evaluate import eval_detection

    scored = eval_detection(val, dets, iou=0.25)
    best = json.loads(row["best"])
    assert scored["coco"]["AP50"] == pytest.approx(best["val_AP50"], abs=1e-6)
    assert scored["coco"]["mAP"] == pytest.approx(best["val_mAP"], abs=1e-6)
    assert scored["lesion"]["macro"]["f1"] == pytest.approx(best["val_lesion_f1"], abs=1e-6)
