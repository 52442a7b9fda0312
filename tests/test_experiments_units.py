"""The experiments layer's parts on their own: results table, plan, budgets, estimators, verdict rules (fast)."""

import json
import math
import multiprocessing

import pytest
import torch

from experiments import verdicts as V
from experiments.batch_size_sweep import sweep_specs, updates_for
from experiments.families import get_family, lr_factor, register_family
from experiments.noise_scale import estimate_from_norms
from experiments.plan import PlanMismatch, register
from experiments.presets import get_preset
from experiments.results import ResultsTable
from experiments.stats import log_t_interval, t_interval
from experiments.temperature import dominated_fraction


# ---- results table --------------------------------------------------------------------------------------------


def test_results_table_adds_each_key_once_and_round_trips_nan(tmp_path):
    table = ResultsTable(tmp_path)
    assert table.add({"key": "a", "x": 1.0, "nested": {"y": float("nan")}})
    assert not table.add({"key": "a", "x": 2.0})  # a finished row is never doubled
    assert table.add({"key": "b", "x": float("inf")})
    rows = table.rows()
    assert [r["key"] for r in rows] == ["a", "b"] and rows[0]["x"] == 1.0
    assert math.isnan(rows[0]["nested"]["y"]) and rows[1]["x"] == math.inf
    for line in (tmp_path / "results.jsonl").read_text().splitlines():
        json.loads(line)  # standard JSON, no bare NaN
    assert (tmp_path / "results.csv").read_text().splitlines()[0].startswith("key")
    assert not list(tmp_path.glob("*.tmp"))


def _add_rows(args):
    folder, worker = args
    table = ResultsTable(folder)
    return sum(table.add({"key": f"k{i}", "worker": worker}) for i in range(20))


def test_concurrent_writers_never_double_or_lose_a_row(tmp_path):
    with multiprocessing.get_context("fork").Pool(3) as pool:
        added = pool.map(_add_rows, [(str(tmp_path), w) for w in range(3)])
    rows = ResultsTable(tmp_path).rows()
    assert sum(added) == 20 and sorted(r["key"] for r in rows) == sorted(f"k{i}" for i in range(20))
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 20


def test_plan_accepts_a_grown_grid_and_refuses_changed_settings(tmp_path):
    preset = get_preset("smoke")
    plan = register(tmp_path, "batch-size", "smoke", preset.sweep, "p")
    preset.sweep.seeds = [0, 1, 2, 3]
    again = register(tmp_path, "batch-size", "smoke", preset.sweep, "p")
    assert again["group"] == plan["group"] and again["experiments"]["batch-size"]["grid"]["seeds"] == [0, 1, 2, 3]
    preset.sweep.budget_value += 1
    with pytest.raises(PlanMismatch, match="budget_value"):
        register(tmp_path, "batch-size", "smoke", preset.sweep, "p")


# ---- budgets, learning rates, specs ------------------------------------------------------------------------


def test_budgets_and_lr_scaling():
    assert updates_for("samples", 1024, 1) == 1024 and updates_for("samples", 1024, 3) == 342
    assert updates_for("steps", 100, 64) == 100
    with pytest.raises(ValueError):
        updates_for("samples", 0, 4)
    assert lr_factor(64, 16, "none") == 1.0 and lr_factor(64, 16, "linear") == 4.0
    assert lr_factor(4, 16, "sqrt") == pytest.approx(0.5)


