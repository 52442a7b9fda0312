"""Arms started from a shared MLE checkpoint: ``init_from`` in the runner, run identity, the executor's order,
and the report's "did the adversarial phase help or hurt" numbers (planted rows)."""

import json
import math

import pytest
import torch

import experiments.core.execute as execute_module
from experiments.core.execute import execute
from experiments.core.presets import get_preset
from experiments.core.report import adversarial_phase_effects, handover_curve_comparison, make_report, pretrained_section
from experiments.core.results import ResultsTable
from experiments.core.runner import load_init_from
from experiments.core.specs import run_key
from experiments.q2_batch_size.sweep import sweep_specs
from modules.models import TextGAN, TransformerSeq2Seq

ARCH = dict(d_model=16, n_heads=2, n_encoder_layers=1, n_decoder_layers=1, d_ff=32)
VOCAB = 40
ARMS = ["gan-gumbel-pt", "gan-reinforce-pt", "mle-continued"]


# ---- init_from: what is loaded ---------------------------------------------------------------------------------


def _producer(run_dir, key="pretrain__producer", data=None, **arch):
    """A finished MLE run in ``run_dir``: its row and its checkpoint (random but distinctive weights)."""
    torch.manual_seed(123)
    model = TransformerSeq2Seq(VOCAB, **{**ARCH, **arch})
    with torch.no_grad():
        for p in model.generator.parameters():
            p.add_(torch.randn_like(p))  # nothing like a fresh initialisation
    folder = run_dir / "runs" / key
    folder.mkdir(parents=True)
    torch.save({"state_dict": model.state_dict()}, folder / "final.ckpt")
    (folder / "run.json").write_text(json.dumps({"key": key, "data": data or {"class_path": "x"}}))
    ResultsTable(run_dir).add({"key": key})
    return key, model


def _gan(z_dim, seed=7, **arch):
    torch.manual_seed(seed)
    return TextGAN(VOCAB, generator=dict(arch="transformer", z_dim=z_dim, **{**ARCH, **arch}))


@pytest.mark.parametrize("z_dim", [0, 4])
def test_a_gan_starts_from_exactly_the_producers_generator_weights_except_z(tmp_path, z_dim):
    key, producer = _producer(tmp_path)
    gan = _gan(z_dim)
    fresh = {k: v.clone() for k, v in _gan(z_dim).generator.state_dict().items()}  # same seed: the fresh init
    load_init_from(gan, key, tmp_path, {"class_path": "x"})
    theirs = producer.generator.state_dict()
    ours = gan.generator.state_dict()
    latent = {k for k in ours if k.split(".")[0] in ("z_proj", "ln_z")}
    assert bool(latent) == (z_dim > 0)
    assert set(ours) - latent == set(theirs)
    for name in theirs:
        assert torch.equal(ours[name], theirs[name]), name
    for name in latent:  # the latent input keeps its fresh initialisation
        assert torch.equal(ours[name], fresh[name]), name
    disc = _gan(z_dim).discriminator.state_dict()
    for name, value in gan.discriminator.state_dict().items():  # only the generator is carried over
        assert torch.equal(value, disc[name]), name


def test_mle_continued_starts_from_exactly_the_producers_weights(tmp_path):
    key, producer = _producer(tmp_path)
    torch.manual_seed(7)
    model = TransformerSeq2Seq(VOCAB, **ARCH)
    load_init_from(model, key, tmp_path, {"class_path": "x"})
    for name, value in producer.generator.state_dict().items():
        assert torch.equal(model.generator.state_dict()[name], value), name


@pytest.mark.parametrize("case, match", [
    ("wider", r"other shapes: .*tgt_emb\.weight: \(40, 16\) in the checkpoint, \(40, 32\) here"),
    ("deeper", r"missing from the checkpoint: decoder\.1\."),
    ("shallower", r"not in this generator: .*encoder\.1\."),
    ("lstm", r"missing from the checkpoint: .*emb\.weight"),
])
def test_a_generator_that_does_not_match_the_checkpoint_is_refused_with_the_keys_named(tmp_path, case, match):
    key, _ = _producer(tmp_path, **({"n_encoder_layers": 2} if case == "shallower" else {}))
    if case == "lstm":
        model = TextGAN(VOCAB, generator=dict(arch="lstm", z_dim=4))
    else:
        model = _gan(4, **{"wider": {"d_model": 32}, "deeper": {"n_decoder_layers": 2}, "shallower": {}}[case])
    with pytest.raises(ValueError, match=match) as err:
        load_init_from(model, key, tmp_path, {"class_path": "x"})
    assert key in str(err.value)


