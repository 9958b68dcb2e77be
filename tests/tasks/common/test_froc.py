"""tasks.common.froc: candidates, the FROC rules on a hand-worked case, errors and the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from orchestrator.errors import DataError
from tasks.common.froc import candidates, froc, froc_figure, lesion_labels, main


def _hand_cases() -> list[tuple[np.ndarray, np.ndarray]]:
    """Three 8x8 cases: (z-map, lesion mask). Candidates are components of z >= 3."""
    z_a, m_a = np.zeros((8, 8)), np.zeros((8, 8), np.uint8)
    m_a[1:4, 1:4] = 1  # lesion L1
    m_a[5:7, 5:7] = 1  # lesion L2, never found
    z_a[1, 1], z_a[1, 2] = 5.0, 3.1  # candidate 5.0 on L1
    z_a[3, 3] = 4.0  # candidate 4.0, also on L1: a duplicate, neither TP nor FP
    z_a[0, 6], z_a[0, 7] = 3.5, 3.3  # candidate 3.5: FP
    z_b, m_b = np.zeros((8, 8)), np.zeros((8, 8), np.uint8)
    m_b[3:5, 0:2] = 255  # lesion L3 (0/255 mask)
    # candidate 3.2 overlaps L3 at (3, 1) but its peak (3, 3) lies outside: TP only for "overlap"
    z_b[3, 1], z_b[3, 2], z_b[3, 3] = 3.05, 3.1, 3.2
    z_b[7, 7] = 6.0  # candidate 6.0: FP
    z_c, m_c = np.zeros((8, 8)), np.zeros((8, 8), np.uint8)  # no lesions
    z_c[4, 4] = 4.5  # candidate 4.5: FP
    return [(z_a, m_a), (z_b, m_b), (z_c, m_c)]


def test_candidates_are_components_with_peak_centroid_and_bbox() -> None:
    z = np.zeros((6, 6))
    z[1, 1], z[2, 2], z[2, 3] = 3.0, 4.0, 3.5  # diagonal neighbours: one component at conn. 2
    z[5, 0] = 10.0
    found = candidates(z, threshold=3.0, connectivity=2)
    assert [c.score for c in found] == [10.0, 4.0]  # highest first
    big = found[1]
    assert big.peak == (2, 2) and big.area == 3 and big.bbox == (1, 1, 3, 4)
    assert big.centroid == pytest.approx((5 / 3, 2.0))
    assert big.mask().sum() == 3 and big.mask()[2, 3]
    assert len(candidates(z, threshold=3.0, connectivity=1)) == 3  # faces only: split
    assert candidates(np.full((4, 4), np.nan)) == []
    vol = np.zeros((3, 4, 4))
    vol[1, 1, 1] = vol[2, 2, 2] = 5.0
    assert len(candidates(vol, connectivity=3)) == 1 and len(candidates(vol, connectivity=1)) == 2


def test_hand_worked_froc_overlap() -> None:
    # Scores, descending, with what each candidate is (3 cases, 3 lesions):
    #   6.0 FP (B) | 5.0 TP L1 (A) | 4.5 FP (C) | 4.0 dup L1 (A) | 3.5 FP (A) | 3.2 TP L3 (B)
    # FP/case:  1/3  1/3  2/3  2/3  1  1     sensitivity: 0  1/3  1/3  1/3  1/3  2/3
    # At <= 0.5 FP/case the best is 1/3 (threshold 5.0); from 1 FP/case on, 2/3 (threshold 3.2).
    cases = [(candidates(z), m) for z, m in _hand_cases()]
    r = froc(cases, fps_per_case=(0.25, 0.5, 1, 3), hit="overlap")
    assert r.thresholds.tolist() == [6.0, 5.0, 4.5, 4.0, 3.5, 3.2]
    assert r.mean_fps == pytest.approx([1 / 3, 1 / 3, 2 / 3, 2 / 3, 1, 1])
    assert r.sensitivity == pytest.approx([0, 1 / 3, 1 / 3, 1 / 3, 1 / 3, 2 / 3])
    assert r.sensitivity_at == pytest.approx((0.0, 1 / 3, 2 / 3, 2 / 3))  # 0.25: never reached
    assert (r.n_cases, r.n_lesions, r.n_candidates) == (3, 3, 6)
    d = json.loads(json.dumps(r.to_dict()))
    assert d["sensitivity_at"]["1"] == pytest.approx(2 / 3) and d["n_lesions"] == 3
    assert d["curve"]["threshold"][0] == 6.0 and d["mean_sensitivity"] == pytest.approx(5 / 12)


def test_hand_worked_froc_centre() -> None:
    # With "centre" the 3.2 candidate's peak misses L3: it becomes a fourth FP (4/3 FP/case at
    # threshold 3.2) and no operating point goes above 1/3 sensitivity.
    cases = [(candidates(z), m) for z, m in _hand_cases()]
    r = froc(cases, fps_per_case=(0.5, 1, 2), hit="centre")
    assert r.mean_fps[-1] == pytest.approx(4 / 3)
    assert r.sensitivity_at == pytest.approx((1 / 3, 1 / 3, 1 / 3))


def test_matches_a_brute_force_count_on_random_cases() -> None:
    rng = np.random.default_rng(0)
    cases = []
    for _ in range(6):
        z = rng.normal(0, 1.5, (24, 24))
        mask = np.zeros((24, 24), np.uint8)
        for _ in range(int(rng.integers(0, 3))):
            y, x = rng.integers(2, 20, 2)
            mask[y - 2 : y + 2, x - 2 : x + 2] = 1
            z[y - 1 : y + 1, x - 1 : x + 1] += rng.uniform(0, 4)
        cases.append((candidates(z, 2.5), mask))
    r = froc(cases, hit="overlap")
    labelled = [lesion_labels(m)[0] for _, m in cases]
    for t, fp, sens in zip(r.thresholds, r.mean_fps, r.sensitivity, strict=True):
        fps, found = 0, 0
        for (cands, _), lab in zip(cases, labelled, strict=True):
            kept = [c for c in cands if c.score >= t]
            hit_ids = [set(lab[tuple(c.coords.T)].tolist()) - {0} for c in kept]
            fps += sum(1 for h in hit_ids if not h)
            found += len(set().union(*hit_ids)) if hit_ids else 0
        assert fp == pytest.approx(fps / len(cases))
        assert sens == pytest.approx(found / r.n_lesions)


def test_touching_lesions_in_a_label_map_stay_separate() -> None:
    labels = np.zeros((6, 6), np.int64)
    labels[1:3, 1:3], labels[1:3, 3:5] = 7, 9  # two lesions sharing an edge
    z = np.zeros((6, 6))
    z[1, 1] = 5.0
    r = froc([(candidates(z), labels)], fps_per_case=(1,), gt="labels")
    assert r.n_lesions == 2 and r.sensitivity_at == (0.5,)
    merged = froc([(candidates(z), labels > 0)], fps_per_case=(1,))
    assert merged.n_lesions == 1 and merged.sensitivity_at == (1.0,)


def test_no_lesions_gives_nan_sensitivity() -> None:
    z = np.zeros((4, 4))
    z[0, 0] = 4.0
    r = froc([(candidates(z), np.zeros((4, 4)))], fps_per_case=(1,))
    assert r.n_lesions == 0 and math.isnan(r.sensitivity_at[0]) and r.mean_fps.tolist() == [1.0]


def test_non_binary_mask_and_shape_mismatch_raise_data_error() -> None:
    z = np.zeros((4, 4))
    z[0, 0] = 4.0
    bad = np.array([[0, 1], [2, 0]])
    with pytest.raises(DataError, match=r"liver-07 is not a binary lesion mask: values 0, 1, 2"):
        froc([(candidates(np.zeros((2, 2))), bad)], names=["liver-07"])
    with pytest.raises(DataError, match=r"case 0: candidates come from a z-map of shape \(4, 4\)"):
        froc([(candidates(z), np.zeros((5, 5)))])
    with pytest.raises(ValueError, match="no cases"):
        froc([])


def test_figure_has_the_curve_and_the_reported_points() -> None:
    r = froc([(candidates(z), m) for z, m in _hand_cases()])
    fig = froc_figure(r)
    ax = fig.axes[0]
    assert len(ax.lines) == 2 and "3 lesions in 3 cases" in ax.get_title()


def _write_dataset(root: Path) -> tuple[Path, Path]:
    """Masks as PNG (0/255 and 0/1) and z-maps as .npy, listed in two CSVs."""
    (root / "masks").mkdir(parents=True)
    (root / "z").mkdir()
    rows_gt, rows_pred = ["case,mask"], ["case,zmap"]
    for i, (z, m) in enumerate(_hand_cases()):
        Image.fromarray(m.astype(np.uint8)).save(root / "masks" / f"c{i}.png")
        np.save(root / "z" / f"c{i}.npy", z.astype(np.float32))
        rows_gt.append(f"c{i},masks/c{i}.png")
        rows_pred.append(f"c{i},z/c{i}.npy")
    (root / "gt.csv").write_text("\n".join(rows_gt) + "\n")
    (root / "pred.csv").write_text("\n".join(rows_pred) + "\n")
    return root / "gt.csv", root / "pred.csv"


def test_cli_json_from_csvs_and_from_folders(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gt, pred = _write_dataset(tmp_path)
    assert (
        main(["--gt", str(gt), "--pred", str(pred), "--json", "--plot", str(tmp_path / "f.png")])
        == 0
    )
    out = json.loads(capsys.readouterr().out)  # one JSON object, nothing else
    assert out["sensitivity_at"]["0.5"] == pytest.approx(1 / 3)
    assert out["sensitivity_at"]["3"] == pytest.approx(2 / 3)
    assert out["n_cases"] == 3 and out["threshold"] == 3.0
    assert (tmp_path / "f.png").stat().st_size > 0
    folders = ["--gt", str(tmp_path / "masks"), "--pred", str(tmp_path / "z")]
    assert main([*folders, "--hit", "centre", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["sensitivity_at"]["3"] == pytest.approx(1 / 3)
    assert main(["--gt", str(gt), "--pred", str(pred)]) == 0
    table = capsys.readouterr().out
    assert "FROC" in table and "0.667" in table and "3 lesions" in table


def test_cli_errors_name_the_file_and_row(tmp_path: Path) -> None:
    gt, pred = _write_dataset(tmp_path / "binary")
    Image.fromarray(np.full((8, 8), 128, np.uint8)).save(tmp_path / "binary" / "masks" / "c1.png")
    with pytest.raises(DataError) as err:
        main(["--gt", str(gt), "--pred", str(pred)])
    msg = str(err.value)
    assert "c1.png" in msg and "gt.csv line 3" in msg and "values 128" in msg

    gt, pred = _write_dataset(tmp_path / "shape")
    np.save(tmp_path / "shape" / "z" / "c2.npy", np.zeros((4, 4), np.float32))
    with pytest.raises(DataError, match=r"pred.csv line 4: z-map shape \(4, 4\) differs from"):
        main(["--gt", str(gt), "--pred", str(pred)])

    pred.write_text("case,zmap\nc0,z/c0.npy\nc1,z/c1.npy\n")
    with pytest.raises(DataError, match=r"pred.csv: no entry for 1 case\(s\) .*'c2' \(.*line 4"):
        main(["--gt", str(gt), "--pred", str(pred)])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"folder has no \.npy files"):
        main(["--gt", str(gt), "--pred", str(tmp_path / "empty")])
