"""Issue 9, the REINFORCE and WGAN-GP confounds: a baseline whose horizon counts samples, rewards that depend
only on what the D loss determines, log-probabilities of the distribution that drew the tokens (dropout on),
a first update that is not zero at batch size 1, and a WGAN-GP penalty on D's one-hot input."""

import math

import pytest
import pytorch_lightning as pl
import torch

import modules.models.gan_estimators as estimators
import modules.models.gan_losses as gan_losses
import modules.sampling as sampling
from experiments.core.families import merge_args
from modules.data import OracleDataModule
from modules.models import TextGAN
from modules.models.configs import nest_flat_args
from modules.models.gan_estimators import (
    policy_log_probs,
    real_for_discriminator,
    real_logit_reference,
    rewards_for_loss,
    update_sample_baseline,
)

SEQ_LEN = 6


def tiny_data(batch_size=8, **kw):
    dm = OracleDataModule(preset="small", vocab_size=25, seq_len=SEQ_LEN, num_train=64, num_val=16, num_test=16,
                          batch_size=batch_size, **kw)
    return dm


TINY_GAN = dict(
    generator=dict(arch="lstm", emb_dim=16, hidden_dim=16, d_model=16, n_heads=2, n_encoder_layers=1,
                   n_decoder_layers=1, d_ff=32, dropout=0.0, max_len=32, lr=1e-2),
    discriminator=dict(emb_dim=16, hidden_dim=16, filter_sizes=(2, 3), num_filters=8, dropout=0.0, lr=1e-2),
    game=dict(anneal_steps=10, estimator="reinforce"), evaluation=dict(num_eval_samples=0))


def tiny_gan(dm, **kw):
    """TINY_GAN with overrides named by their former flat names (``modules.models.configs.FLAT_TO_NESTED``)."""
    return TextGAN(dm.vocab_size, **merge_args(TINY_GAN, nest_flat_args(kw)))


def attached(model, dm):
    """The model as `setup` leaves it inside a fit (vocabulary and data lengths), for calling its loss helpers
    directly; -> (model, one training batch, real ids, real pad mask, L)."""
    dm.prepare_data()
    dm.setup("fit")
    model.vocab = dm.vocab
    model._data_info = {"fixed_length": dm.seq_len, "max_length": dm.max_target_length}
    batch = next(iter(dm.train_dataloader()))
    _, L = model.generation_lengths()
    real, real_pad = real_for_discriminator(batch.tgt, L)
    return model, batch, real, real_pad, L