def test_init_from_a_run_without_a_row_or_on_other_data_is_refused(tmp_path):
    key, _ = _producer(tmp_path, data={"class_path": "x", "init_args": {"preset": "small"}})
    with pytest.raises(ValueError, match="no row .*must finish"):
        load_init_from(_gan(0), "pretrain__missing", tmp_path, {"class_path": "x"})
    with pytest.raises(ValueError, match=f"run {key} was trained on other data"):
        load_init_from(_gan(0), key, tmp_path, {"class_path": "x", "init_args": {"preset": "standard"}})


# ---- specs and their identity -----------------------------------------------------------------------------------


def _smoke(families=("transformer", *ARMS), seeds=(0,)):
    settings = get_preset("smoke").sweep
    settings.families, settings.seeds = list(families), list(seeds)
    return settings


def test_each_seed_has_one_pretrain_run_at_the_reference_batch_size_that_its_arms_start_from():
    settings = _smoke(seeds=(0, 1))
    specs = sweep_specs(settings, {})
    pre = {s["seed"]: s for s in specs if s["kind"] == "pretrain"}
    assert sorted(pre) == [0, 1]
    for s in pre.values():
        assert s["family"] == "transformer" and s["batch_size"] == settings.reference_batch_size
        assert s["budget"]["value"] == settings.pretrain_budget and s["save_checkpoint"] is True
        assert s["budget"]["updates"] == math.ceil(settings.pretrain_budget / settings.reference_batch_size)
        assert s["measure"]["temperatures"] == settings.temperatures  # the hand-over model's curve
    arms = [s for s in specs if s["kind"] == "pretrained-arm"]
    assert sorted((s["family"], s["seed"]) for s in arms) == sorted((f, seed) for f in ARMS for seed in (0, 1))
    for s in arms:
        assert s["init_from"] == {"key": pre[s["seed"]]["key"]}
        assert s["batch_size"] == settings.reference_batch_size and s["budget"]["value"] == settings.budget_value
    by_family = {s["family"]: s for s in arms if s["seed"] == 0}
    assert by_family["gan-gumbel-pt"]["model"]["game"]["pretrain_epochs"] == 0
    assert by_family["mle-continued"]["model"] == next(  # the MLE family's optimiser settings
        s["model"] for s in specs if s["kind"] == "sweep" and s["family"] == "transformer"
        and s["batch_size"] == settings.reference_batch_size and s["seed"] == 0)


def test_an_arms_key_changes_with_its_producers_key_and_nothing_else_does():
    settings = _smoke()
    before = {(s["kind"], s["family"], s["batch_size"]): s["key"] for s in sweep_specs(settings, {})}
    settings.pretrain_budget *= 2  # changes only the pretrain run's spec
    after = {(s["kind"], s["family"], s["batch_size"]): s["key"] for s in sweep_specs(settings, {})}
    changed = {k for k in before if before[k] != after[k]}
    assert changed == {k for k in before if k[0] in ("pretrain", "pretrained-arm")}


def test_pretrained_arms_stay_out_of_a_conditioning_ablation_without_its_own_checkpoint():
    from experiments.q3_conditioning.ablation import ablation_specs

    settings = get_preset("smoke").ablation
    settings.families = ["transformer", "gan-gumbel", *ARMS]
    assert settings.pretrain_budget is None
    assert {s["family"] for s in ablation_specs(settings, {})} == {"transformer", "gan-gumbel"}


def _conditional_ablation(**kw):
    settings = get_preset("smoke").ablation
    settings.families, settings.pretrain_budget = ["mle-continued", "gan-gumbel-pt"], 64
    settings.strengths, settings.z_dims = [0.1, 1.0], [4]
    for k, v in kw.items():
        setattr(settings, k, v)
    return settings


def test_each_seed_and_setting_of_the_ablation_has_its_own_conditional_checkpoint():
    from experiments.q3_conditioning.ablation import ablation_specs

    specs = ablation_specs(_conditional_ablation(), {})
    pre = {(s["seed"], s["data"]["init_args"]["condition_strength"]): s for s in specs
           if s["kind"] == "ablation-pretrain"}
    arms = [s for s in specs if s["kind"] == "ablation"]
    assert sorted(pre) == [(0, 0.1), (0, 1.0), (1, 0.1), (1, 1.0)]
    assert len(arms) == 2 * 2 * 2
    for s in pre.values():
        assert s["family"] == "transformer" and s["save_checkpoint"] and s["budget"]["value"] == 64
        assert s["data"]["init_args"]["condition"] == "label"
    for a in arms:
        start = pre[(a["seed"], a["data"]["init_args"]["condition_strength"])]
        assert a["init_from"] == {"key": start["key"]} and a["data"] == start["data"]


