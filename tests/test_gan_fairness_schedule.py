"""Fair GAN arms (issue 9, items 1, 8, 10): the Gumbel beta annealed over each run's own planned updates (same
final beta at every batch size and budget), underpowered runs kept out of the verdicts, one generator optimiser
for every family, and the null GAN with a frozen discriminator."""

import copy
import math

import pytest
import pytorch_lightning as pl
import torch

from experiments.core import report as R
from experiments.core import verdicts as V
from experiments.core.families import get_family
from experiments.core.families import merge_args
from experiments.core.presets import PRESETS, get_preset
from experiments.core.results import ResultsTable
from experiments.core.runner import _finish_wandb, run_one
from experiments.q2_batch_size import report as Q2R
from experiments.q2_batch_size.sweep import sweep_specs
from modules.data import OracleDataModule
from modules.models import TextGAN, TransformerSeq2Seq
from modules.models.configs import nest_flat_args
from checkpointing import SaveAtEpochEnd


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_data(**kw):
    args = dict(preset="small", vocab_size=25, seq_len=6, num_train=64, num_val=16, num_test=16, batch_size=16)
    args.update(kw)
    return OracleDataModule(**args)


TINY_GAN = dict(
    generator=dict(arch="transformer", z_dim=2, d_model=16, n_heads=2, n_encoder_layers=1, n_decoder_layers=1,
                   d_ff=32, dropout=0.0, max_len=32, lr=1e-2),
    discriminator=dict(emb_dim=16, filter_sizes=(2, 3), num_filters=8, dropout=0.0, lr=1e-2),
    evaluation=dict(num_eval_samples=0))


def tiny_gan(vocab_size=25, **kw):
    """TINY_GAN with overrides named by their former flat names (``modules.models.configs.FLAT_TO_NESTED``)."""
    return TextGAN(vocab_size, **merge_args(TINY_GAN, nest_flat_args(kw)))