def fit(model, dm, **kw):
    pl.seed_everything(0, verbose=False)
    args = dict(accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
                enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    args.update(kw)
    pl.Trainer(**args).fit(model, dm)


# ---------------------------------------------------------------------------------------------------------
# 1. the baseline's horizon is counted in samples


def sample_weights(batch_size: int, total: int, horizon: float) -> torch.Tensor:
    """The weight of every one of `total` returns (one position) in the baseline after all of them were fed
    in batches of `batch_size`: the baseline is linear in the returns, so its gradient gives the weights."""
    returns = torch.randn(total, 1, requires_grad=True)
    baseline, weight = torch.zeros(1), torch.zeros(1)
    for start in range(0, total, batch_size):
        chunk = returns[start:start + batch_size]
        baseline, weight = update_sample_baseline(baseline, weight, chunk, torch.zeros_like(chunk, dtype=torch.bool),
                                                  horizon)
    (grad,) = torch.autograd.grad(baseline[0], returns)
    return grad.squeeze(1)


def test_baseline_averages_as_many_samples_at_batch_1_as_at_batch_64():
    horizon, total = 640.0, 6400
    ess = {}
    for b in (1, 64):
        w = sample_weights(b, total, horizon)
        assert w.sum().item() == pytest.approx(1.0, abs=1e-4)  # an average (bias-corrected), not shrunk to 0
        assert (w[1:] >= w[:-1] - 1e-9).all()  # newer samples weigh at least as much as older ones
        ess[b] = (w.sum() ** 2 / (w ** 2).sum()).item()  # Kish's effective number of samples
    # an exponential weighting with a time constant of H samples has an effective sample size of about 2 H
    assert ess[1] == pytest.approx(2 * horizon, rel=0.05)
    assert ess[64] == pytest.approx(ess[1], rel=0.05)


def test_text_gan_baseline_forgets_per_sample_not_per_update():
    """Four updates of 2 samples leave the baseline's history with the same weight as one update of 8."""
    weights = {}
    for batch_size, updates in ((2, 4), (8, 1)):
        dm = tiny_data(batch_size=batch_size)
        model = tiny_gan(dm, baseline_horizon_samples=20.0)
        fit(model, dm, limit_train_batches=updates)
        assert model.g_updates == updates
        weights[batch_size] = model.estimator.baseline_weight[:SEQ_LEN].clone()
    assert (weights[8] > 0).all()
    torch.testing.assert_close(weights[2], weights[8])


@pytest.mark.parametrize("horizon", [0.0, -5.0])
def test_baseline_horizon_must_be_positive(horizon):
    with pytest.raises(ValueError, match="model.game.baseline_horizon_samples"):
        tiny_gan(tiny_data(), baseline_horizon_samples=horizon)


# ---------------------------------------------------------------------------------------------------------
# 2. rewards depend only on what the D loss determines


def reinforce_gradients(model, batch, real, real_pad, L, seed=0):
    """G's parameter gradients of the REINFORCE loss at its second update (the first fills the baseline), from a
    fresh baseline and the same random draws every call."""
    model.estimator.baseline.zero_()
    model.estimator.baseline_weight.zero_()
    torch.manual_seed(seed)
    model.estimator.generator_loss(model, batch, real, real_pad, L)
    loss, _ = model.estimator.generator_loss(model, batch, real, real_pad, L)
    params = list(model.generator.parameters())
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]


@pytest.mark.parametrize("discriminator,rollouts", [("cnn", 0), ("lstm", 0), ("cnn", 2)])
@pytest.mark.parametrize("loss", ["rsgan", "wgan-gp", "standard"])
def test_reinforce_gradient_ignores_a_shift_of_the_discriminator_logit_under_relativistic_losses(
        loss, discriminator, rollouts):
    dm = tiny_data(batch_size=4)
    torch.manual_seed(0)
    model, batch, real, real_pad, L = attached(tiny_gan(dm, loss=loss, discriminator=discriminator,
                                                        rollouts=rollouts), dm)
    before = reinforce_gradients(model, batch, real, real_pad, L)
    with torch.no_grad():
        model.discriminator.head.bias += 3.0  # a common shift of every logit D outputs
    after = reinforce_gradients(model, batch, real, real_pad, L)
    assert any(g.abs().sum() > 0 for g in before)
    if loss == "standard":  # the standard loss fixes the logit's level, and its sigmoid reward sees the shift
        assert any(not torch.allclose(a, b, rtol=1e-3, atol=1e-6) for a, b in zip(before, after))
    else:  # D(fake) - mean D(real): the shift cancels, per token (LSTM D), per sequence and in rollouts
        for a, b in zip(before, after):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_reward_per_loss():
    fake = torch.tensor([-2.0, 0.0, 3.0])
    reference = real_logit_reference(torch.tensor([1.0, 2.0]))
    torch.testing.assert_close(rewards_for_loss("standard", fake), 2 * torch.sigmoid(fake) - 1)
    torch.testing.assert_close(rewards_for_loss("hinge", fake), fake)
    for loss in ("rsgan", "wgan-gp"):
        torch.testing.assert_close(rewards_for_loss(loss, fake, reference), fake - 1.5)
        with pytest.raises(ValueError, match="relativistic"):
            rewards_for_loss(loss, fake)