def test_an_ablation_arm_runs_from_its_conditional_checkpoint(tmp_path):
    from experiments.q3_conditioning.ablation import ablation_specs

    specs = ablation_specs(_conditional_ablation(seeds=[0], strengths=[1.0], families=["mle-continued"]),
                           {"wandb_mode": "disabled"})
    outcome = execute(list(reversed(specs)), tmp_path, workers=1, echo=lambda m: None)
    assert not outcome.failed, (tmp_path / "errors.jsonl").read_text()
    rows = {r["kind"]: r for r in ResultsTable(tmp_path).rows()}
    assert rows["ablation"]["init_from"] == rows["ablation-pretrain"]["key"] and "probes" in rows["ablation"]
    assert rows["ablation"]["init"]["nll_test_per_token"] == rows["ablation-pretrain"]["final"]["nll_test_per_token"]


def test_an_arm_whose_architecture_differs_from_the_pretrain_run_is_refused_when_specs_are_built():
    settings = _smoke()
    settings.models["gan-gumbel-pt"]["generator"]["d_ff"] = 64
    with pytest.raises(ValueError, match=r"gan-gumbel-pt.*model\.generator\.d_ff 64 vs 32"):
        sweep_specs(settings, {})


# ---- the executor's order (fake runs) ---------------------------------------------------------------------------


def _fake_specs():
    """A producer, two runs that start from it, one that starts from one of those, and an independent run,
    listed dependents first."""
    return [{"key": "arm-of-arm", "init_from": {"key": "arm-a"}},
            {"key": "arm-a", "init_from": {"key": "pre"}},
            {"key": "arm-b", "init_from": {"key": "pre"}},
            {"key": "independent"},
            {"key": "pre"}]


@pytest.fixture
def fake_runs(monkeypatch):
    """Replace training by a fake that records the order and fails the keys in ``fail``."""
    calls, fail = [], set()

    def fake(spec, run_dir):
        calls.append(spec["key"])
        if spec["key"] in fail:
            ResultsTable(run_dir).add_error(spec["key"], "boom")
            return spec["key"], False, "boom"
        producer = (spec.get("init_from") or {}).get("key")
        assert producer is None or producer in ResultsTable(run_dir).keys(), f"{spec['key']} started too early"
        ResultsTable(run_dir).add({"key": spec["key"]})
        return spec["key"], True, spec["key"]

    monkeypatch.setattr(execute_module, "estimated_cost", lambda spec: 1.0)
    monkeypatch.setattr(execute_module, "run_and_record", fake)
    # the fake specs are keys only: planning them (which checks each spec against its key) is not under test here
    monkeypatch.setattr(execute_module, "write_run_plan", lambda run_dir, specs, command=None: ({}, ""))
    return calls, fail


def test_producers_run_before_the_runs_that_start_from_them(tmp_path, fake_runs):
    calls, _ = fake_runs
    outcome = execute(_fake_specs(), tmp_path, echo=lambda m: None)
    assert not outcome.failed and sorted(calls) == sorted(s["key"] for s in _fake_specs())
    assert calls[0] == "pre"
    for spec in _fake_specs():
        if "init_from" in spec:
            assert calls.index(spec["init_from"]["key"]) < calls.index(spec["key"])


def test_a_failed_producer_fails_its_dependents_naming_it(tmp_path, fake_runs):
    calls, fail = fake_runs
    fail.add("pre")
    outcome = execute(_fake_specs(), tmp_path, echo=lambda m: None)
    assert sorted(outcome.failed) == ["arm-a", "arm-b", "arm-of-arm", "pre"]
    assert outcome.finished == ["independent"] and sorted(calls) == ["independent", "pre"]
    errors = [json.loads(line) for line in (tmp_path / "errors.jsonl").read_text().splitlines()]
    why = {e["key"]: e["error"] for e in errors}
    assert "run pre (init_from), which failed" in why["arm-a"] and "run pre (init_from)" in why["arm-b"]
    assert "run arm-a (init_from), which failed" in why["arm-of-arm"]


def test_a_resumed_sweep_does_not_redo_a_finished_producer(tmp_path, fake_runs):
    calls, _ = fake_runs
    ResultsTable(tmp_path).add({"key": "pre"})
    outcome = execute(_fake_specs(), tmp_path, echo=lambda m: None)
    assert "pre" not in calls and outcome.skipped == ["pre"] and not outcome.failed
    assert sorted(calls) == ["arm-a", "arm-b", "arm-of-arm", "independent"]