def test_sweep_specs_scale_rates_and_key_runs_by_config():
    preset = get_preset("smoke")
    preset.sweep.families = ["transformer", "gan-gumbel"]
    specs = sweep_specs(preset.sweep, {"wandb_mode": "disabled"})
    assert len(specs) == 2 * 2 * 2 and len({s["key"] for s in specs}) == len(specs)
    by = {(s["family"], s["batch_size"], s["seed"]): s for s in specs}
    t1, t8 = by[("transformer", 1, 0)], by[("transformer", 8, 0)]
    assert t1["model"]["lr"] == pytest.approx(t8["model"]["lr"] / math.sqrt(8))
    g1 = by[("gan-gumbel", 1, 0)]
    assert g1["model"]["max_g_updates"] == g1["budget"]["updates"] == 32
    assert "temperatures" in t8["measure"] and "noise" in t8["measure"] and not t1["measure"]
    # the key changes with anything that changes the numbers, not with tracking
    other = sweep_specs(preset.sweep, {"wandb_mode": "offline", "group": "x"})
    assert [s["key"] for s in other] == [s["key"] for s in specs]
    preset.sweep.budget_value = 64
    assert sweep_specs(preset.sweep, {})[0]["key"] != specs[0]["key"]


def test_family_registry_resolves_gan_families_and_rejects_unknown_arguments():
    assert get_family("gan-reinforce").class_path == "modules.models.TextGAN"
    assert get_family("gan-reinforce").defaults == {"estimator": "reinforce"}
    with pytest.raises(ValueError, match="unknown family"):
        get_family("vae")
    fam = register_family("test-transformer-ls", "modules.models.TransformerSeq2Seq", {"label_smoothing": 0.1})
    assert fam.init_kwargs({"lr": 1e-3}) == {"label_smoothing": 0.1, "lr": 1e-3}
    with pytest.raises(ValueError, match="no argument"):
        fam.init_kwargs({"learning_rate": 1e-3})


# ---- statistics and estimators ---------------------------------------------------------------------------------


def test_t_interval_matches_known_values():
    iv = t_interval([1.0, 2.0, 3.0])
    assert iv.mean == 2.0 and iv.high - iv.mean == pytest.approx(4.303 * 1.0 / math.sqrt(3), rel=1e-3)
    assert not t_interval([1.0]).defined and t_interval([None, float("nan")]).n == 0
    g = log_t_interval([10.0, 1000.0])
    assert g.mean == pytest.approx(100.0) and g.low < 100 < g.high


def test_noise_scale_estimator_recovers_a_known_noise_scale():
    """Per-example gradients g_i = G + noise with known |G|^2 and tr(Sigma): B_simple = tr(Sigma) / |G|^2."""
    gen = torch.Generator().manual_seed(0)
    dim, G = 50, torch.full((50,), 0.2)  # |G|^2 = 2
    sigma = 1.5  # tr(Sigma) = 50 * 2.25 = 112.5 -> B_simple = 56.25
    b, k, rounds = 2, 16, 400
    small, big = [], []
    for _ in range(rounds):
        grads = [G + sigma * torch.randn(b, dim, generator=gen).mean(0) for _ in range(k)]
        small.append(sum(float(g.dot(g)) for g in grads) / k)
        mean = torch.stack(grads).mean(0)
        big.append(float(mean.dot(mean)))
    est = estimate_from_norms(small, big, b, b * k)
    assert est["grad_norm_sq"] == pytest.approx(2.0, rel=0.1)
    assert est["trace_sigma"] == pytest.approx(112.5, rel=0.05)
    assert est["b_simple"] == pytest.approx(56.25, rel=0.15) and est["b_simple_se"] < 10


def test_noise_scale_is_nan_when_no_signal_is_detectable():
    est = estimate_from_norms([1.0, 1.0], [0.4, 0.4], 1, 2)  # |G|^2 estimate = 2*0.4 - 1 < 0
    assert math.isnan(est["b_simple"]) and est["trace_sigma"] > 0


def test_dominated_fraction_geometry():
    curve = [(1.0, 3.0), (2.0, 2.0), (3.0, 1.0)]  # lower-left is better
    assert dominated_fraction(curve, [(2.5, 2.5), (3.5, 1.5)]) == 1.0  # above the polyline, both dominated
    assert dominated_fraction(curve, [(1.5, 2.0), (0.5, 0.5)]) == 0.0  # below it
    assert dominated_fraction(curve, [(1.5, 2.5), (0.5, 4.0)]) == 0.5  # on a segment counts; far left does not


