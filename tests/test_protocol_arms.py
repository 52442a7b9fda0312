"""The protocol's arms and measurements (issue 10 items 3, 4, 6): gradient accumulation equals a bigger batch for
per-example losses (and not with the minibatch-std feature), the Q2 arms from the shared checkpoint with their own
batch sizes and the equal-update runs, the held-out curve and the game checkpoints (re-scored against the final
discriminator), the MLE-with-z control and the greedy-outputs-across-z probe."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import modules.models.gan_estimators as estimators
from experiments.core.families import get_arg, get_family, z_dim_path
from experiments.core.presets import get_preset
from experiments.core.results import ResultsTable
from experiments.core.runner import build_datamodule, load_init_from, run_one
from experiments.q1_game.game import RunMeasurements, evenly_spaced_updates, roughness
from experiments.q2_batch_size.noise_scale import loss_terms
from experiments.q2_batch_size.sweep import pretrained_batch_sizes, sweep_specs
from experiments.q3_conditioning.ablation import ablation_specs
from experiments.q3_conditioning.probes import distinct_greedy_across_z
from modules.data import OracleDataModule
from modules.data.batch import collate
from modules.models import TextGAN, TransformerSeq2Seq
from modules.models.configs import nest_flat_args

SEQ_LEN = 6
ARCH = dict(d_model=16, n_heads=2, n_encoder_layers=1, n_decoder_layers=1, d_ff=32, max_len=32)
GAN = dict(generator="transformer", d_emb_dim=16, d_filter_sizes=(2, 3), d_num_filters=8, d_dropout=0.0,
           g_dropout=0.0, num_eval_samples=0, max_g_updates=10)


def flat_gan(vocab_size: int, **flat) -> TextGAN:
    """A TextGAN from the former flat argument names (nested into its sections)."""
    return TextGAN(vocab_size, **nest_flat_args(flat))


def tiny_data(**kw):
    dm = OracleDataModule(preset="small", vocab_size=25, seq_len=SEQ_LEN, num_train=64, num_val=16, num_test=16,
                          batch_size=8, **kw)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def attached(model, dm):
    """The model as `setup` leaves it inside a fit (vocabulary and data lengths)."""
    model.vocab = dm.vocab
    model._data_info = {"fixed_length": dm.seq_len, "max_length": dm.max_target_length}
    return model


# ---- 1. accumulating batch 1 over k steps = batch k, for per-example losses -----------------------------------

K = 4  # examples: k steps of batch 1 against one batch of k


class RowNoise:
    """Gumbel noise and z planted per example: row r of any batch gets noise[example r] at step t, so an example
    sees the same noise alone as inside a batch (the global RNG would draw it in another order)."""

    def __init__(self, vocab_size: int, z_dim: int):
        gen = torch.Generator().manual_seed(5)
        self.noise = estimators.sample_gumbel((K, SEQ_LEN, vocab_size), gen)  # (K, L, V)
        self.z = torch.randn(K, z_dim, generator=gen)
        self.rows, self.step = list(range(K)), 0

    def use(self, rows: list[int]) -> None:
        self.rows, self.step = rows, 0

    def gumbel(self, shape, generator=None, device=None, eps=1e-10):
        # an update draws the Gumbel noise of all its L steps at once: (L, B, V)
        assert shape == (SEQ_LEN, len(self.rows), self.noise.size(-1))
        return self.noise[self.rows].transpose(0, 1)

    def latent(self, batch_size, generator=None):
        assert batch_size == len(self.rows)
        return self.z[self.rows]


def _flat_grad(loss, params):
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for p, g in zip(params, grads)])


def _accumulated_and_batch_gradients(model, dm, term: str, noise: RowNoise | None):
    """(mean of the K batch-1 gradients, the batch-K gradient) of the loss ``term`` of ``model``, computed by the
    code of its training step (``experiments.q2_batch_size.noise_scale.loss_terms``)."""
    loss_fn, params = loss_terms(model)[term]
    examples = dm.examples("train")[:K]

    def grad(rows):
        if noise is not None:
            noise.use(rows)
        return _flat_grad(loss_fn(collate([examples[r] for r in rows])), params)

    accumulated = sum(grad([r]) for r in range(K)) / K
    return accumulated, grad(list(range(K)))


def _gan(dm, monkeypatch, loss: str, minibatch_std: bool):
    torch.manual_seed(0)
    model = attached(flat_gan(dm.vocab_size, **ARCH, **GAN, z_dim=3, loss=loss, minibatch_std=minibatch_std), dm)
    noise = RowNoise(dm.vocab_size, z_dim=3)
    monkeypatch.setattr(estimators, "sample_gumbel", noise.gumbel)
    monkeypatch.setattr(model, "latent", noise.latent)
    return model, noise


def test_accumulating_batch_1_equals_batch_k_for_the_mle_loss():
    dm = tiny_data()
    torch.manual_seed(0)
    model = attached(TransformerSeq2Seq(dm.vocab_size, **ARCH, dropout=0.0), dm)
    accumulated, batch = _accumulated_and_batch_gradients(model, dm, "generator", None)
    assert batch.norm() > 0
    torch.testing.assert_close(accumulated, batch, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("loss", ["rsgan", "standard"])
@pytest.mark.parametrize("player", ["generator", "discriminator"])
def test_accumulating_batch_1_equals_batch_k_for_both_gan_players(monkeypatch, loss, player):
    dm = tiny_data()
    model, noise = _gan(dm, monkeypatch, loss, minibatch_std=False)
    accumulated, batch = _accumulated_and_batch_gradients(model, dm, player, noise)
    assert batch.norm() > 0
    torch.testing.assert_close(accumulated, batch, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("player", ["generator", "discriminator"])
def test_with_the_minibatch_std_feature_accumulation_differs_from_the_batch(monkeypatch, player):
    dm = tiny_data()
    model, noise = _gan(dm, monkeypatch, "rsgan", minibatch_std=True)
    accumulated, batch = _accumulated_and_batch_gradients(model, dm, player, noise)
    assert (accumulated - batch).norm() > 1e-3 * batch.norm()


# ---- 2. the Q2 arms in the plan ---------------------------------------------------------------------------------

Q2_ARMS = ["mle-continued", "gan-gumbel-pt", "gan-frozen-d-pt", "gan-mbstd-pt"]


def _smoke_sweep(families=("transformer", *Q2_ARMS), **settings):
    sweep = get_preset("smoke").sweep
    sweep.families, sweep.seeds = list(families), [0]
    sweep.pretrained_batch_sizes = [1, 8]
    sweep.pretrained_family_batch_sizes = {"gan-mbstd-pt": [8]}
    for name, value in settings.items():
        setattr(sweep, name, value)
    return sweep


def test_each_arm_runs_at_its_own_batch_sizes():
    specs = sweep_specs(_smoke_sweep(), {})
    arms = {(s["family"], s["batch_size"]) for s in specs if s["kind"] == "pretrained-arm"}
    assert arms == {("mle-continued", 1), ("mle-continued", 8), ("gan-gumbel-pt", 1), ("gan-gumbel-pt", 8),
                    ("gan-frozen-d-pt", 1), ("gan-frozen-d-pt", 8), ("gan-mbstd-pt", 8)}


def test_the_quick_preset_runs_the_q2_arms_at_1_and_16():
    sweep = get_preset("quick").sweep
    for family in ("mle-continued", "gan-gumbel-pt", "gan-shuffled-d-pt"):
        assert family in sweep.families and pretrained_batch_sizes(sweep, family) == [1, 16]


def test_the_standard_preset_runs_the_dose_response_at_equal_samples_and_equal_updates():
    sweep = get_preset("standard").sweep
    specs = sweep_specs(sweep, {})
    for family in ("mle-continued", "gan-gumbel-pt", "gan-shuffled-d-pt"):
        arms = {s["batch_size"]: s for s in specs if s["family"] == family and s["kind"] == "pretrained-arm"
                and s["seed"] == 0}
        equal = {s["batch_size"]: s for s in specs if s["family"] == family and s["kind"] == "equal-updates"
                 and s["seed"] == 0}
        assert sorted(arms) == [1, 2, 4, 8, 16, 64] and sorted(equal) == [1, 2, 4, 8, 64]
        assert {s["budget"]["value"] for s in arms.values()} == {sweep.budget_value}  # equal samples
        assert {s["budget"]["updates"] for s in equal.values()} == {arms[16]["budget"]["updates"]}  # equal updates
    assert pretrained_batch_sizes(sweep, "gan-mbstd-pt") == [16]


def test_equal_update_arms_run_at_batch_1_for_the_reference_batch_sizes_updates():
    specs = sweep_specs(_smoke_sweep(equal_update_batch_sizes=[1, 8]), {})  # 8 is the reference: no extra run
    equal = [s for s in specs if s["kind"] == "equal-updates"]
    # the smoke sweep: 32 samples, reference batch size 8 -> 4 updates; gan-mbstd-pt does not run at batch size 1
    assert sorted(s["family"] for s in equal) == ["gan-frozen-d-pt", "gan-gumbel-pt", "mle-continued"]
    for s in equal:
        assert s["batch_size"] == 1 and s["equal_updates_of"] == 8
        assert s["budget"] == {"kind": "steps", "value": 4, "updates": 4}
        assert "__bs1__steps4__" in s["key"]
        if s["model"].get("max_g_updates") is not None:
            assert s["model"]["max_g_updates"] == 4
        same = next(a for a in specs if a["kind"] == "pretrained-arm" and a["family"] == s["family"]
                    and a["batch_size"] == 1)
        assert same["budget"]["updates"] == 32 and same["key"] != s["key"]
        assert s["lr_factor"] == same["lr_factor"]  # the learning rate of batch size 1 in both
    steps = _smoke_sweep(equal_update_batch_sizes=[1], budget="steps")
    assert not [s for s in sweep_specs(steps, {}) if s["kind"] == "equal-updates"]  # every arm has equal updates


@pytest.mark.parametrize("bad, match", [
    ({"pretrained_family_batch_sizes": {"gan-gumbel": [1]}}, "pretrained_family_batch_sizes names 'gan-gumbel'"),
    ({"pretrained_family_batch_sizes": {"gan-mbstd-pt": []}}, r"pretrained_family_batch_sizes\['gan-mbstd-pt'\]"),
    ({"checkpoints": {"count": 1, "rows": 8, "num_samples": 8, "num_test": 8}}, "sweep.checkpoints.count"),
    ({"held_out": {"points": 4}}, "sweep.held_out must be"),
])
def test_bad_arm_settings_are_refused_naming_the_setting(bad, match):
    with pytest.raises(ValueError, match=match):
        sweep_specs(_smoke_sweep(**bad), {})


@pytest.fixture(scope="module")
def pretrain_run(tmp_path_factory):
    """The smoke sweep's real pretrain run (seed 0) in a run folder: (run folder, its spec, the specs)."""
    run_dir = tmp_path_factory.mktemp("pretrain")
    specs = sweep_specs(_smoke_sweep(equal_update_batch_sizes=[1]), {"wandb_mode": "disabled"})
    pre = next(s for s in specs if s["kind"] == "pretrain")
    ResultsTable(run_dir).add(run_one(pre, run_dir))
    return run_dir, pre, specs


