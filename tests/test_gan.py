"""The text GAN family: estimators (Gumbel-softmax, REINFORCE), the TextGAN LightningModule's phases and
updates, checkpoints and resumption, determinism, configs."""

import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from experiments.core.families import merge_args
from modules.data import OracleDataModule
from modules.models import TextGAN
from modules.models.configs import nest_flat_args
from modules.models.gan_estimators import (
    after_end_mask,
    discounted_returns,
    gumbel_temperature,
    gumbel_unroll,
    policy_log_probs,
    real_for_discriminator,
    reinforce_loss,
    rewards_from_logits,
    rollout_values,
    terminal_rewards,
    update_baseline,
)
from modules.models.gan_losses import generator_loss
from modules.nets.discriminators import build_discriminator
from modules.nets.lstm_generator import LSTMGenerator
from modules.nets.transformer import EncoderDecoderTransformer, TransformerConfig
from modules.sampling import generate
from checkpointing import SaveAtEpochEnd

V = 30
BANNED = (0, 1, 3, 4)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny nets: extra threads only add contention
    yield
    torch.set_num_threads(n)


def null_src(B):
    return torch.full((B, 1), 4), torch.zeros(B, 1, dtype=torch.bool)


def lstm(z_dim=0):
    torch.manual_seed(0)
    return LSTMGenerator(V, 16, 16, z_dim=z_dim)


def transformer(z_dim=0):
    torch.manual_seed(0)
    return EncoderDecoderTransformer(TransformerConfig(V, d_model=16, n_heads=2, n_encoder_layers=1,
                                                       n_decoder_layers=1, d_ff=32, dropout=0.0, max_len=32,
                                                       z_dim=z_dim))


# ---------------------------------------------------------------------------------------------------------
# Gumbel-softmax


def test_temperature_schedules():
    assert gumbel_temperature(0, 100.0, 10, "exp") == pytest.approx(1.0)
    assert gumbel_temperature(5, 100.0, 10, "exp") == pytest.approx(10.0)
    assert gumbel_temperature(10, 100.0, 10, "exp") == pytest.approx(100.0)
    assert gumbel_temperature(50, 100.0, 10, "exp") == pytest.approx(100.0)  # stays at the max
    assert gumbel_temperature(5, 101.0, 10, "linear") == pytest.approx(51.0)
    assert gumbel_temperature(0, 100.0, 10, "constant") == 100.0
    with pytest.raises(ValueError):
        gumbel_temperature(0, 100.0, 10, "cosine")


@pytest.mark.parametrize("make", [lstm, transformer])
@pytest.mark.parametrize("straight_through", [False, True])
def test_gumbel_path_gives_the_generator_adversarial_gradients(make, straight_through):
    net = make(z_dim=3)
    D = build_discriminator("cnn", V, emb_dim=8, filter_sizes=(2, 3), num_filters=4, dropout=0.0)
    src, mask = null_src(5)
    out = gumbel_unroll(net, src, mask, length=6, min_length=6, temperature=2.0, banned_ids=BANNED,
                        z=torch.randn(5, 3), straight_through=straight_through)
    assert out.onehots.shape == (5, 6, V) and out.tokens.shape == (5, 6)
    assert not out.pad_mask.any()  # fixed length: no end token, no padding
    assert not torch.isin(out.tokens, torch.tensor(BANNED + (2,))).any()  # banned ids and early EOS never
    # the hard tokens are the argmax of the relaxed one-hots
    assert torch.equal(out.onehots.argmax(-1), out.tokens)
    if straight_through:
        assert torch.equal(out.onehots, F.one_hot(out.tokens, V).float())
    loss = generator_loss("standard", None, D(out.onehots, src, mask, out.pad_mask))
    loss.backward()
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert grads and sum(g.abs().sum() for g in grads) > 0


def test_gumbel_rows_end_at_the_end_token():
    net = lstm()
    with torch.no_grad():
        net.head.bias[2] += 50.0  # make EOS by far the likeliest token
    src, mask = null_src(3)
    out = gumbel_unroll(net, src, mask, length=5, min_length=2, temperature=1.0, banned_ids=BANNED)
    assert (out.tokens[:, 2] == 2).all()  # EOS as soon as allowed
    assert (out.tokens[:, 3:] == 0).all() and out.pad_mask[:, 3:].all() and not out.pad_mask[:, :3].any()
    assert (out.onehots[:, 3:] == 0).all()  # padding is zero input to D


