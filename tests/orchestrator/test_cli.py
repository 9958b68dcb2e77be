"""The command line as a user meets it: exit codes, messages, --json, nothing stored damaged."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from orchestrator.cli import main

REPO = Path(__file__).resolve().parent.parent


def _config(tmp_path: Path, csv: Path, extra: str = "") -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(
        f"name: t\ntask: fundus\ndata: {{manifest: {csv}, image_size: 64}}\n"
        f"model: {{backbone: resnet10t}}\nstore: {{root: {tmp_path / 'store'}}}\n{extra}"
    )
    return path


def _copy_dataset(src_csv: Path, dst: Path) -> Path:
    shutil.copytree(src_csv.parent, dst)
    return dst / src_csv.name


def test_help_is_fast_because_imports_are_lazy() -> None:
    code = (
        "import sys, orchestrator.cli; "
        "print(sorted(m for m in ('torch', 'ray', 'timm') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    res = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "--help"], capture_output=True, text=True
    )
    assert res.returncode == 0 and "sweep" in res.stdout


def test_tasks_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tasks", "--json"]) == 0
    rows = {r["task"]: r for r in json.loads(capsys.readouterr().out)}
    assert {"fundus", "detection", "simsiam"} <= set(rows)
    assert (rows["fundus"]["metric"], rows["fundus"]["mode"]) == ("val_auc", "max")
    assert (rows["detection"]["metric"], rows["detection"]["mode"]) == ("val_mAP", "max")


def test_validate_ok_and_resolved_json(
    tmp_path: Path, fundus_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _config(tmp_path, fundus_csv)
    assert main(["validate", str(cfg), "--check-data"]) == 0
    capsys.readouterr()
    assert main(["validate", str(cfg), "--set", "train.lr=3e-4", "--json"]) == 0
    resolved = json.loads(capsys.readouterr().out)
    assert resolved["train"]["lr"] == pytest.approx(3e-4)


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (["--set", "train.epochs=two"], r"exp\.yaml, field train\.epochs"),
        (["--set", "train.lrr=1"], r"field train\.lrr: unknown key"),
        (["--set", "task=nope"], r"unknown task 'nope'; registered tasks: abn, detection, fundus"),
        (["--set", "model.backbone=resnet_typo"], r"field model\.backbone: unknown timm model"),
        (["--set", "nokeyvalue"], r"expected KEY=VALUE"),
    ],
)
def test_bad_config_exits_2_with_a_clear_message(
    tmp_path: Path,
    fundus_csv: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    pattern: str,
) -> None:
    code = main(["validate", str(_config(tmp_path, fundus_csv)), *args])
    err = capsys.readouterr().err
    assert code == 2
    assert re.search(pattern, err.replace("\n", " ")), err
    assert "Traceback" not in err


@pytest.mark.parametrize("case", ["missing_image", "corrupt_image", "no_label_column", "label_2"])
def test_bad_data_exits_2_naming_file_and_row(
    tmp_path: Path, fundus_csv: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    csv = _copy_dataset(fundus_csv, tmp_path / "data")
    df = pd.read_csv(csv)
    first = csv.parent / df["path"].iloc[3]
    if case == "missing_image":
        first.unlink()
        pattern = rf"{first.name}"
    elif case == "corrupt_image":
        first.write_bytes(first.read_bytes()[:100])
        pattern = rf"labels\.csv, line 5, column 'path'.*{first.name}.*Truncated"
    elif case == "no_label_column":
        df.drop(columns=["label"]).to_csv(csv, index=False)
        pattern = r"labels\.csv.*label"
    else:
        df.loc[6, "label"] = 2
        df.to_csv(csv, index=False)
        pattern = r"labels\.csv.*line 8"
    store = tmp_path / "store"
    assert main(["validate", str(_config(tmp_path, csv)), "--check-data"]) == 2
    err = capsys.readouterr().err.replace("\n", " ")
    assert re.search(pattern, err), err
    # a sweep on bad data stops before Ray starts and before anything is stored
    assert main(["sweep", str(_config(tmp_path, csv)), "--name", "bad"]) == 2
    assert not (store / "bad").exists()


def test_eval_classification_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pred = tmp_path / "pred.csv"
    pd.DataFrame(
        {
            "label": [0, 0, 1, 1, 1, 0],
            "score": [0.1, 0.6, 0.8, 0.4, 0.9, 0.2],
            "pid": list("aabbcc"),
        }
    ).to_csv(pred, index=False)
    assert main(["eval", "classification", "--pred", str(pred), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n"] == 6 and out["threshold"] == 0.5
    assert out["auc"] == pytest.approx(8 / 9)
    # patient c has mixed labels: a patient-level label is undefined
    assert main(["eval", "classification", "--pred", str(pred), "--group", "pid", "--json"]) == 2
    assert re.search(
        r"pred\.csv, line 7.*'c' has mixed labels", capsys.readouterr().err.replace("\n", " ")
    )
    pd.DataFrame(
        {"label": [0, 0, 1, 1], "score": [0.1, 0.3, 0.8, 0.4], "pid": list("aabb")}
    ).to_csv(pred, index=False)
    assert main(["eval", "classification", "--pred", str(pred), "--group", "pid", "--json"]) == 0
    patient = json.loads(capsys.readouterr().out)["patient"]
    assert patient["n"] == 2 and patient["auc"] == 1.0 and patient["accuracy"] == 1.0
    assert main(["eval", "classification", "--pred", str(tmp_path / "none.csv")]) == 2


def test_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["results", "export", "x", "--format", "xlsx", "--out", "y"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["frobnicate"])
    assert exc.value.code == 2


def test_results_of_unknown_sweep_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["results", "--store", str(tmp_path), "best", "nope"]) == 2
    assert "nope" in capsys.readouterr().err


def test_data_synth(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["data", "synth", "fundus", "--out", str(tmp_path / "d"), "--n", "12", "--size", "64"])
        == 0
    )
    df = pd.read_csv(tmp_path / "d" / "labels.csv")
    assert len(df) == 12 and set(df["label"]) <= {0, 1}
    assert main(["data", "synth", "nope", "--out", str(tmp_path / "e")]) == 2