@pytest.mark.parametrize("family", ["gan-frozen-d-pt", "gan-mbstd-pt", "mle-continued"])
def test_the_new_arms_start_from_exactly_the_producers_generator_weights(pretrain_run, family):
    """Every run of the arm (each batch size, equal-update runs too), built as the runner builds it."""
    run_dir, pre, specs = pretrain_run
    checkpoint = torch.load(run_dir / "runs" / pre["key"] / "final.ckpt", map_location="cpu", weights_only=True)
    theirs = {k[len("generator."):]: v for k, v in checkpoint["state_dict"].items() if k.startswith("generator.")}
    arm_runs = [s for s in specs if s["family"] == family]
    assert len(arm_runs) == (1 if family == "gan-mbstd-pt" else 3)  # batch sizes 1 and 8, equal updates at 1
    fam = get_family(family)
    vocab_size = len(build_datamodule(pre["data"], 8, 0).vocab)
    for spec in arm_runs:
        assert spec["init_from"] == {"key": pre["key"]}
        model = fam.load_class()(vocab_size=vocab_size, **fam.init_kwargs(spec["model"]))
        load_init_from(model, pre["key"], run_dir, spec["data"])
        ours = model.generator.state_dict()
        latent = {k for k in ours if k.split(".")[0] in ("z_proj", "ln_z")}
        assert set(ours) - latent == set(theirs)
        for name, value in theirs.items():
            assert torch.equal(ours[name], value), name
        if family != "mle-continued":
            assert model.d_config.frozen == (family == "gan-frozen-d-pt")
            assert model.d_config.minibatch_std == (family == "gan-mbstd-pt")


