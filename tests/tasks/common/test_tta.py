"""tasks.common.tta: flips applied to the right axes, probabilities (not logits) averaged."""

from __future__ import annotations

import pytest
import torch

from tasks.common.tta import FLIPS, average_probabilities, predict_tta, tta_views


def test_views_identity_first_then_flips() -> None:
    x = torch.arange(2 * 1 * 3 * 4, dtype=torch.float32).reshape(2, 1, 3, 4)
    views = tta_views(x, ["h", "v", "hv"])
    assert len(views) == 4 and views[0] is x
    assert torch.equal(views[1], x.flip(3))
    assert torch.equal(views[1][0, 0, 0], torch.tensor([3.0, 2.0, 1.0, 0.0]))  # width mirrored
    assert torch.equal(views[2][0, 0, :, 0], torch.tensor([8.0, 4.0, 0.0]))  # height mirrored
    assert torch.equal(views[3], x.flip(2).flip(3))
    assert FLIPS == {"h": (3,), "v": (2,), "hv": (2, 3)}


@pytest.mark.parametrize("flips", [["x"], "hv"])
def test_bad_flip_names(flips: list[str] | str) -> None:
    with pytest.raises(ValueError):
        tta_views(torch.zeros(1, 3, 4, 4), flips)


def test_views_need_nchw() -> None:
    with pytest.raises(ValueError, match="NCHW"):
        tta_views(torch.zeros(3, 4, 4), ["h"])


def test_probabilities_are_averaged_not_logits() -> None:
    """One over-confident view: the mean of logits says 'positive', the mean vote does not."""
    views = {0: 12.0, 1: -2.0, 2: -2.0}  # logit per view: identity, h, v

    def model(x: torch.Tensor) -> torch.Tensor:
        # Reads which view it got from a marker pixel moved by the flips.
        tl, tr, bl = x[:, 0, 0, 0], x[:, 0, 0, -1], x[:, 0, -1, 0]
        which = torch.where(tl > 0, 0, torch.where(tr > 0, 1, torch.where(bl > 0, 2, -1)))
        return torch.tensor([[views[int(w)]] for w in which])

    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 0, 0] = 1.0
    prob = predict_tta(model, x, ["h", "v"], "sigmoid")
    expected = torch.sigmoid(torch.tensor([12.0, -2.0, -2.0])).mean()
    wrong = torch.sigmoid(torch.tensor([12.0, -2.0, -2.0]).mean())
    assert prob.shape == (1, 1)
    assert prob.item() == pytest.approx(expected.item(), abs=1e-6)
    assert prob.item() < 0.5 < wrong.item()  # the two rules disagree on the decision


def test_softmax_over_classes() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    prob = predict_tta(
        lambda v: logits.expand(v.shape[0], -1), torch.zeros(1, 3, 2, 2), ["h"], "softmax"
    )
    assert torch.allclose(prob, logits.softmax(1)) and prob.sum().item() == pytest.approx(1.0)


def test_average_rejects_logits_and_mismatches() -> None:
    with pytest.raises(ValueError, match="logits"):
        average_probabilities([torch.tensor([0.2]), torch.tensor([3.0])])
    with pytest.raises(ValueError, match="shapes"):
        average_probabilities([torch.zeros(2), torch.zeros(3)])
    with pytest.raises(ValueError):
        average_probabilities([])
    assert torch.allclose(
        average_probabilities([torch.tensor([0.2]), torch.tensor([0.6])]), torch.tensor([0.4])
    )