def test_a_run_whose_producer_is_nowhere_fails_with_its_name(tmp_path, fake_runs):
    calls, _ = fake_runs
    outcome = execute([{"key": "arm", "init_from": {"key": "ghost"}}, {"key": "other"}], tmp_path,
                      echo=lambda m: None)
    assert outcome.failed == ["arm"] and calls == ["other"]
    assert "run ghost (init_from), which has no row" in (tmp_path / "errors.jsonl").read_text()


# ---- the executor with real runs ---------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_real_arms_run_after_their_pretrain_run_and_start_from_its_checkpoint(tmp_path, workers):
    specs = sweep_specs(_smoke(families=("gan-gumbel-pt", "mle-continued")), {"wandb_mode": "disabled"})
    pre = next(s for s in specs if s["kind"] == "pretrain")
    outcome = execute(list(reversed(specs)), tmp_path, workers=workers, echo=lambda m: None)  # producer listed last
    assert not outcome.failed, (tmp_path / "errors.jsonl").read_text()
    rows = {r["family"] if r["kind"] != "pretrain" else "pretrain": r for r in ResultsTable(tmp_path).rows()}
    assert rows["pretrain"]["key"] == pre["key"] and rows["pretrain"]["init_from"] is None
    assert (tmp_path / "runs" / pre["key"] / "final.ckpt").is_file()
    for fam in ("gan-gumbel-pt", "mle-continued"):
        assert rows[fam]["init_from"] == pre["key"] and rows[fam]["kind"] == "pretrained-arm"
    # the same weights, scored by the same evaluation: mle-continued starts where its producer ended
    assert rows["mle-continued"]["init"]["nll_test_per_token"] == rows["pretrain"]["final"]["nll_test_per_token"]
    assert rows["mle-continued"]["init"]["nll_oracle_per_token"] == rows["pretrain"]["final"]["nll_oracle_per_token"]


@pytest.mark.slow
def test_a_real_failed_producer_fails_its_arms_with_two_workers(tmp_path):
    specs = sweep_specs(_smoke(families=("gan-gumbel-pt", "mle-continued")), {"wandb_mode": "disabled"})
    pre = next(s for s in specs if s["kind"] == "pretrain")
    pre["model"]["lr"] = -1.0  # the run raises
    pre["key"] = run_key(pre)  # a planned spec must match its key, and the arms name the producer by it
    for s in specs:
        if s.get("init_from"):
            s["init_from"]["key"] = pre["key"]
            s["key"] = run_key(s)
    outcome = execute(specs, tmp_path, workers=2, echo=lambda m: None)
    assert sorted(outcome.failed) == sorted(s["key"] for s in specs)
    errors = {e["key"]: e["error"] for e in map(json.loads, (tmp_path / "errors.jsonl").read_text().splitlines())}
    assert "model.lr must be > 0" in errors[pre["key"]]
    for s in specs:
        if s["kind"] == "pretrained-arm":
            assert f"run {pre['key']} (init_from), which failed" in errors[s["key"]]
            assert not (tmp_path / "runs" / s["key"]).exists()  # never started


# ---- the report: planted rows ------------------------------------------------------------------------------------

HANDOVER = {0: 5.0, 1: 5.2, 2: 4.9}  # NLL_test of each seed's hand-over model
GAN_CHANGE = {0: 0.3, 1: 0.1, 2: 0.2}
MLE_CHANGE = {0: -0.1, 1: -0.2, 2: 0.0}
# per seed: 0.4, 0.3, 0.2 -> mean 0.3, std 0.1, half-width t(0.975, 2) * 0.1 / sqrt(3) = 4.303 * 0.057735
EFFECT = {0: 0.4, 1: 0.3, 2: 0.2}
EFFECT_LOW, EFFECT_HIGH = 0.3 - 0.248434, 0.3 + 0.248434


def _curve(points):
    return [{"temperature": t, "nll_test_per_token": x, "nll_oracle_per_token": y} for t, (x, y) in points]


HANDOVER_CURVE = _curve([(0.5, (4.0, 5.0)), (1.0, (4.5, 4.5)), (1.5, (5.0, 4.0))])
BEATEN_CURVE = _curve([(0.5, (4.6, 5.1)), (1.0, (5.1, 4.6))])  # both points above the hand-over's polyline
HALF_CURVE = _curve([(0.5, (4.6, 5.1)), (1.0, (3.0, 3.0))])  # one of its two points dominated