def test_real_sequences_take_the_fake_layout():
    tgt = torch.tensor([[1, 7, 8, 9, 2], [1, 7, 2, 0, 0]])
    ids, pad = real_for_discriminator(tgt, 3)  # fixed length 3: the end token falls outside
    assert ids.tolist() == [[7, 8, 9], [7, 2, 0]] and pad.tolist() == [[False] * 3, [False, False, True]]
    ids, _ = real_for_discriminator(tgt, 6)
    assert ids.tolist() == [[7, 8, 9, 2, 0, 0], [7, 2, 0, 0, 0, 0]]


# ---------------------------------------------------------------------------------------------------------
# REINFORCE


def test_rewards_increase_with_the_discriminator_score():
    logits = torch.tensor([-5.0, 0.0, 5.0])
    r = rewards_from_logits(logits)
    assert r[1] == 0 and (r.diff() > 0).all() and r.abs().max() < 1


def test_discounted_returns_by_hand():
    rewards = torch.tensor([[1.0, 0.0, 2.0], [1.0, 1.0, 9.0]])
    pad = torch.tensor([[False, False, False], [False, False, True]])
    R = discounted_returns(rewards, pad, 0.5)
    assert R.tolist() == [[1.5, 1.0, 2.0], [1.5, 1.0, 0.0]]  # padding earns nothing and passes nothing back


def test_terminal_rewards_sit_at_the_last_real_token():
    pad = torch.tensor([[False, False, False], [False, True, True]])
    r = terminal_rewards(torch.tensor([0.3, -0.7]), pad)
    torch.testing.assert_close(r, torch.tensor([[0.0, 0.0, 0.3], [-0.7, 0.0, 0.0]]))


def test_baseline_moving_average_and_advantage_sign():
    baseline = torch.zeros(6)
    returns = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    pad = torch.tensor([[False, False], [False, True]])
    first = update_baseline(baseline, returns, pad, 0.9, initialized=False)
    assert first.tolist() == [2.0, 2.0, 0, 0, 0, 0]  # the batch means; position 1 counts row 0 only
    second = update_baseline(first, torch.tensor([[12.0, 2.0], [12.0, 2.0]]), pad, 0.9, initialized=True)
    assert second[:2].tolist() == pytest.approx([0.9 * 2 + 0.1 * 12, 2.0])
    # advantage = return - baseline: a better-than-usual sequence gets its log-prob pushed up
    logp = torch.zeros(2, 2, requires_grad=True)
    adv = (returns - first[:2]).masked_fill(pad, 0.0)
    reinforce_loss(logp, adv, pad).backward()
    assert logp.grad[1, 0] < 0 < logp.grad[0, 0]  # descent raises logp where advantage > 0 (row 1: 3 > 2)
    assert logp.grad[1, 1] == 0  # padding


def test_policy_log_probs_match_the_sampling_distribution():
    net = lstm()
    src, mask = null_src(4)
    out = generate(net, src, mask, max_new_tokens=5, min_new_tokens=2, banned_ids=BANNED,
                   generator=torch.Generator().manual_seed(0))
    tokens = F.pad(out.tokens, (0, 5 - out.tokens.size(1)))
    pad = after_end_mask(tokens) | tokens.eq(0)
    logp = policy_log_probs(net, src, mask, tokens, pad, min_length=2, banned_ids=BANNED)
    # by hand: teacher forcing, ban, renormalise
    logits = net(src, mask, torch.cat([torch.ones(4, 1, dtype=torch.long), tokens[:, :-1]], 1))
    ban = torch.zeros(5, V, dtype=torch.bool)
    ban[:, list(BANNED)] = True
    ban[:2, 2] = True
    want = F.log_softmax(logits.masked_fill(ban, -math.inf), -1).gather(-1, tokens.clamp(min=2).unsqueeze(-1))
    torch.testing.assert_close(logp, want.squeeze(-1).masked_fill(pad, 0.0))
    assert torch.isfinite(logp).all() and logp.requires_grad