# ---- 3. the held-out curve and the game checkpoints -------------------------------------------------------------


@pytest.mark.parametrize("total, intervals, expected", [
    (4, 2, [0, 2, 4]), (32, 7, [0, 5, 9, 14, 18, 23, 27, 32]), (512, 32, list(range(0, 513, 16))),
    (3, 4, [0, 1, 2, 3]),  # 0.75 -> 1, 1.5 -> 2, 2.25 -> 2: fewer points than asked when updates are scarce
])
def test_evenly_spaced_updates(total, intervals, expected):
    assert evenly_spaced_updates(total, intervals) == expected


def test_roughness_is_the_mean_absolute_second_difference():
    assert roughness([0.0, 1.0, 2.0, 3.0]) == 0.0  # a straight line is smooth
    assert roughness([1.0, 3.0, 2.0, 2.0]) == pytest.approx((3.0 + 1.0) / 2)  # |2-6+1|, |2-4+3|
    assert math.isnan(roughness([1.0, 2.0])) and math.isnan(roughness([1.0, math.nan, 2.0]))


def _sweep_spec(family, **settings):
    sweep = _smoke_sweep(families=(family,), **settings)
    sweep.batch_sizes = [8]  # the reference: 32 samples -> 4 updates
    sweep.temperatures = []
    sweep.noise = {}
    return next(s for s in sweep_specs(sweep, {"wandb_mode": "disabled"}) if s["kind"] == "sweep")


