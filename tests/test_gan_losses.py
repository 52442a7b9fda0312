"""GAN losses (modules/models/gan_losses.py) against values computed by hand."""

import math

import pytest
import torch

from modules.models.gan_losses import (
    LOSS_KINDS,
    discriminator_accuracy,
    discriminator_loss,
    generator_loss,
    gradient_penalty,
)

D_REAL = torch.tensor([2.0, -1.0])
D_FAKE = torch.tensor([0.5, -3.0])


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_standard_loss_by_hand():
    # D: -log s(r) - log(1 - s(f)) = softplus(-r) + softplus(f), each averaged over rows
    want_d = (softplus(-2.0) + softplus(1.0)) / 2 + (softplus(0.5) + softplus(-3.0)) / 2
    assert discriminator_loss("standard", D_REAL, D_FAKE).item() == pytest.approx(want_d, rel=1e-6)
    # non-saturating G: -log s(f)
    want_g = (softplus(-0.5) + softplus(3.0)) / 2
    assert generator_loss("standard", None, D_FAKE).item() == pytest.approx(want_g, rel=1e-6)


def test_relativistic_loss_by_hand():
    # pairs: r - f = [1.5, 2.0]
    want_d = (softplus(-1.5) + softplus(-2.0)) / 2
    want_g = (softplus(1.5) + softplus(2.0)) / 2
    assert discriminator_loss("rsgan", D_REAL, D_FAKE).item() == pytest.approx(want_d, rel=1e-6)
    assert generator_loss("rsgan", D_REAL, D_FAKE).item() == pytest.approx(want_g, rel=1e-6)
    with pytest.raises(ValueError):
        generator_loss("rsgan", None, D_FAKE)


def test_hinge_loss_by_hand():
    # D: relu(1 - r) = [0, 2] -> 1; relu(1 + f) = [1.5, 0] -> 0.75
    assert discriminator_loss("hinge", D_REAL, D_FAKE).item() == pytest.approx(1.75)
    assert generator_loss("hinge", None, D_FAKE).item() == pytest.approx(1.25)


def test_wgan_loss_by_hand():
    # mean(f) - mean(r) = -1.25 - 0.5
    assert discriminator_loss("wgan-gp", D_REAL, D_FAKE).item() == pytest.approx(-1.75)
    assert generator_loss("wgan-gp", None, D_FAKE).item() == pytest.approx(1.25)


def test_unknown_loss_is_refused():
    with pytest.raises(ValueError, match="loss must be one of"):
        discriminator_loss("lsgan", D_REAL, D_FAKE)


@pytest.mark.parametrize("kind", LOSS_KINDS)
def test_generator_loss_falls_as_fakes_look_more_real(kind):
    better = D_FAKE + 1.0
    assert generator_loss(kind, D_REAL, better) < generator_loss(kind, D_REAL, D_FAKE)
    assert discriminator_loss(kind, D_REAL, better) > discriminator_loss(kind, D_REAL, D_FAKE)


def test_gradient_penalty_of_a_linear_critic():
    # D(x) = <w, x>: the gradient is w everywhere, so the penalty is (||w|| - 1)^2 at every interpolant
    w = torch.tensor([[3.0, 0.0], [0.0, 4.0]])  # (L, E), ||w|| = 5
    real, fake = torch.randn(6, 2, 2), torch.randn(6, 2, 2)
    penalty = gradient_penalty(lambda x: (x * w).flatten(1).sum(dim=1), real, fake)
    assert penalty.item() == pytest.approx(16.0, rel=1e-5)


def test_gradient_penalty_trains_the_critic():
    w = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
    penalty = gradient_penalty(lambda x: x @ w, torch.randn(5, 2), torch.randn(5, 2))
    penalty.backward()
    # d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w|| = 2 * 4 * w / 5
    torch.testing.assert_close(w.grad, 1.6 * w.detach())


def test_accuracy_absolute_and_relative():
    acc_real, acc_fake = discriminator_accuracy("standard", D_REAL, D_FAKE)
    assert (acc_real.item(), acc_fake.item()) == (0.5, 0.5)
    # relative: real rows vs mean(fake) = -1.25 -> both real; fake rows vs mean(real) = 0.5 -> only -3
    acc_real, acc_fake = discriminator_accuracy("rsgan", D_REAL, D_FAKE)
    assert (acc_real.item(), acc_fake.item()) == (1.0, 0.5)