def test_per_token_reference_is_the_real_mean_at_each_position():
    real = torch.tensor([[1.0, 2.0, 7.0], [3.0, 0.0, 0.0]])
    pad = torch.tensor([[False, False, True], [False, True, True]])
    # position 0: both rows; position 1: row 0 only; position 2: no real row -> the mean of every real token
    torch.testing.assert_close(real_logit_reference(real, pad), torch.tensor([2.0, 2.0, 2.0]))
    real[0, 1] = 5.0
    torch.testing.assert_close(real_logit_reference(real, pad), torch.tensor([2.0, 5.0, 3.0]))


# ---------------------------------------------------------------------------------------------------------
# 3. on-policy under dropout


def test_log_probs_in_the_gradient_are_those_the_tokens_were_drawn_from(monkeypatch):
    dm = tiny_data(batch_size=4)
    torch.manual_seed(0)
    model, batch, real, real_pad, L = attached(tiny_gan(dm, generator="transformer", g_dropout=0.5, z_dim=4), dm)
    model.train()
    draws, used = [], {}

    def recording_sampler(probs, generator=None, uniforms=None):
        tok = sampling.sample_from_probs.__wrapped__(probs, generator, uniforms)
        draws.append((probs.detach().clone(), tok.clone()))
        return tok

    recording_sampler.__wrapped__ = sampling.sample_from_probs
    for module in (sampling, estimators):  # wherever the GAN may draw its tokens from
        monkeypatch.setattr(module, "sample_from_probs", recording_sampler)

    original_loss = estimators.reinforce_loss

    def recording_loss(token_log_probs, advantages, pad_mask):
        used["log_probs"], used["pad"] = token_log_probs, pad_mask
        return original_loss(token_log_probs, advantages, pad_mask)

    monkeypatch.setattr(estimators, "reinforce_loss", recording_loss)
    torch.manual_seed(1)
    model.estimator.generator_loss(model, batch, real, real_pad, L)

    assert len(draws) == L  # one draw per position, no rollouts
    drawn = torch.stack([probs.gather(-1, tok.unsqueeze(-1)).squeeze(-1) for probs, tok in draws], dim=1)  # (B, L)
    valid = ~used["pad"]
    assert used["log_probs"].requires_grad
    torch.testing.assert_close(used["log_probs"][valid], drawn.log()[valid], rtol=1e-5, atol=1e-5)
    # the check can fail: re-scoring the same tokens teacher-forced draws other dropout masks, another policy
    tokens = torch.stack([tok for _, tok in draws], dim=1)
    min_len, _ = model.generation_lengths()
    with torch.no_grad():
        rescored = policy_log_probs(model.generator, batch.src, batch.src_pad_mask, tokens, used["pad"],
                                    min_length=min_len, banned_ids=model.banned_ids, z=model.latent(len(batch)))
    assert not torch.allclose(rescored[valid], drawn.log()[valid], atol=1e-3)


# ---------------------------------------------------------------------------------------------------------
# 4. the first update at batch size 1


class GradNorms(pl.Callback):
    def __init__(self):
        self.norms = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.norms.append(float(trainer.callback_metrics["train/g_grad_norm"]))


@pytest.mark.parametrize("loss", ["standard", "rsgan"])
@pytest.mark.parametrize("discriminator", ["cnn", "lstm"])
def test_first_reinforce_update_at_batch_size_1_moves_the_generator(loss, discriminator):
    dm = tiny_data(batch_size=1)
    torch.manual_seed(0)
    model = tiny_gan(dm, loss=loss, discriminator=discriminator)
    before = [p.detach().clone() for p in model.generator.parameters()]
    norms = GradNorms()
    fit(model, dm, limit_train_batches=1, callbacks=[norms])
    assert model.g_updates == 1
    assert norms.norms[0] > 0  # the advantages were not all zero
    assert any(not torch.equal(a, b) for a, b in zip(before, model.generator.parameters()))


# ---------------------------------------------------------------------------------------------------------
# 7. WGAN-GP: the penalty is on D's (soft) one-hot input


