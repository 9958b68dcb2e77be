"""faster-coco-eval computes COCO AP only where it gives pycocotools' numbers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from tasks.common import detection_metrics as dm

pytest.importorskip("faster_coco_eval")


@pytest.fixture(autouse=True)
def _fresh_check() -> Iterator[None]:
    dm.faster_agrees.cache_clear()
    yield
    dm.faster_agrees.cache_clear()


def flat(result: dict[str, Any]) -> dict[str, float]:
    out = {k: v for k, v in result.items() if k != "per_class"}
    for name, values in result["per_class"].items():
        out.update({f"{name}/{k}": v for k, v in values.items()})
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_faster_coco_eval_equals_pycocotools(seed: int) -> None:
    """Equal to the last bits or two: the C++ accumulation rounds in another order."""
    gt, dets = dm.agreement_set(seed)
    fast = flat(dm.coco_metrics(gt, dets, backend=dm.FASTER))
    ref = flat(dm.coco_metrics(gt, dets, backend=dm.PYCOCOTOOLS))
    assert fast.keys() == ref.keys()
    assert [fast[k] for k in ref] == pytest.approx(list(ref.values()), rel=1e-12, abs=1e-15)
    assert fast["c4/mAP"] == -1.0  # no ground truth of class 4


def test_faster_coco_eval_equals_pycocotools_on_empty_inputs() -> None:
    gt, _ = dm.agreement_set(0)
    cases: list[tuple[dict[str, Any], list[dict[str, Any]]]] = [
        (gt, []),
        ({**gt, "images": [], "annotations": []}, []),
    ]
    for args in cases:
        assert dm.coco_metrics(*args, backend=dm.FASTER) == dm.coco_metrics(
            *args, backend=dm.PYCOCOTOOLS
        )


def test_the_check_picks_faster_only_when_it_agrees(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(dm.BACKEND_ENV, raising=False)
    assert dm.faster_agrees() and dm.coco_backend() == dm.FASTER
    evaluate = dm._evaluate

    def off_by_a_little(gt: dict[str, Any], dets: list[dict[str, Any]], backend: str) -> Any:
        ev = evaluate(gt, dets, backend)
        if backend == dm.FASTER:
            ev.eval["precision"] = np.where(
                ev.eval["precision"] > 0, ev.eval["precision"] + 2e-6, -1
            )
        return ev

    dm.faster_agrees.cache_clear()
    monkeypatch.setattr(dm, "_evaluate", off_by_a_little)
    assert not dm.faster_agrees() and dm.coco_backend() == dm.PYCOCOTOOLS

    def broken(gt: dict[str, Any], dets: list[dict[str, Any]], backend: str) -> Any:
        if backend == dm.FASTER:
            raise RuntimeError("a broken build")
        return evaluate(gt, dets, backend)

    dm.faster_agrees.cache_clear()
    monkeypatch.setattr(dm, "_evaluate", broken)
    assert dm.coco_backend() == dm.PYCOCOTOOLS


def test_the_backend_can_be_forced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(dm.BACKEND_ENV, dm.PYCOCOTOOLS)
    assert dm.coco_backend() == dm.PYCOCOTOOLS
    monkeypatch.setenv(dm.BACKEND_ENV, dm.FASTER)
    assert dm.coco_backend() == dm.FASTER