def _planted_rows():
    rows = []
    for seed, h in HANDOVER.items():
        pre = f"pretrain__transformer__bs16__seed{seed}__x"
        rows.append({"key": pre, "kind": "pretrain", "family": "transformer", "adversarial": False, "seed": seed,
                     "batch_size": 16, "budget_value": 4096, "init_from": None,
                     "final": {"nll_test_per_token": h, "self_bleu3": 0.5}, "temperature": HANDOVER_CURVE})
        rows.append({"key": f"gan-gumbel-pt__seed{seed}", "kind": "pretrained-arm", "family": "gan-gumbel-pt",
                     "adversarial": True, "seed": seed, "batch_size": 16, "init_from": pre,
                     "init": {"nll_test_per_token": h + 0.01},
                     "final": {"nll_test_per_token": h + GAN_CHANGE[seed], "self_bleu3": 0.5},
                     "temperature": HALF_CURVE if seed == 2 else BEATEN_CURVE})
        rows.append({"key": f"mle-continued__seed{seed}", "kind": "pretrained-arm", "family": "mle-continued",
                     "adversarial": False, "seed": seed, "batch_size": 16, "init_from": pre,
                     "init": {"nll_test_per_token": h},
                     "final": {"nll_test_per_token": h + MLE_CHANGE[seed], "self_bleu3": 0.5},
                     "temperature": HANDOVER_CURVE})
    # a distractor: an mle-continued run of seed 0 from another checkpoint must not be paired with the GAN arm
    rows.append({"key": "pretrain__other", "kind": "pretrain", "family": "transformer", "adversarial": False,
                 "seed": 0, "batch_size": 16, "init_from": None, "final": {"nll_test_per_token": 9.0}})
    rows.append({"key": "mle-continued__other", "kind": "pretrained-arm", "family": "mle-continued",
                 "adversarial": False, "seed": 0, "batch_size": 16, "init_from": "pretrain__other",
                 "final": {"nll_test_per_token": 0.0}})
    return rows


def test_the_adversarial_phase_effect_is_the_per_seed_difference_of_changes():
    effects = {e.metric: e for e in adversarial_phase_effects(_planted_rows())}
    assert set(effects) == {"NLL_test", "Self-BLEU-3"}  # no NLL_oracle in the planted rows
    e = effects["NLL_test"]
    assert e.family == "gan-gumbel-pt" and e.batch_size == 16
    assert e.per_seed == pytest.approx(EFFECT)
    assert (e.effect.mean, e.effect.low, e.effect.high, e.effect.n) == pytest.approx(
        (0.3, EFFECT_LOW, EFFECT_HIGH, 3), abs=1e-5)
    assert e.gan_change.mean == pytest.approx(0.2) and e.mle_change.mean == pytest.approx(-0.1)
    assert e.handover.mean == pytest.approx(15.1 / 3) and e.gan_start.mean == pytest.approx(0.01)
    assert effects["Self-BLEU-3"].effect.mean == pytest.approx(0.0)


def test_the_arms_temperature_curves_are_compared_with_their_hand_over_models():
    found = {fam: (beaten, beats) for fam, _, beaten, beats in
             handover_curve_comparison(_planted_rows(), lambda r: r.get("temperature", []))}
    beaten, beats = found["gan-gumbel-pt"]
    assert beaten.mean == pytest.approx((1 + 1 + 0.5) / 3) and beaten.n == 3
    # seed 2's point (3, 3) dominates the whole hand-over curve; identical curves dominate each other (weakly)
    assert beats.mean == pytest.approx(1 / 3) and found["mle-continued"][0].mean == pytest.approx(1.0)


def test_the_report_section_prints_the_effect_with_its_interval(tmp_path):
    lines = pretrained_section(_planted_rows(), lambda r: r.get("temperature", []), None)
    text = "\n".join(lines)
    assert "did the adversarial phase help or hurt" in text
    row = next(line for line in lines if line.startswith("| gan-gumbel-pt | 16 | NLL_test |"))
    assert f"**0.3 [{EFFECT_LOW:.3g}, {EFFECT_HIGH:.3g}] (n=3)**" in row
    assert pretrained_section([r for r in _planted_rows() if r["kind"] != "pretrained-arm"], lambda r: [], None) == []


def test_make_report_writes_the_section_and_its_figure(tmp_path):
    table = ResultsTable(tmp_path)
    for row in _planted_rows():
        table.add({**row, "condition": "none", "wall_time_s": 1.0})
    result = make_report(tmp_path, wandb_mode="disabled")
    md = result.markdown.read_text()
    assert "## Pretrained arms: did the adversarial phase help or hurt?" in md
    assert (result.folder / "pretrained_arms.png").stat().st_size > 1000