@pytest.mark.parametrize("estimator", ["reinforce", "gumbel"])
@pytest.mark.parametrize("discriminator", ["cnn", "transformer", "lstm"])
def test_gradient_penalty_is_taken_on_one_hots_and_reaches_the_embedding(monkeypatch, estimator, discriminator):
    dm = tiny_data(batch_size=4)
    torch.manual_seed(0)
    model, batch, real, real_pad, L = attached(tiny_gan(dm, loss="wgan-gp", estimator=estimator,
                                                        discriminator=discriminator), dm)
    seen = {}
    original = gan_losses.gradient_penalty

    def recording_penalty(score_fn, real_x, fake_x, generator=None):
        def score(x):
            seen["input"] = x
            return score_fn(x)

        seen["penalty"] = original(score, real_x, fake_x, generator)
        return seen["penalty"]

    monkeypatch.setattr(gan_losses, "gradient_penalty", recording_penalty)
    with torch.no_grad():
        fake, fake_pad = model.estimator.fakes(model, batch, L)
    model.discriminator_loss(batch, real, real_pad, fake, fake_pad)

    assert tuple(seen["input"].shape) == (len(batch), L, dm.vocab_size)
    emb = model.discriminator.emb.weight
    (grad,) = torch.autograd.grad(seen["penalty"], emb)
    condition_rows = set(batch.src.flatten().tolist())
    word_rows = [v for v in range(dm.vocab_size) if v not in condition_rows]
    # every word's embedding row is constrained, not only the condition's (which the old penalty reached)
    assert (grad[word_rows].abs().sum(dim=1) > 0).all()
    assert math.isfinite(seen["penalty"].item())


@pytest.mark.parametrize("era", ["flag", "weight"])
def test_a_checkpoint_from_before_the_estimator_objects_still_loads(era):
    """Old checkpoints kept the baseline on the module (`reinforce_baseline`), with its weight (`baseline_weight`)
    or, older still, a flag (`baseline_initialized`); they load into the estimator's buffers."""
    model = tiny_gan(tiny_data())
    state = model.state_dict()
    baseline = state.pop("estimator.baseline")
    baseline[:3] = torch.tensor([0.5, 0.2, 0.1])
    weight = state.pop("estimator.baseline_weight")
    state["reinforce_baseline"] = baseline
    if era == "flag":
        state["baseline_initialized"] = torch.tensor(True)  # the old flag buffer
    else:
        state["baseline_weight"] = weight.fill_(0.25)
    checkpoint = {"state_dict": state}
    model.on_load_checkpoint(checkpoint)
    model.load_state_dict(checkpoint["state_dict"])  # strict: the keys match again
    assert model.estimator.baseline_initialized and model.estimator.baseline[0] == 0.5
    assert model.estimator.baseline_weight[0] == (1.0 if era == "flag" else 0.25)


# ---------------------------------------------------------------------------------------------------------
# presets and report: REINFORCE arms train with the standard loss, and the report names the confound


@pytest.mark.parametrize("preset", ["quick", "smoke", "paper", "coco"])
def test_reinforce_arms_use_the_standard_loss_and_the_report_says_it_is_confounded(preset):
    from experiments.core.presets import get_preset
    from experiments.core.report import loss_confound_note

    settings = get_preset(preset).sweep
    assert settings.models["gan-reinforce"]["game"]["loss"] == "standard"
    assert settings.models["gan-gumbel"]["game"]["loss"] == "rsgan"
    note = loss_confound_note(settings.models, ["transformer", "gan-gumbel", "gan-reinforce"])
    assert "gan-reinforce `standard`" in note and "gan-gumbel `rsgan`" in note and "confounded" in note


def test_report_names_no_confound_when_the_estimators_share_a_loss():
    from experiments.core.report import loss_confound_note

    models = {"gan-gumbel": {"game": {"loss": "standard"}}, "gan-reinforce": {"game": {"loss": "standard"}}}
    assert loss_confound_note(models, ["gan-gumbel", "gan-reinforce"]) is None
    assert loss_confound_note({"gan-gumbel": {"game": {"loss": "rsgan"}}}, ["transformer", "gan-gumbel"]) is None