@pytest.mark.parametrize("family", ["transformer", "gan-gumbel"])
def test_game_checkpoints_and_the_held_out_curve_are_taken_at_the_planned_updates(tmp_path, family):
    spec = _sweep_spec(family, checkpoints=dict(count=3, rows=8, num_samples=8, num_test=8))
    spec["measure"]["held_out"] = dict(points=4, rows=8)
    row = run_one(spec, tmp_path)
    assert row["updates"] == 4
    assert [p["update"] for p in row["game_checkpoints"]] == [0, 2, 4]
    assert [p["update"] for p in row["held_out_curve"]] == [0, 1, 2, 3, 4]
    assert [p["samples"] for p in row["held_out_curve"]] == [0, 8, 16, 24, 32]
    assert math.isfinite(row["roughness"]) and math.isfinite(row["oracle_entropy_per_token"])
    for p in row["game_checkpoints"]:
        assert set(p) == {"update", "held_out_loss", "g_loss_vs_final_d", "J", "nll_test", "nll_oracle",
                          "model_entropy"}
        assert p["J"] == pytest.approx(p["nll_test"] - row["oracle_entropy_per_token"]
                                       + p["nll_oracle"] - p["model_entropy"])
        curve = next(c for c in row["held_out_curve"] if c["update"] == p["update"])
        assert p["held_out_loss"] == curve["loss"]  # one fixed batch, one fixed noise
        assert (p["g_loss_vs_final_d"] is None) == (family == "transformer")
    last = row["game_checkpoints"][-1]
    assert last["nll_test"] == pytest.approx(row["final"]["nll_test_per_token"], rel=0.2)
    if family == "gan-gumbel":  # at the last checkpoint the final discriminator is the discriminator of that moment
        assert last["g_loss_vs_final_d"] == last["held_out_loss"]


def test_the_measurements_leave_the_training_untouched(tmp_path):
    plain = _sweep_spec("gan-gumbel")
    measured = _sweep_spec("gan-gumbel", checkpoints=dict(count=3, rows=8, num_samples=8, num_test=8))
    measured["measure"]["held_out"] = dict(points=4, rows=8)
    a, b = run_one(plain, tmp_path / "a"), run_one(measured, tmp_path / "b")
    assert "game_checkpoints" in b and "game_checkpoints" not in a
    assert a["final"] == b["final"] and a["losses"] == b["losses"]


class PlantedD(nn.Module):
    """A discriminator with known output: ``real_logit`` for token ids (real rows), ``fake_logit`` for one-hots."""

    per_token = False

    def __init__(self, real_logit: float, fake_logit: float):
        super().__init__()
        self.real_logit, self.fake_logit = real_logit, fake_logit

    def forward(self, tokens_or_onehots, src, src_pad_mask, pad_mask):
        value = self.real_logit if tokens_or_onehots.dtype == torch.long else self.fake_logit
        return torch.full((tokens_or_onehots.size(0),), value)


def _measured_gan_along_three_checkpoints(final_d=None):
    dm = tiny_data()
    torch.manual_seed(0)
    model = attached(flat_gan(dm.vocab_size, **ARCH, **GAN, z_dim=2), dm)
    along = RunMeasurements(dm, planned_updates=2, batch_size=8,
                            checkpoints=dict(count=3, rows=8, num_samples=8, num_test=8))
    for update in range(3):
        along.measure(model, update)
        with torch.no_grad():  # "training": the generator moves, the discriminator does not
            for p in model.generator.parameters():
                p.add_(0.3 * torch.randn_like(p))
    if final_d is not None:
        model.discriminator = final_d
    return along.finish(model)["game_checkpoints"]