def test_rollout_values_score_prefix_completions():
    net = lstm()
    src, mask = null_src(3)
    tokens = generate(net, src, mask, max_new_tokens=4, min_new_tokens=4, banned_ids=BANNED).tokens
    seen = []

    def score(ids, pad, s, sm):
        seen.append(ids.clone())
        return (ids[:, 0] == tokens[0, 0]).float()  # rewards sequences that share row 0's first token

    Q = rollout_values(net, src, mask, tokens, score_fn=score, num_rollouts=2, min_length=4, banned_ids=BANNED)
    assert Q.shape == (3, 4)
    # L - 1 rollout rounds of K * B completions, then the sequences themselves
    assert [s.shape[0] for s in seen] == [6, 6, 6, 3]
    for t, completions in enumerate(seen[:-1]):  # every completion keeps its prefix
        assert torch.equal(completions[:, : t + 1], tokens.repeat(2, 1)[:, : t + 1])
    assert (Q[0] == 1).all()  # row 0's prefix always starts with its own first token


# ---------------------------------------------------------------------------------------------------------
# the LightningModule


def tiny_data(**kw):
    args = dict(preset="small", vocab_size=25, seq_len=6, num_train=64, num_val=16, num_test=16, batch_size=16)
    args.update(kw)
    return OracleDataModule(**args)


TINY_GAN = dict(
    generator=dict(emb_dim=16, hidden_dim=16, d_model=16, n_heads=2, n_encoder_layers=1, n_decoder_layers=1,
                   d_ff=32, dropout=0.0, max_len=32, lr=1e-2),
    discriminator=dict(emb_dim=16, hidden_dim=16, filter_sizes=(2, 3), num_filters=8, dropout=0.0, lr=1e-2),
    game=dict(anneal_steps=10), evaluation=dict(num_eval_samples=0))


def tiny_gan(dm, **kw):
    """TINY_GAN with overrides named by their former flat names (``modules.models.configs.FLAT_TO_NESTED``)."""
    return TextGAN(dm.vocab_size, **merge_args(TINY_GAN, nest_flat_args(kw)))


