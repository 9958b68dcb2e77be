"""The fundus task on its inputs: merged sources, the preprocessing cache, pretrained weights, TTA,
losses in the training step and native input sizes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from orchestrator.errors import DataError
from tasks.base import RunContext
from tasks.fundus import backbones
from tasks.fundus import data as fundus_data
from tasks.fundus.config import FundusConfig
from tasks.fundus.synth import generate
from tasks.fundus.task import FundusTask


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    for var in ("MEDSWEEP_WEIGHTS", "HF_HUB_CACHE", "HF_HUB_OFFLINE", "MEDSWEEP_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(backbones, "_hub_reachable", lambda: False)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def multi(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three synthetic sources (0/1, G/N, yes/no); 3 images of source a re-appear in c (96 px:
    smaller copies hash too coarsely to be found reliably)."""
    return generate(
        tmp_path_factory.mktemp("multi"), n=48, size=96, seed=0, sources=3, cross_duplicates=0.2
    )


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("single"), n=24, size=40, seed=1)


def _task(tmp_path: Path, data: dict[str, Any], **sections: Any) -> FundusTask:
    raw = {
        "data": {"image_size": 32, "cache_dir": str(tmp_path / "cache"), **data},
        "model": {"backbone": "resnet10t"},
        "train": {"batch_size": 8, "epochs": 1},
    }
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value}
    return FundusTask(FundusConfig.model_validate(raw))


def test_sources_are_merged_with_their_label_mappings(multi: Path, tmp_path: Path) -> None:
    task = _task(tmp_path, {"sources": str(multi)})
    task.check_data()
    cases = task.cases()
    assert set(cases["source"]) == {"a", "b", "c"} and set(cases["label"]) == {0, 1}
    assert cases["case"].equals(cases["path"])
    # every source's own coding became 0/1: compare with its CSV
    raw_b = pd.read_csv(multi.parent / "source_b" / "labels.csv")
    merged_b = cases[cases["source"] == "b"].sort_values("line")
    assert merged_b["label"].tolist() == [int(d == "G") for d in raw_b["diagnosis"]]
    assert cases["patient_id"].str.match(r"^[abc]:").all()
    summary = task.data_summary()
    assert summary["images"] == 48 and sum(summary["labels"].values()) == 48
    assert {k: v["images"] for k, v in summary["sources"].items()} == {"a": 16, "b": 16, "c": 16}


def test_near_duplicates_share_a_patient_and_are_reported(multi: Path, tmp_path: Path) -> None:
    task = _task(tmp_path, {"sources": str(multi)})
    cases = task.cases()
    listed = pd.read_csv(multi.parent / "duplicates.csv")
    by_path = cases.set_index("path")["patient_id"]
    for _, row in listed.iterrows():
        copy, original = (str(multi.parent / row[c]) for c in ("path", "duplicate_of_path"))
        assert by_path[copy] == by_path[original]
    dups = task.data_summary()["duplicates"]
    assert dups["cross_source_groups"] == len(listed) and Path(dups["report"]).is_file()
    report = pd.read_csv(dups["report"])
    assert set(report["sources"]) == {"a;c"}
    # without dedup the copies keep their own patients
    plain = _task(tmp_path, {"sources": str(multi), "dedup": None}).cases().set_index("path")
    copy = str(multi.parent / listed["path"].iloc[0])
    assert plain.loc[copy, "patient_id"] != by_path[copy]


def test_unmapped_raw_label_names_the_source_line(multi: Path, tmp_path: Path) -> None:
    csv = multi.parent / "source_b" / "labels.csv"
    bad = tmp_path / "b.csv"
    bad.write_text(csv.read_text().replace(",G,", ",glaucoma,", 1))
    sources = [{"name": "b", "manifest": str(bad), "label_column": "diagnosis",
                "label_map": {"G": 1, "N": 0}, "image_root": str(csv.parent)}]  # fmt: skip
    with pytest.raises(DataError) as err:
        _task(tmp_path, {"sources": sources}).check_data()
    assert err.value.source == str(bad) and "'glaucoma'" in err.value.message
    assert err.value.where is not None and err.value.where.startswith("line ")