def test_checkpoints_are_rescored_with_their_own_fakes():
    points = _measured_gan_along_three_checkpoints()
    assert [p["update"] for p in points] == [0, 1, 2]
    assert len({p["held_out_loss"] for p in points}) == 3  # the generator moved between checkpoints
    for p in points:  # the discriminator never moved: the final one scores each checkpoint's fakes the same
        assert p["g_loss_vs_final_d"] == pytest.approx(p["held_out_loss"], abs=1e-6)


def test_checkpoints_are_rescored_by_the_final_discriminator():
    points = _measured_gan_along_three_checkpoints(final_d=PlantedD(real_logit=0.5, fake_logit=2.0))
    expected = F.softplus(torch.tensor(-(2.0 - 0.5))).item()  # rsgan: -log sigmoid(D(fake) - D(real))
    for p in points:
        assert p["g_loss_vs_final_d"] == pytest.approx(expected)
        assert p["held_out_loss"] != pytest.approx(expected)


# ---- 4. the MLE-with-z control and greedy outputs across z ------------------------------------------------------


def test_transformer_z_reads_z_and_draws_it_in_training():
    dm = tiny_data()
    torch.manual_seed(0)
    model = attached(TransformerSeq2Seq(dm.vocab_size, **ARCH, dropout=0.0, z_dim=4), dm)
    batch = collate(dm.examples("train")[:3])
    z = model.latent(3, torch.Generator().manual_seed(1))
    assert z.shape == (3, 4) and TransformerSeq2Seq(dm.vocab_size, **ARCH).latent(3) is None
    out = model.generator(batch.src, batch.src_pad_mask, batch.tgt_in, z=z)
    assert not torch.allclose(out, model.generator(batch.src, batch.src_pad_mask, batch.tgt_in, z=-z))
    loss_fn, _ = loss_terms(model)["generator"]  # the training step's loss: it must be handed z
    assert torch.isfinite(loss_fn(batch))
    with pytest.raises(ValueError, match="model.z_dim must be >= 0"):
        TransformerSeq2Seq(dm.vocab_size, **ARCH, z_dim=-1)


def test_the_ablation_grid_gives_transformer_z_its_z_dims_but_not_z_dim_0():
    settings = get_preset("smoke").ablation
    settings.families, settings.z_dims = ["transformer", "transformer-z", "gan-gumbel"], [0, 4]
    specs = ablation_specs(settings, {})
    grid = sorted((s["family"], get_arg(s["model"], z_dim_path(s["family"]))) for s in specs if s["seed"] == 0)
    assert grid == [("gan-gumbel", 0), ("gan-gumbel", 4), ("transformer", None), ("transformer-z", 4)]


FIRST_WORD = 5  # the first id the sampler may produce (after PAD, BOS, EOS, UNK, NULL)


class PlantedGenerator(nn.Module):
    """A step-protocol net whose greedy output is one repeated word: a fixed one (``uses_z`` False), or the word
    FIRST_WORD + argmax(z) (True)."""

    def __init__(self, vocab_size: int, uses_z: bool):
        super().__init__()
        self.vocab_size, self.uses_z = vocab_size, uses_z

    def init_state(self, src, src_pad_mask, z=None):
        return z

    def step(self, prev_tokens, z):
        logits = torch.zeros(prev_tokens.size(0), self.vocab_size)
        word = FIRST_WORD + z.argmax(-1) if self.uses_z else torch.full_like(prev_tokens, FIRST_WORD)
        return logits.scatter(1, word.unsqueeze(1), 1.0), z


@pytest.mark.parametrize("uses_z, expected", [(False, 1), (True, 4)])
def test_distinct_greedy_outputs_across_z_is_1_when_z_is_ignored_and_k_when_the_output_follows_z(uses_z, expected):
    dm = tiny_data()
    draws = 4
    model = attached(TransformerSeq2Seq(dm.vocab_size, **ARCH, z_dim=draws), dm)
    assert dm.vocab.label_ids == [] and FIRST_WORD + draws <= dm.vocab_size
    model.generator = PlantedGenerator(dm.vocab_size, uses_z)
    # the planted z: the k-th draw of every condition is the k-th basis vector (one distinct output each)
    model.latent = lambda n, generator=None: torch.eye(draws).repeat(n // draws, 1)
    src, mask, _ = dm.conditions("test", 5)
    assert distinct_greedy_across_z(model, src, mask, z_draws=draws) == expected


def test_distinct_greedy_outputs_across_z_is_nan_without_z():
    dm = tiny_data()
    model = attached(TransformerSeq2Seq(dm.vocab_size, **ARCH), dm)
    src, mask, _ = dm.conditions("test", 3)
    assert math.isnan(distinct_greedy_across_z(model, src, mask, z_draws=4))
