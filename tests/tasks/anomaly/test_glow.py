"""tasks.anomaly.glow: exact inverse, exact log-determinants, known bits/dim, checkpointing."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
from torch.autograd.functional import jacobian

from tasks.anomaly.glow import (
    ActNorm,
    FlowStep,
    Glow,
    InvConv2d,
    bits_per_dim,
    preprocess,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tiny tensors: OpenMP threads only contend on the shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _randomise_zero_convs(module: torch.nn.Module, scale: float = 0.1) -> None:
    """Zero-initialised convs make couplings and priors trivial; perturb them for the tests."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if ".conv." in name or name.endswith("logs") or "top_prior" in name:
                p.add_(scale * torch.randn_like(p))


@pytest.fixture
def glow64() -> Glow:
    torch.manual_seed(0)
    model = Glow(in_channels=1, levels=2, depth=2, width=8, lu=True).double()
    model(torch.rand(4, 1, 8, 8, dtype=torch.float64) - 0.5)  # ActNorm data-dependent init
    _randomise_zero_convs(model)
    return model


@pytest.mark.parametrize("lu", [True, False])
def test_reverse_inverts_forward(lu: bool) -> None:
    torch.manual_seed(1)
    model = Glow(in_channels=3, levels=3, depth=2, width=16, lu=lu)
    x = torch.rand(2, 3, 16, 16) - 0.5
    model(x)
    _randomise_zero_convs(model)
    zs, _, _ = model(x)
    assert [tuple(z.shape) for z in zs] == [(2, 6, 8, 8), (2, 12, 4, 4), (2, 48, 2, 2)]
    assert torch.allclose(model.reverse(zs), x, atol=1e-4)
    with torch.no_grad():
        xd = x.double()
        model64 = model.double()
        assert torch.allclose(model64.reverse(model64(xd)[0]), xd, atol=1e-10)


def _step_logdet_check(module: torch.nn.Module, x: torch.Tensor) -> None:
    def flat(v: torch.Tensor) -> torch.Tensor:
        return module(v.reshape(x.shape))[0].reshape(-1)

    jac = jacobian(flat, x.reshape(-1))
    sign, expected = torch.linalg.slogdet(jac)
    assert sign != 0
    got = module(x)[1]
    assert got.shape == (1,)
    assert got.item() == pytest.approx(expected.item(), abs=1e-8)


@pytest.mark.parametrize("lu", [True, False])
def test_invconv_logdet_matches_jacobian(lu: bool) -> None:
    torch.manual_seed(2)
    conv = InvConv2d(4, lu=lu).double()
    with torch.no_grad():
        for p in conv.parameters():
            p.add_(0.3 * torch.randn_like(p))  # away from a rotation: logdet != 0
    x = torch.randn(1, 4, 2, 2, dtype=torch.float64)
    _step_logdet_check(conv, x)
    assert abs(conv(x)[1].item()) > 1e-3


def test_flow_step_logdet_matches_jacobian() -> None:
    torch.manual_seed(3)
    step = FlowStep(4, width=8, lu=True).double()
    step(torch.randn(8, 4, 2, 2, dtype=torch.float64))  # ActNorm init
    _randomise_zero_convs(step, 0.5)
    _step_logdet_check(step, torch.randn(1, 4, 2, 2, dtype=torch.float64))