# ---- verdict rules on synthetic rows ------------------------------------------------------------------------------


def _row(family, bs, seed, init, final, adversarial, **extra):
    return {"key": f"{family}-{bs}-{seed}", "kind": "sweep", "family": family, "batch_size": bs, "seed": seed,
            "adversarial": adversarial, "init": {"nll_oracle_per_token": init},
            "final": {"nll_oracle_per_token": final}, "diverged": False, "collapsed": False, **extra}


def _q2_rows(gan_small_final):
    rows = []
    for s, jitter in enumerate((0.0, 0.05, -0.05)):
        rows += [_row("transformer", 1, s, 8.0, 6.2 + jitter, False), _row("transformer", 16, s, 8.0, 6.0 + jitter, False),
                 _row("gan-gumbel", 1, s, 8.0, gan_small_final + jitter, True),
                 _row("gan-gumbel", 16, s, 8.0, 6.5 + jitter, True)]
    return rows


def test_q2_rules_follow_the_data_both_ways():
    assert V.q2(_q2_rows(gan_small_final=7.9), 16).verdict == V.SUPPORTED  # GAN keeps ~7% of its learning at bs 1
    assert V.q2(_q2_rows(gan_small_final=6.6), 16).verdict == V.NOT_SUPPORTED  # GAN keeps ~93%
    rows = _q2_rows(gan_small_final=7.9)
    for r in rows:
        if r["family"] == "gan-gumbel" and r["batch_size"] == 16:
            r["final"]["nll_oracle_per_token"] = 8.0  # learned nothing at the reference: no evidence either way
    assert V.q2(rows, 16).verdict == V.INCONCLUSIVE


def test_q2_counts_divergence_and_collapse_as_meaningless():
    rows = _q2_rows(gan_small_final=6.6)
    for r in rows:
        if r["family"] == "gan-gumbel" and r["batch_size"] == 1:
            r["collapsed"] = True
    assert V.q2(rows, 16).verdict == V.SUPPORTED


def _abl(family, seed, fraction, adversarial, z=0):
    return {"key": f"{family}-{seed}-{z}", "kind": "ablation", "family": family, "seed": seed, "batch_size": 16,
            "adversarial": adversarial, "z_dim": z, "condition": "label", "condition_strength": 0.1,
            "probes": {"mi_self_fraction": fraction, "mi_oracle": 0.8, "change_z": 0.3 * fraction, "change_noise": 0.9}}


def test_q3_rules():
    tied = [_abl("transformer", s, 0.9 + 0.02 * s, False) for s in range(3)]
    assert V.q3_condition(tied + [_abl("gan-gumbel", s, 0.1 + 0.02 * s, True) for s in range(3)]).verdict == V.SUPPORTED
    assert V.q3_condition(tied + [_abl("gan-gumbel", s, 0.8 + 0.02 * s, True) for s in range(3)]).verdict == V.NOT_SUPPORTED
    assert V.q3_condition([]).verdict == V.INCONCLUSIVE


def test_q4_dominance_rule():
    def curve(shift):
        return [{"temperature": t, "nll_test_per_token": 4.0 + shift + (1 - t), "nll_oracle_per_token": 6.0 + shift + (t - 1)}
                for t in (0.6, 1.0, 1.4)]

    rows = []
    for s in range(3):
        rows.append({**_row("transformer", 16, s, 8, 6.0, False), "temperature": curve(0.0)})
        rows.append({**_row("gan-gumbel", 16, s, 8, 5.8, True), "temperature": curve(0.3 + 0.01 * s)})
    qa, qb = V.q4(rows, lambda r: r["temperature"], 16)
    assert qa.verdict == V.SUPPORTED  # the GAN's NLL_oracle at T = 1 is lower
    assert qb.verdict == V.SUPPORTED  # but the MLE curve lies below-left of all its points