def _count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = fundus_data.read_fundus

    def counting(path: str, cfg: Any, line: int | None = None) -> np.ndarray:
        calls.append(path)
        return real(path, cfg, line)

    monkeypatch.setattr(fundus_data, "read_fundus", counting)
    return calls


def test_second_dataset_build_hits_the_cache(
    single: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _count_decodes(monkeypatch)
    first = _task(tmp_path, {"manifest": str(single)})
    frames = first.default_frames()
    first.frames = frames
    a = first.dataset(frames["train"], train=False)
    assert len(calls) == 24  # every case of the run at once, train and val
    first.dataset(frames["val"], train=False)
    second = _task(tmp_path, {"manifest": str(single)})  # another trial or fold
    second.frames = frames
    b = second.dataset(frames["train"], train=False)
    assert len(calls) == 24, "the second build decoded again"
    assert torch.equal(a[3][0], b[3][0]) and a[3][0].shape == (3, 32, 32)
    other = _task(tmp_path, {"manifest": str(single), "central_fraction": 0.8})
    other.frames = frames
    other.dataset(frames["train"], train=False)
    assert len(calls) == 48  # a new setting is a new entry
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2


def test_without_cache_images_are_decoded_per_use(
    single: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _count_decodes(monkeypatch)
    task = _task(tmp_path, {"manifest": str(single), "cache": False, "vessels": True})
    ds = task.dataset(task.cases(), train=True)
    x, label, i = ds[5]
    assert x.shape == (3, 32, 32) and i == 5 and label.item() in (0, 1) and len(calls) == 1
    assert not (tmp_path / "cache").exists()


class _ItemsOnly(torch.utils.data.Dataset[Any]):
    """A dataset wrapper without ``__getitems__``."""

    def __init__(self, inner: Any, order: list[int]) -> None:
        self.inner, self.order = inner, order

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, i: int) -> Any:
        return self.inner[self.order[i]]


@pytest.mark.parametrize("workers", [0, 1])
def test_loader_batches_built_whole_equal_items_collated(
    single: Path, tmp_path: Path, workers: int
) -> None:
    from torch.utils.data import DataLoader, default_collate

    task = _task(tmp_path, {"manifest": str(single)})
    frame = task.cases()
    ds = task.dataset(frame, train=False)
    labels = frame["label"].to_numpy()
    pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    order = [int(pos[1]), int(neg[2]), int(neg[0]), int(neg[1])]  # labels 1, 0, 0, 0
    x, y, rows = next(
        iter(
            DataLoader(
                ds, batch_size=4, sampler=order, collate_fn=task.collate_fn(), num_workers=workers
            )
        )
    )
    ex, ey, erows = default_collate([ds[i] for i in order])
    assert torch.equal(x, ex) and x.shape == (4, 3, 32, 32)
    assert torch.equal(y, ey) and y.dtype == torch.float32
    assert rows.tolist() == order and torch.equal(rows, erows)
    assert y.tolist() == frame["label"].to_numpy(dtype=float)[order].tolist()
    # a wrapper that hands over items one by one is collated as usual
    batch = next(
        iter(DataLoader(_ItemsOnly(ds, order), batch_size=4, collate_fn=task.collate_fn()))
    )
    assert torch.equal(batch[0], ex) and batch[2].tolist() == order


def test_pretrained_offline_without_weights_names_the_file(single: Path, tmp_path: Path) -> None:
    task = _task(
        tmp_path,
        {"manifest": str(single)},
        model={"pretrained": True, "weights_dir": str(tmp_path / "w")},
    )
    with pytest.raises(DataError) as err:
        task.check_data()
    assert err.value.where == "field model.pretrained"
    assert str(tmp_path / "w" / "resnet10t.safetensors") in err.value.message
    # placing a file there is enough; it is loaded (the head is new)
    import timm

    source: Any = timm.create_model("resnet10t", pretrained=False)
    (tmp_path / "w").mkdir()
    torch.save(source.state_dict(), tmp_path / "w" / "resnet10t.pth")
    task.check_data()
    model: Any = task.build_model()
    assert torch.equal(model.conv1[0].weight, source.conv1[0].weight)
    assert model.get_classifier().out_features == 1
    # predicting a stored run needs no ImageNet file
    inference = _task(tmp_path, {"manifest": str(single)}, model={"pretrained": True})
    inference.setup_inference(RunContext(run_id="p", seed=0))


class _Probe(nn.Module):
    """Logit = 8 * top-left pixel of channel 0 - 3: each flip brings another corner there."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 8 * x[:, 0, :1, :1].reshape(-1, 1) - 3


def test_tta_averages_probabilities_of_the_flips(tmp_path: Path, single: Path) -> None:
    task = _task(tmp_path, {"manifest": str(single)}, train={"tta": ["h", "v", "hv"]})
    task.bare = _Probe()
    x = torch.rand(3, 3, 8, 8)
    views = [x, x.flip(3), x.flip(2), x.flip(2, 3)]
    expected = torch.stack([torch.sigmoid(task.bare(v)) for v in views]).mean(0).squeeze(1)
    assert torch.allclose(
        task.predict_step((x, torch.zeros(3), torch.arange(3)))["score"], expected
    )
    logits = torch.stack([task.bare(v) for v in views]).mean(0).squeeze(1)
    assert not torch.allclose(expected, torch.sigmoid(logits))  # not the mean of logits
    off = _task(tmp_path, {"manifest": str(single)})
    off.bare = task.bare
    plain = off.predict_step((x, torch.zeros(3), torch.arange(3)))["score"]
    assert torch.allclose(plain, torch.sigmoid(task.bare(x)).squeeze(1))


@pytest.mark.parametrize(
    ("train", "expected"),
    [
        ({}, "bce"),
        ({"label_smoothing": 0.2}, "seed"),
        ({"label_smoothing": 0.2, "smoothing": "symmetric"}, "symmetric"),
        ({"loss": "focal", "focal_gamma": 2.0, "focal_alpha": 0.25}, "focal"),
    ],
)
def test_train_step_uses_the_configured_loss(
    tmp_path: Path, single: Path, train: dict[str, Any], expected: str
) -> None:
    task = _task(tmp_path, {"manifest": str(single)}, train=train)
    task.model = nn.Identity()
    logits = torch.tensor([[1.0], [-0.5]])
    y = torch.tensor([1.0, 0.0])
    target = {"bce": y, "seed": torch.tensor([0.8, 0.1]), "symmetric": torch.tensor([0.9, 0.1])}
    p = torch.sigmoid(logits.squeeze(1))
    if expected == "focal":
        p_t = torch.where(y > 0, p, 1 - p)
        bce = torch.nn.functional.binary_cross_entropy(p, y, reduction="none")
        want = ((1 - p_t) ** 2 * torch.tensor([0.25, 0.75]) * bce).mean()
    else:
        want = torch.nn.functional.binary_cross_entropy(p, target[expected])
    got = task.train_step((logits, y, torch.arange(2)))["loss"]
    assert got.item() == pytest.approx(want.item(), rel=1e-5)


def test_deit_at_auto_takes_its_native_224(single: Path, tmp_path: Path) -> None:
    task = _task(
        tmp_path,
        {"manifest": str(single), "image_size": "auto", "cache": False},
        model={"backbone": "deit_base_patch16_224"},
    )
    assert task.config.data.size == 224
    ds = task.dataset(task.cases().iloc[:2], train=True)
    x = torch.stack([ds[0][0], ds[1][0]])
    assert x.shape == (2, 3, 224, 224)
    task.bare = task.build_model().eval()
    with torch.no_grad():
        score = task.predict_step((x, torch.zeros(2), torch.arange(2)))["score"]
    assert score.shape == (2,) and ((score > 0) & (score < 1)).all()


def test_corrupt_image_names_its_source_manifest_and_line(tmp_path: Path) -> None:
    spec = generate(tmp_path / "d", n=8, size=40, seed=0, sources=2)
    rows = pd.read_csv(tmp_path / "d" / "source_b" / "labels.csv")
    image = tmp_path / "d" / "source_b" / rows["path"].iloc[2]
    image.write_bytes(image.read_bytes()[:60])
    with pytest.raises(DataError) as err:
        _task(tmp_path, {"sources": str(spec)}).check_data()
    assert err.value.source == str(tmp_path / "d" / "source_b" / "labels.csv")
    assert err.value.where == "line 4, column 'path'"