class Recorder(pl.Callback):
    """Per generator update: the beta it used (the model's beta before the counter moved) and the logged metrics."""

    def __init__(self):
        self.beta, self.rows = {}, []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.beta[pl_module.g_updates] = pl_module.temperature

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.rows.append({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")})


def fit(model, dm, seed=0, callbacks=(), **kw):
    args = dict(accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
                enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    args.update(kw)
    pl.seed_everything(seed, verbose=False)
    rec = Recorder()
    trainer = pl.Trainer(callbacks=[rec, *callbacks], **args)
    trainer.fit(model, dm)
    return rec, trainer


# ---- item 1: the Gumbel beta over each run's own planned updates ----------------------------------------------


@pytest.mark.parametrize("planned", [1, 2, 8, 32, 512])
@pytest.mark.parametrize("schedule", ["exp", "linear"])
def test_beta_runs_from_one_to_max_over_the_planned_updates(planned, schedule):
    model = tiny_gan(max_g_updates=planned, max_temperature=50.0, temperature_schedule=schedule)
    betas = [model.gumbel_beta(n) for n in range(planned)]
    assert betas[-1] == pytest.approx(50.0)  # the last planned update is at max, whatever the budget
    if planned > 1:
        assert betas[0] == pytest.approx(1.0)
        assert all(a < b for a, b in zip(betas, betas[1:]))


def test_anneal_fraction_reaches_max_early_and_anneal_steps_overrides():
    half = tiny_gan(max_g_updates=20, anneal_fraction=0.5, max_temperature=64.0)
    assert half.gumbel_beta(9) == pytest.approx(64.0) and half.gumbel_beta(8) < 64.0
    assert half.gumbel_beta(19) == pytest.approx(64.0)
    explicit = tiny_gan(max_g_updates=100, anneal_steps=8, max_temperature=64.0)
    assert explicit.gumbel_beta(4) == pytest.approx(8.0) and explicit.gumbel_beta(8) == pytest.approx(64.0)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_batch_size_of_every_preset_ends_at_max_beta(preset):
    """From the sweep specs (what a run is built from), the beta of each gumbel run's last update."""
    settings = get_preset(preset).sweep
    settings.families = [f for f in ("gan-gumbel", "gan-frozen-d") if f in settings.models]
    settings.seeds = settings.seeds[:1]
    for spec in sweep_specs(settings, {}):
        family = get_family(spec["family"])
        model = family.load_class()(vocab_size=40, **family.init_kwargs(spec["model"]))
        last = spec["budget"]["updates"] - 1
        assert model.gumbel_beta(last) == pytest.approx(spec["model"]["game"]["max_temperature"]), \
            (preset, spec["family"], spec["batch_size"])


@pytest.mark.parametrize("limits", [dict(max_epochs=2, limit_train_batches=3),
                                    dict(max_epochs=-1, max_steps=9, limit_train_batches=5)])
def test_without_max_g_updates_the_trainer_limits_plan_the_anneal(limits):
    """Epoch limits, and max_steps (which Lightning counts in D and G steps: 3 per update at d_steps=2)."""
    dm = tiny_data()
    model = tiny_gan(dm.vocab_size, d_steps=2, max_temperature=30.0)
    rec, _ = fit(model, dm, **limits)
    updates = model.g_updates
    assert updates == (6 if "max_steps" not in limits else 3)
    assert rec.beta[0] == pytest.approx(1.0) and rec.beta[updates - 1] == pytest.approx(30.0)
    assert model.final_beta == pytest.approx(30.0)
    assert rec.rows[-1]["train/gumbel_temperature"] == pytest.approx(30.0)


def test_resume_continues_the_planned_anneal(tmp_path):
    """The planned-update anneal is a function of the counter and the settings: a run stopped after its first
    epoch and resumed from its checkpoint uses the uninterrupted run's beta at every update."""
    dm = tiny_data()
    full, _ = fit(tiny_gan(dm.vocab_size), dm, max_epochs=2, limit_train_batches=3)

    class StopAfterFirstEpoch(pl.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            trainer.should_stop = True

    first, _ = fit(tiny_gan(dm.vocab_size), dm, max_epochs=2, limit_train_batches=3,
                   callbacks=[StopAfterFirstEpoch(), SaveAtEpochEnd(tmp_path / "last.ckpt")])
    assert sorted(first.beta) == [0, 1, 2]

    resumed_model = tiny_gan(dm.vocab_size)
    pl.seed_everything(0, verbose=False)
    resumed = Recorder()
    pl.Trainer(accelerator="cpu", devices=1, max_epochs=2, limit_train_batches=3, limit_val_batches=0, logger=False,
               enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
               callbacks=[resumed]).fit(resumed_model, dm, ckpt_path=str(tmp_path / "last.ckpt"))
    assert sorted(resumed.beta) == [3, 4, 5]
    for n, beta in {**first.beta, **resumed.beta}.items():
        assert beta == pytest.approx(full.beta[n]), n
    assert resumed_model.final_beta == pytest.approx(100.0)


def test_final_beta_is_none_without_the_gumbel_estimator():
    assert tiny_gan(estimator="reinforce", max_g_updates=4).final_beta is None
    assert tiny_gan(max_g_updates=4).final_beta is None  # no update made yet


# ---- item 8: one generator optimiser for every family ------------------------------------------------------


def generator_optimizer(model) -> torch.optim.Optimizer:
    configured = model.configure_optimizers()
    if isinstance(configured, dict):  # the MLE family
        return configured["optimizer"]
    optimizers, _ = configured  # TextGAN: [G, D, G's pretraining], [schedulers]
    return optimizers[0]


def describe(model) -> dict:
    """What the generator's optimizer does, read from the optimizer `configure_optimizers` builds (lr left out:
    learning rates are tuned per family)."""
    opt = generator_optimizer(model)
    decay = {p.dim() >= 2: set() for p in model.generator.parameters()}
    for group in opt.param_groups:
        for p in group["params"]:
            decay[p.dim() >= 2].add(group["weight_decay"])
    optimized = {id(p) for g in opt.param_groups for p in g["params"]}
    assert optimized == {id(p) for p in model.generator.parameters()}  # the generator's parameters, all of them
    group = opt.param_groups[0]
    return {"class": type(opt).__name__, "betas": tuple(group["betas"]), "eps": group["eps"],
            "amsgrad": group["amsgrad"], "matrices_decay": decay[True], "vectors_decay": decay[False],
            "gradient_clip": model.generator_optimizer_settings()["gradient_clip"]}


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_family_of_a_preset_gets_the_same_generator_optimizer(preset):
    models = get_preset(preset).sweep.models
    described = {}
    for name, args in models.items():
        family = get_family(name)
        model = family.load_class()(vocab_size=40, **family.init_kwargs(args))
        described[name] = describe(model)
        # what a results row records is what was built
        record = model.generator_optimizer_settings()
        opt = generator_optimizer(model)
        assert type(opt).__name__.lower() == record["class"]
        assert list(opt.param_groups[0]["betas"]) == record["betas"]
        assert max(g["weight_decay"] for g in opt.param_groups) == record["weight_decay"]
    assert {"transformer", "gan-gumbel", "gan-reinforce"} <= set(described)
    first = next(iter(described.values()))
    assert all(d == first for d in described.values()), described
    assert first["vectors_decay"] == {0.0}  # the no-decay rule for biases and gains


def test_gan_generator_takes_the_mle_familys_optimizer_settings_and_d_keeps_its_own():
    model = tiny_gan(g_optimizer="adamw", g_betas=(0.8, 0.9), g_weight_decay=0.1, g_gradient_clip=0.5,
                     betas=(0.5, 0.999), gradient_clip=5.0)
    (g_opt, d_opt, mle_opt), _ = model.configure_optimizers()
    assert type(g_opt) is torch.optim.AdamW and type(mle_opt) is torch.optim.AdamW
    assert g_opt.param_groups[0]["betas"] == (0.8, 0.9)
    for group in g_opt.param_groups:
        assert all(group["weight_decay"] == (0.1 if p.dim() >= 2 else 0.0) for p in group["params"])
    assert type(d_opt) is torch.optim.Adam and d_opt.param_groups[0]["betas"] == (0.5, 0.999)
    assert all(g["weight_decay"] == 0.0 for g in d_opt.param_groups)
    # the same settings as the MLE family's describe alike
    mle = TransformerSeq2Seq(25, d_model=16, n_heads=2, n_encoder_layers=1, n_decoder_layers=1, d_ff=32,
                             optimizer="adamw", betas=(0.8, 0.9), weight_decay=0.1, gradient_clip=0.5)
    assert describe(mle) == describe(model)


def test_each_network_is_clipped_at_its_own_norm():
    dm = tiny_data()
    model = tiny_gan(dm.vocab_size, g_gradient_clip=0.25, gradient_clip=7.0, d_steps=2)
    seen = []
    original = model.clip_gradients

    def record(opt, gradient_clip_val=None, gradient_clip_algorithm=None):
        which = {id(o): name for o, name in zip(model.optimizers(), ("g", "d", "mle"))}[id(opt)]
        seen.append((which, gradient_clip_val))
        return original(opt, gradient_clip_val=gradient_clip_val, gradient_clip_algorithm=gradient_clip_algorithm)

    model.clip_gradients = record
    fit(model, dm, limit_train_batches=1)
    assert seen == [("d", 7.0), ("d", 7.0), ("g", 0.25)]


def test_bad_optimizer_and_anneal_settings_are_refused():
    with pytest.raises(ValueError, match="model.generator.optimizer"):
        tiny_gan(g_optimizer="sgd")
    with pytest.raises(ValueError, match="model.game.anneal_fraction"):
        tiny_gan(anneal_fraction=0.0)
    with pytest.raises(ValueError, match="model.game.anneal_steps"):
        tiny_gan(anneal_steps=-1)
    with pytest.raises(ValueError, match="model.generator.gradient_clip"):
        tiny_gan(g_gradient_clip=-1.0)
    with pytest.raises(ValueError, match="model.optimizer"):
        TransformerSeq2Seq(25, optimizer="sgd")


# ---- item 10: the null GAN ---------------------------------------------------------------------------------


def test_frozen_discriminator_stays_at_its_initialisation_while_the_generator_moves():
    dm = tiny_data()
    model = tiny_gan(dm.vocab_size, freeze_discriminator=True, d_steps=2)
    d0 = [p.detach().clone() for p in model.discriminator.parameters()]
    g0 = [p.detach().clone() for p in model.generator.parameters()]
    rec, trainer = fit(model, dm, limit_train_batches=3)
    assert model.g_updates == 3
    assert all(torch.equal(a, b) for a, b in zip(d0, model.discriminator.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(g0, model.generator.parameters()))
    d_opt = model.optimizers()[1].optimizer
    assert not d_opt.state  # never stepped: no Adam moments
    assert model.lr_schedulers()[1].last_epoch == 0
    for key in ("train/d_loss", "train/d_acc_real", "train/d_acc_fake", "train/d_grad_norm"):
        assert math.isfinite(rec.rows[-1][key]), key  # still measured and logged, for comparison


def test_frozen_d_draws_the_same_fakes_and_random_numbers_as_gan_gumbel():
    """One update from the same seed: D's loss before its first update is the same (same fakes, same D), G's
    loss differs (it faces the updated D in one run only), and both runs leave the RNG in the same state."""
    dm = tiny_data()
    runs = {}
    for frozen in (False, True):
        pl.seed_everything(3, verbose=False)
        model = tiny_gan(dm.vocab_size, freeze_discriminator=frozen, d_dropout=0.25)
        rec, _ = fit(model, dm, seed=3, limit_train_batches=1)
        runs[frozen] = (rec.rows[-1], torch.get_rng_state())
    (trained, rng_trained), (frozen, rng_frozen) = runs[False], runs[True]
    assert frozen["train/d_loss"] == trained["train/d_loss"]
    assert frozen["train/g_loss"] != trained["train/g_loss"]
    assert torch.equal(rng_trained, rng_frozen)


def test_null_gan_is_a_registered_family_available_in_the_presets():
    family = get_family("gan-frozen-d")
    assert family.adversarial and family.defaults == {"game": {"estimator": "gumbel"},
                                                      "discriminator": {"frozen": True}}
    for name in ("quick", "smoke"):
        preset = get_preset(name)
        assert "gan-frozen-d" in preset.sweep.models
        gumbel, frozen = preset.sweep.models["gan-gumbel"], preset.sweep.models["gan-frozen-d"]
        assert family.init_kwargs(frozen) == merge_args(get_family("gan-gumbel").init_kwargs(gumbel),
                                                        {"discriminator": {"frozen": True}})
    assert "gan-frozen-d" not in get_preset("quick").sweep.families  # a later issue decides the arms


# ---- item 1: underpowered runs stay out of every verdict ---------------------------------------------------


def synthetic_row(family, batch_size, seed, updates, nll_final, underpowered=None):
    adversarial = family != "transformer"
    row = {"key": f"{family}__bs{batch_size}__seed{seed}", "kind": "sweep", "family": family,
           "adversarial": adversarial, "batch_size": batch_size, "seed": seed, "condition": "none", "z_dim": 0,
           "budget_kind": "samples", "budget_value": 512, "updates": updates, "diverged": False, "collapsed": False,
           "init": {"nll_oracle_per_token": 5.0, "nll_test_per_token": 5.0},
           "final": {"nll_oracle_per_token": nll_final, "nll_test_per_token": nll_final + 0.1, "distinct2": 0.5},
           "losses": {}, "paths": {}, "wall_time_s": 1.0,
           "optimizer": {"class": "adamw", "lr": 1e-3, "betas": [0.9, 0.98], "weight_decay": 0.01,
                         "gradient_clip": 1.0},
           "final_beta": 100.0 if adversarial else None}
    if underpowered is not None:
        row["underpowered"] = underpowered
    return row


def report_verdicts(tmp_path, name, rows, monkeypatch):
    for plot in ("plot_metrics_vs_batch", "plot_losses", "plot_noise", "plot_mi", "plot_quality_diversity"):
        monkeypatch.setattr(R, plot, lambda *a, **k: None)  # the verdicts are under test, not the figures
    run_dir = tmp_path / name
    table = ResultsTable(run_dir)
    for row in rows:
        table.add(row)
    result = R.make_report(run_dir, wandb_mode="disabled")
    return [(v.question, v.verdict, v.evidence, v.details) for v in result.verdicts], result.markdown.read_text()


def test_an_underpowered_row_cannot_change_a_verdict(tmp_path, monkeypatch):
    base = []
    for seed in range(3):
        for family, nll in (("transformer", 3.0), ("gan-gumbel", 4.0)):
            base += [synthetic_row(family, 1, seed, 512, nll + 0.1 * seed, underpowered=False),
                     synthetic_row(family, 16, seed, 32, nll - 0.1 * seed, underpowered=False)]
    # extra seeds in the same cells with far other numbers, and a batch size of their own, each with 8 updates
    weak = [synthetic_row(family, bs, seed, 8, nll, underpowered=True)
            for seed in (3, 4, 5) for family, nll in (("transformer", 6.5), ("gan-gumbel", 1.0))
            for bs in (1, 16, 64)]
    alone, _ = report_verdicts(tmp_path, "base", base, monkeypatch)
    with_weak, markdown = report_verdicts(tmp_path, "weak", base + weak, monkeypatch)
    assert with_weak == alone
    assert "underpowered" in markdown  # reported all the same
    counted = [{**r, "underpowered": False} for r in weak]
    changed, _ = report_verdicts(tmp_path, "counted", base + counted, monkeypatch)
    assert changed != alone  # the same rows, counted, would have moved the verdicts


def test_rows_without_the_flag_are_judged_by_their_update_count():
    old = synthetic_row("gan-gumbel", 64, 0, 8, 4.0)
    assert "underpowered" not in old and V.verdict_rows([old]) == []
    enough = synthetic_row("gan-gumbel", 16, 0, V.MIN_VERDICT_UPDATES, 4.0)
    assert V.verdict_rows([enough]) == [enough]


def test_report_prints_the_generator_optimizer_and_final_beta():
    rows = [synthetic_row("transformer", 16, 0, 32, 3.0, False), synthetic_row("gan-gumbel", 64, 0, 8, 4.0, True)]
    lines = Q2R.optimizer_table(rows)
    text = "\n".join(lines)
    assert "| transformer | 16 | adamw |" in text and "| gan-gumbel | 64 | adamw |" in text
    assert "(0.9, 0.98)" in text and "| 100 |" in text and "no (underpowered)" in text


# ---- the smoke sweep (items 1, 8): rows record final_beta, underpowered and the optimiser -----------------


@pytest.mark.slow
def test_smoke_sweep_rows_share_final_beta_and_generator_optimizer(tmp_path):
    settings = get_preset("smoke").sweep
    settings.families = ["gan-gumbel", "transformer"]
    settings.seeds = [0]
    specs = []
    for spec in sweep_specs(settings, {"wandb_mode": "disabled"}):
        if spec["family"] == "transformer" and spec["batch_size"] != settings.reference_batch_size:
            continue
        specs.append({**copy.deepcopy(spec), "measure": {}, "save_checkpoint": False})
    rows = [run_one(spec, tmp_path) for spec in specs]
    gumbel = [r for r in rows if r["family"] == "gan-gumbel"]
    assert sorted(r["batch_size"] for r in gumbel) == [1, 8]
    max_beta = settings.models["gan-gumbel"]["game"]["max_temperature"]
    assert [r["final_beta"] for r in gumbel] == [pytest.approx(max_beta)] * 2
    mle = next(r for r in rows if r["family"] == "transformer")
    assert mle["final_beta"] is None
    without_lr = [{k: v for k, v in r["optimizer"].items() if k != "lr"} for r in rows]
    assert all(o == without_lr[0] for o in without_lr)
    assert {r["batch_size"]: r["underpowered"] for r in gumbel} == {1: False, 8: True}  # 32 and 4 updates

    class WandbLogger:  # the summary a W&B run gets from its row (runner._finish_wandb)
        def __init__(self):
            self.experiment = self
            self.summary = {}

        def finish(self):
            pass

    logger = WandbLogger()
    _finish_wandb([logger], gumbel[0])
    assert logger.summary["result/final_beta"] == pytest.approx(max_beta)
    assert logger.summary["result/optimizer/class"] == "adamw"