class Recorder(pl.Callback):
    """Logged training metrics after every batch."""

    def __init__(self):
        self.rows = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.rows.append({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")})


def trainer(tmp_path=None, callbacks=(), **kw):
    args = dict(accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
                enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                callbacks=list(callbacks), default_root_dir=tmp_path)
    args.update(kw)
    return pl.Trainer(**args)


def fit(model, dm, seed=0, **kw):
    pl.seed_everything(seed, verbose=False)
    rec = Recorder()
    trainer(callbacks=[rec, *kw.pop("callbacks", [])], **kw).fit(model, dm)
    return rec.rows


def snapshot(module):
    return [p.detach().clone() for p in module.parameters()]


def changed(before, module):
    return any(not torch.equal(a, b) for a, b in zip(before, module.parameters()))


class WatchedGAN(TextGAN):
    """Records which networks each optimizer step changed."""

    def _step(self, opt, loss, params):
        g, d = snapshot(self.generator), snapshot(self.discriminator)
        norm = super()._step(opt, loss, params)
        which = {id(o): name for o, name in zip(self.optimizers(), ("g", "d", "mle"))}[id(opt)]
        self.changes.append((which, changed(g, self.generator), changed(d, self.discriminator)))
        return norm


def watched(dm, **kw):
    model = WatchedGAN(**tiny_gan(dm, **kw).hparams)
    model.changes = []
    return model


def test_pretraining_changes_only_the_generator_and_reuses_the_mle_loss():
    dm = tiny_data()
    model = watched(dm, pretrain_epochs=1)
    rows = fit(model, dm, limit_train_batches=2)
    assert model.changes == [("mle", True, False)] * 2
    assert "train/mle_loss" in rows[-1] and "train/d_loss" not in rows[-1]
    assert model.mle_updates == 2 and model.g_updates == 0


@pytest.mark.parametrize("estimator", ["gumbel", "reinforce"])
def test_adversarial_steps_change_only_their_own_network(estimator):
    dm = tiny_data()
    model = watched(dm, estimator=estimator, d_steps=2)
    g0, d0 = snapshot(model.generator), snapshot(model.discriminator)
    rows = fit(model, dm, limit_train_batches=2)
    assert model.changes == [("d", False, True), ("d", False, True), ("g", True, False)] * 2
    assert changed(g0, model.generator) and changed(d0, model.discriminator)
    for key in ("g_loss", "d_loss", "d_acc_real", "d_acc_fake", "g_grad_norm", "d_grad_norm", "g_updates"):
        assert math.isfinite(rows[-1][f"train/{key}"]), key
    assert rows[-1]["train/g_grad_norm"] > 0 and rows[-1]["train/d_grad_norm"] > 0
    assert ("train/gumbel_temperature" in rows[-1]) == (estimator == "gumbel")
    assert model.g_updates == 2 and rows[-1]["train/g_updates"] == 2
    if estimator == "reinforce":
        assert bool(model.estimator.baseline_initialized) and model.estimator.baseline[:6].abs().sum() > 0
        assert "estimator.baseline" in model.state_dict()  # checkpointed


def test_pretraining_then_adversarial_phase():
    dm = tiny_data()
    model = watched(dm, pretrain_epochs=1)
    fit(model, dm, max_epochs=2, limit_train_batches=1)
    assert [c[0] for c in model.changes] == ["mle", "d", "g"]


@pytest.mark.parametrize("loss", ["standard", "rsgan", "hinge", "wgan-gp"])
@pytest.mark.parametrize("discriminator", ["cnn", "transformer", "lstm"])
def test_every_loss_and_discriminator_trains_one_step(loss, discriminator):
    dm = tiny_data()
    model = tiny_gan(dm, loss=loss, discriminator=discriminator, minibatch_std=discriminator == "cnn")
    rows = fit(model, dm, limit_train_batches=1)
    assert math.isfinite(rows[-1]["train/g_loss"]) and math.isfinite(rows[-1]["train/d_loss"])


@pytest.mark.parametrize("discriminator,rollouts", [("lstm", 0), ("cnn", 0), ("cnn", 2), ("transformer", 0)])
def test_reinforce_variants_train_one_step(discriminator, rollouts):
    dm = tiny_data()
    model = tiny_gan(dm, estimator="reinforce", discriminator=discriminator, rollouts=rollouts)
    rows = fit(model, dm, limit_train_batches=1)
    assert math.isfinite(rows[-1]["train/g_loss"]) and -1 <= rows[-1]["train/mean_return"] <= 1 / (1 - 0.95)


@pytest.mark.parametrize("estimator", ["gumbel", "reinforce"])
def test_batch_of_one_trains(estimator):
    """The batch-size sweep goes down to one sample: the game must still run (if meaninglessly)."""
    dm = tiny_data(batch_size=1)
    model = tiny_gan(dm, estimator=estimator, minibatch_std=True, loss="rsgan")
    rows = fit(model, dm, limit_train_batches=2)
    assert math.isfinite(rows[-1]["train/g_loss"]) and model.g_updates == 2


@pytest.mark.parametrize("estimator", ["gumbel", "reinforce"])
def test_transformer_generator_with_latent(estimator):
    dm = tiny_data(condition="label", num_classes=2)
    model = tiny_gan(dm, generator="transformer", z_dim=4, estimator=estimator, straight_through=True,
                     num_eval_samples=8)
    fit(model, dm, limit_train_batches=1, limit_val_batches=1)
    gen = torch.Generator().manual_seed(3)
    z1, z2 = model.latent(2, gen), model.latent(2, torch.Generator().manual_seed(3))
    assert z1.shape == (2, 4) and torch.equal(z1, z2)
    assert tiny_gan(dm).latent(2) is None


def test_text_data_generation_lengths_and_variable_length_fakes(tmp_path):
    """Text data: no fixed length, fakes may end early; D sees words + EOS padded to a common length."""
    from modules.data import TextDataModule

    lines = ["a b c", "a b", "b c a b", "c", "a c b"] * 8
    path = tmp_path / "train.txt"
    path.write_text("\n".join(lines) + "\n")
    dm = TextDataModule(format="lines", train=str(path), val_fraction=0.2, test_fraction=0.2, batch_size=8)
    for estimator in ("gumbel", "reinforce"):
        model = tiny_gan(dm, estimator=estimator, discriminator="lstm")
        rows = fit(model, dm, limit_train_batches=2)
        assert math.isfinite(rows[-1]["train/g_loss"])
        assert model.generation_lengths() == (0, 5)


def test_same_seed_same_losses():
    dm = tiny_data()
    runs = []
    for _ in range(2):
        pl.seed_everything(7, verbose=False)  # the seed fixes the initial weights too
        runs.append(fit(tiny_gan(dm, pretrain_epochs=1, d_steps=2), dm, seed=7, max_epochs=2, limit_train_batches=3))
    assert runs[0] == runs[1]
    assert {"train/mle_loss", "train/g_loss", "train/d_loss"} <= set(runs[0][-1])


def test_checkpoint_holds_both_optimizers_and_resume_continues_the_schedule(tmp_path):
    dm = tiny_data()
    kw = dict(anneal_steps=8, max_temperature=50.0, lr_schedule="cosine", warmup_steps=2)

    class Temps(pl.Callback):
        def __init__(self):
            self.seen = {}

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.seen[pl_module.g_updates] = pl_module.temperature

    full = Temps()
    fit(tiny_gan(dm, **kw), dm, max_epochs=2, limit_train_batches=3, callbacks=[full])

    path = tmp_path / "last.ckpt"
    fit(tiny_gan(dm, **kw), dm, max_epochs=1, limit_train_batches=3, callbacks=[SaveAtEpochEnd(path)])
    ckpt = torch.load(path, weights_only=True)
    assert len(ckpt["optimizer_states"]) == 3  # G, D, and G's pretraining optimizer
    assert all(s["state"] for s in ckpt["optimizer_states"][:2])  # Adam moments of G and D
    assert len(ckpt["lr_schedulers"]) == 2 and ckpt["lr_schedulers"][0]["last_epoch"] == 3
    assert ckpt["lr_schedulers"][1]["last_epoch"] == 3  # one D step per batch here
    assert int(ckpt["state_dict"]["g_update_count"]) == 3
    assert ckpt["text_gan"]["g_updates"] == 3

    resumed_temps = Temps()
    resumed = tiny_gan(dm, **kw)
    pl.seed_everything(0, verbose=False)
    trainer(max_epochs=2, limit_train_batches=3, callbacks=[resumed_temps]).fit(resumed, dm, ckpt_path=str(path))
    assert resumed.g_updates == 6
    assert sorted(resumed_temps.seen) == [4, 5, 6]
    for step, temp in resumed_temps.seen.items():
        assert temp == pytest.approx(full.seen[step])
    assert resumed.temperature == pytest.approx(50.0 ** (6 / 8))
    # the schedulers carried on too
    assert resumed.lr_schedulers()[0].last_epoch == 6


def test_gvt_sample_loads_a_gan_checkpoint(tmp_path, capsys):
    from modules.sample_cli import load_model, main

    dm = tiny_data()
    model = tiny_gan(dm, generator="transformer", z_dim=2)
    tr = trainer(tmp_path, limit_train_batches=1, enable_checkpointing=True,
                 callbacks=[pl.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True)])
    tr.fit(model, dm)
    loaded = load_model(str(tmp_path / "last.ckpt"))
    assert isinstance(loaded, TextGAN) and loaded.vocab == dm.vocab and loaded.g_updates == 1
    assert main(["--checkpoint", str(tmp_path / "last.ckpt"), "--num-samples", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and all(len(line.split()) == 6 for line in lines)


def test_max_g_updates_stops_training():
    dm = tiny_data()
    model = tiny_gan(dm, max_g_updates=2)
    fit(model, dm, max_epochs=3)
    assert model.g_updates == 2


def test_bad_arguments_are_refused():
    dm = tiny_data()
    with pytest.raises(ValueError, match="d_steps"):
        tiny_gan(dm, d_steps=0)
    with pytest.raises(ValueError, match="max_temperature"):
        tiny_gan(dm, max_temperature=0.5)
    with pytest.raises(ValueError, match="generator"):
        tiny_gan(dm, generator="gru")


# ---------------------------------------------------------------------------------------------------------
# configs

CONFIGS = ["gan_gumbel_oracle", "gan_reinforce_oracle", "gan_gumbel_oracle_small", "gan_reinforce_oracle_small",
           "gan_gumbel_coco", "gan_gumbel_mr"]


@pytest.mark.slow
@pytest.mark.parametrize("name", CONFIGS)
def test_config_parses(name, capsys):
    from modules.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(ROOT / "configs" / "experiment" / f"{name}.yaml"), "--print_config"])
    assert exit_info.value.code in (0, None)
    assert "modules.models.TextGAN" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gan_gumbel_oracle_small", "gan_reinforce_oracle_small"])
def test_small_config_runs_end_to_end(name, tmp_path):
    from modules.cli import main
    from modules.sample_cli import main as sample_main

    main(["fit", "--config", str(ROOT / "configs" / "experiment" / f"{name}.yaml"), "--trainer.max_epochs", "3",
          "--model.init_args.game.pretrain_epochs", "1", "--trainer.limit_train_batches", "4",
          "--trainer.default_root_dir", str(tmp_path), "--tracking.wandb_mode", "disabled",
          "--trainer.enable_progress_bar", "false"])
    ckpts = sorted(tmp_path.rglob("*.ckpt"))
    assert ckpts
    assert sample_main(["--checkpoint", str(ckpts[-1]), "--num-samples", "2"]) == 0