def test_actnorm_initialises_once_and_survives_state_dict() -> None:
    torch.manual_seed(4)
    norm = ActNorm(3)
    x = 2.0 + 3.0 * torch.randn(16, 3, 4, 4)
    y, _ = norm(x)
    assert torch.allclose(y.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(y.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4)
    other = torch.randn(16, 3, 4, 4)
    loaded = ActNorm(3)
    loaded.load_state_dict(norm.state_dict())
    assert int(loaded.initialized) == 1
    assert torch.equal(loaded(other)[0], norm(other)[0])  # no re-initialisation on new data
    fresh = ActNorm(3)
    fresh.load_state_dict(ActNorm(3).state_dict())  # an uninitialised state stays so
    assert not fresh.ready


def _make_identity(model: Glow) -> None:
    """ActNorm (loc 0, log-scale 0, marked initialised) and 1x1 convs set to the identity."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, ActNorm):
                m.loc.zero_()
                m.logs.zero_()
                m.initialized.fill_(1)
            elif isinstance(m, InvConv2d):
                eye = torch.eye(m.log_s.shape[0]) if m.lu else torch.eye(m.weight.shape[0])
                if m.lu:
                    m.p.copy_(eye)
                    m.sign_s.fill_(1)
                    m.lower.zero_()
                    m.upper.zero_()
                    m.log_s.zero_()
                else:
                    m.weight.copy_(eye)


@pytest.mark.parametrize("lu", [True, False])
def test_bits_per_dim_of_a_known_case(lu: bool) -> None:
    # levels=2, depth=1, 1 channel, 4x4 image of constant level 100 (no noise). With ActNorm and
    # the 1x1 convs at identity and the couplings at their zero init, each coupling scales its
    # second half by s = sigmoid(2) (log-det (#dims/2) log s) and every prior is N(0, 1):
    #   level 0: 16 dims; 8 scaled (the split-off half), logdet 8 log s
    #   level 1: the 8 kept dims; 4 scaled, logdet 4 log s; all 8 go to the top prior
    # so 4 dims equal y0 and 12 equal s*y0, with y0 = (100 + 0.5) / 256 - 0.5.
    model = Glow(in_channels=1, levels=2, depth=1, width=4, lu=lu)
    _make_identity(model)
    y, const = preprocess(torch.full((1, 1, 4, 4), 100, dtype=torch.uint8), noise=False)
    y0 = (100 + 0.5) / 256 - 0.5
    s = 1.0 / (1.0 + math.exp(-2.0))
    log_p = -8 * math.log(2 * math.pi) - 0.5 * (4 * y0**2 + 12 * (s * y0) ** 2)
    logdet = 12 * math.log(s)
    expected = -(log_p + logdet - 16 * 8 * math.log(2)) / (16 * math.log(2))
    assert const.item() == pytest.approx(-16 * 8 * math.log(2))
    got = bits_per_dim(model.log_prob(y) + const, 16)
    assert got.item() == pytest.approx(expected, abs=1e-5)
    # 8 bits + log2(2 pi) / 2 (1.3257) - (12 / 16) log2(s) (0.1372) + y0 terms (0.0071).
    assert expected == pytest.approx(9.4700, abs=1e-4)


def test_preprocess_mapping_and_bits() -> None:
    x = torch.tensor([[[[0, 255]]]], dtype=torch.uint8)
    y, const = preprocess(x, noise=False)
    assert torch.allclose(y, torch.tensor([[[[0.5 / 256 - 0.5, 255.5 / 256 - 0.5]]]]))
    assert const.item() == pytest.approx(-2 * 8 * math.log(2))
    y_float, _ = preprocess(x.float() / 255.0, noise=False)
    assert torch.equal(y_float, y)
    y5, const5 = preprocess(x, n_bits=5, noise=False)
    assert torch.allclose(y5, torch.tensor([[[[0.5 / 32 - 0.5, 31.5 / 32 - 0.5]]]]))
    assert const5.item() == pytest.approx(-2 * 5 * math.log(2))
    torch.manual_seed(5)
    noisy, _ = preprocess(torch.full((1000,), 7, dtype=torch.uint8)[None], noise=True)
    assert noisy.min() >= 7 / 256 - 0.5 and noisy.max() < 8 / 256 - 0.5
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        preprocess(torch.tensor([[1.5]]))


def test_pixel_nll_map_sums_to_the_nll(glow64: Glow) -> None:
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64) - 0.5
    x[0, 0, :4, :4] += 2.0  # an "anomaly" in one quadrant of image 0
    nll_map = glow64.pixel_nll_map(x)
    assert nll_map.shape == (3, 8, 8)
    assert torch.allclose(nll_map.sum(dim=(1, 2)), -glow64.log_prob(x), atol=1e-8)
    # The quadrant's share of the NLL grows where the input is unusual.
    assert nll_map[0, :4, :4].mean() > nll_map[1, :4, :4].mean()


def test_checkpointing_gives_the_same_gradients() -> None:
    torch.manual_seed(6)
    plain = Glow(in_channels=1, levels=2, depth=2, width=8)
    ckpt = Glow(in_channels=1, levels=2, depth=2, width=8, checkpointing=True)
    x = torch.rand(4, 1, 8, 8) - 0.5
    plain(x)
    _randomise_zero_convs(plain)
    ckpt.load_state_dict(plain.state_dict())
    grads = []
    for model in (plain, ckpt):
        model.zero_grad()
        (-model.log_prob(x).mean()).backward()
        grads.append(
            torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None])
        )
    assert torch.allclose(grads[0], grads[1], atol=1e-5)
    assert grads[0].abs().sum() > 0


def test_first_call_with_checkpointing_initialises_actnorm() -> None:
    torch.manual_seed(7)
    model = Glow(in_channels=1, levels=2, depth=2, width=8, checkpointing=True)
    loss = -model.log_prob(torch.rand(4, 1, 8, 8) - 0.5).mean()
    loss.backward()
    assert all(m.ready for m in model.modules() if isinstance(m, ActNorm))


def test_a_few_steps_lower_the_nll() -> None:
    torch.manual_seed(8)
    model = Glow(in_channels=1, levels=2, depth=2, width=16)
    images = (torch.rand(16, 1, 1, 1) * 200 + torch.rand(16, 1, 8, 8) * 40).to(torch.uint8)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        y, const = preprocess(images)
        loss = bits_per_dim(model.log_prob(y) + const, 64).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.3


@pytest.mark.parametrize(
    ("shape", "match"), [((1, 3, 8, 8), r"\[B, 1, H, W\]"), ((1, 1, 12, 8), "divisible")]
)
def test_bad_shapes_raise(shape: tuple[int, ...], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Glow(in_channels=1, levels=3, depth=1, width=4)(torch.zeros(shape))
