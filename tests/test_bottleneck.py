"""C2 (experiments/c2_bottleneck/bottleneck.py): the plan at equal budgets, the runs and their measurements, resuming, the report
section, the command; and the translation BLEU it reports (modules.metrics.bleu.corpus_bleu)."""

import gzip
import json
import random

import pytest

from experiments.c2_bottleneck import bottleneck as B
from experiments.c2_bottleneck import measure as BM
from experiments.c2_bottleneck import report as BR
from experiments.c2_bottleneck import settings as BS
from modules.errors import ConfigError
from modules.metrics.bleu import corpus_bleu

# ---- corpus BLEU -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_corpus_bleu_matches_nltk(seed):
    bleu_score = pytest.importorskip("nltk.translate.bleu_score")
    rng = random.Random(seed)
    # hypotheses of >= 4 tokens: for shorter ones NLTK counts one 4-gram that is not there (max(1, count))
    refs = [[rng.randrange(6) for _ in range(rng.randint(4, 12))] for _ in range(30)]
    hyps = [[t if rng.random() < 0.7 else rng.randrange(6) for t in r][: rng.randint(4, len(r) + 1)] for r in refs]
    assert corpus_bleu(hyps, refs) == pytest.approx(bleu_score.corpus_bleu([[r] for r in refs], hyps), abs=1e-12)


@pytest.mark.parametrize("hyps, refs, expected", [
    ([["a", "b", "c", "d", "e"]], [["a", "b", "c", "d", "e"]], 1.0),  # perfect
    ([["x", "y", "z", "w"]], [["a", "b", "c", "d"]], 0.0),  # nothing matches
    ([["a", "b", "c", "d"]], [["a", "b", "c", "d", "e", "f", "g", "h"]], 0.36787944117144233),  # brevity e^(1-2)
])
def test_corpus_bleu_known_values(hyps, refs, expected):
    assert corpus_bleu(hyps, refs) == pytest.approx(expected)


def test_corpus_bleu_pairs_each_hypothesis_with_its_own_reference():
    refs = [["a", "b", "c", "d"], ["e", "f", "g", "h"]]
    assert corpus_bleu(refs, refs) == 1.0
    assert corpus_bleu(refs[::-1], refs) == 0.0  # the Texygen BLEU (against all references) would give 1


def test_corpus_bleu_refuses_unpaired_input():
    with pytest.raises(ValueError, match="2 hypotheses and 1 references"):
        corpus_bleu([["a"], ["b"]], [["a"]])


# ---- settings and plan -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("length, expected", [(1, "<=10"), (10, "<=10"), (11, "11-15"), (20, "16-20"), (21, ">20")])
def test_bucket_of(length, expected):
    assert BM.bucket_of(length, (10, 15, 20)) == expected
    assert expected in BM.bucket_names((10, 15, 20))


RATES = {"rnn": 1e-3, "rnn-attention": 3e-3, "transformer": 1e-2}


def test_the_pilot_tries_every_rate_per_family_on_its_own_seeds():
    settings = BS.lecture()
    pilot = B.pilot_plan(settings)
    assert len(pilot) == len({s["key"] for s in pilot}) == 3 * len(settings.pilot_lrs) * len(settings.pilot_seeds)
    grid = {(f, lr) for f in BS.FAMILIES for lr in settings.pilot_lrs}
    assert {(s["family"], s["model"]["lr"]) for s in pilot} == grid
    assert {s["seed"] for s in pilot}.isdisjoint(settings.seeds)
    assert all(s["kind"] == "bottleneck_pilot" and s["train"]["test"] is False for s in pilot)  # never reads test
    # the pilot trains exactly like the verdict's runs, but for its seed and rate
    verdict_run = next(s for s in B.plan(settings, RATES) if s["dataset"] == "reverse")
    assert pilot[0]["train"] | {"test": True} == verdict_run["train"]


def pilot_row(family, lr, seed, acc):
    return {"key": f"{family}{lr}{seed}", "kind": "bottleneck_pilot", "family": family, "lr": lr, "seed": seed,
            "val_token_accuracy": acc}


@pytest.mark.parametrize("grid, chosen", [
    ({1e-3: (0.5, 0.6), 3e-3: (0.9, 0.7), 1e-2: (0.2, 0.3)}, 3e-3),  # the best mean over the pilot seeds
    ({1e-3: (0.9, 0.1), 3e-3: (0.5, 0.45)}, 1e-3),  # the mean, not the best seed (0.5 > 0.475)
    ({1e-3: (0.8, 0.8), 3e-3: (0.8, 0.8)}, 1e-3),  # a tie goes to the smaller rate
    ({1e-3: (0.05, 0.05), 1e-2: (float("nan"), None)}, 1e-3),  # a diverged run counts as 0, never chosen
])
def test_the_pilot_keeps_the_rate_with_the_best_mean_validation_accuracy(grid, chosen):
    from experiments.c2_bottleneck.pilot import choose_rates

    rows = [pilot_row("rnn", lr, 100 + i, acc) for lr, accs in grid.items() for i, acc in enumerate(accs)]
    rows += [{**pilot_row("rnn", 1.0, 0, 1.0), "kind": "bottleneck"}]  # a verdict run is never a pilot run
    choice = choose_rates(rows, ["rnn", "transformer"])
    assert set(choice) == {"rnn"}  # no pilot rows, no choice
    assert choice["rnn"]["lr"] == chosen and choice["rnn"]["seeds"] == [100, 101]


def test_plan_trains_every_family_on_mixed_lengths_at_its_own_rate():
    settings = BS.lecture()
    specs = B.plan(settings, RATES)
    expected = (1 + len(settings.oracle_lengths) + 1) * 3 * len(settings.seeds)
    assert len(specs) == len({s["key"] for s in specs}) == expected
    for dataset in BS.DATASETS:
        group = [s for s in specs if s["dataset"] == dataset]
        assert {s["family"] for s in group} == set(BS.FAMILIES)
        assert len({(s["updates"], s["batch_size"]) for s in group}) == 1  # the same cap for every family
        for name, value in settings.shared.items():  # the same optimiser settings, the rate apart
            assert {json.dumps(s["model"][name]) for s in group} == {json.dumps(value)}
        assert {(s["family"], s["model"]["lr"]) for s in group} == set(RATES.items())
    reverse = [s for s in specs if s["dataset"] == "reverse"]
    assert len(reverse) == 3 * len(settings.seeds)  # one model per family and seed, every length in it
    args = reverse[0]["data"]["init_args"]
    assert (args["min_len"], args["max_len"]) == (4, 32) and reverse[0]["train"]["eval_lengths"] == [4, 8, 16, 32]
    # at one seed every family sees the same data
    at_seed = [s for s in reverse if s["seed"] == 1]
    assert len({json.dumps(s["data"], sort_keys=True) for s in at_seed}) == 1 and args["task_seed"] == 0
    assert B.plan(settings, {"rnn": 1e-3}) and {s["family"] for s in B.plan(settings, {"rnn": 1e-3})} == {"rnn"}


def test_lecture_nets_have_matched_parameter_counts():
    from experiments.core.families import get_family

    settings = BS.lecture()
    counts = {}
    for family in BS.FAMILIES:
        fam = get_family(family)
        model = fam.load_class()(vocab_size=settings.task_num_words + 5,
                                 **fam.init_kwargs({**settings.shared, **settings.models[family], "lr": 1e-3}))
        counts[family] = sum(p.numel() for p in model.generator.parameters())
    assert max(counts.values()) / min(counts.values()) < 1.05, counts


@pytest.mark.parametrize("change, message", [
    ({"datasets": ("reverse", "wmt")}, "bottleneck.datasets: unknown"),
    ({"task_lengths": (8, 4)}, "bottleneck.task_lengths must be increasing"),
    ({"oracle_lengths": ()}, "bottleneck.oracle_lengths must be increasing"),
    ({"task_max_updates": 0}, "bottleneck.task_max_updates must be >= 1"),
    ({"task_patience": 0}, "bottleneck.task_patience must be >= 1"),
    ({"task_val_every": 5000}, r"bottleneck.task_val_every \(5000\) must be <= task_max_updates"),
    ({"pilot_lrs": ()}, "bottleneck.pilot_lrs must be learning rates > 0"),
    ({"pilot_lrs": (1e-3, -1.0)}, "bottleneck.pilot_lrs must be learning rates > 0"),
    ({"pilot_seeds": (2, 100)}, r"bottleneck.pilot_seeds \[2\] are also verdict seeds"),
    ({"shared": {"lr": 1e-3}}, "bottleneck.shared must not set lr"),
    ({"multi30k_buckets": (20, 10)}, "bottleneck.multi30k_buckets must be increasing"),
    ({"seeds": ()}, "bottleneck.seeds"),
    ({"families": ("rnn", "lstm-gan")}, "bottleneck.models has no net settings for"),
])
def test_bad_settings_are_refused_by_name(change, message):
    settings = BS.lecture()
    for name, value in change.items():
        setattr(settings, name, value)
    with pytest.raises(ConfigError, match=message):
        settings.check()


def test_unknown_preset_is_refused():
    with pytest.raises(ConfigError, match="unknown bottleneck preset 'huge'"):
        BS.get_preset("huge")


# ---- runs ------------------------------------------------------------------------------------------------------


def smoke_spec(dataset="reverse", family="rnn-attention", settings=None):
    return next(s for s in B.plan(settings or BS.smoke(), RATES) if s["dataset"] == dataset and s["family"] == family)


def test_a_run_is_reproduced_by_its_seed_and_scored_per_length(tmp_path):
    spec = smoke_spec()
    a, b = B.run_spec(spec, tmp_path / "a", "disabled"), B.run_spec(spec, tmp_path / "b", "disabled")
    for name in ("by_length", "final_train_loss", "num_parameters", "val_token_accuracy", "best_step", "stopped_at"):
        assert a[name] == b[name], name
    assert a["lengths"] == [3, 5] and sorted(a["by_length"], key=int) == ["3", "5"]
    for bucket in a["by_length"].values():
        assert 0.0 <= bucket["token_accuracy"] <= 1.0 and bucket["num_test"] == 16
    assert a["updates"] == a["stopped_at"] <= spec["updates"] and a["samples_seen"] == a["updates"] * spec["batch_size"]
    assert a["lr"] == RATES["rnn-attention"] and a["max_updates"] == spec["updates"] == 30
    assert a["hit_cap"] == (a["stopped_at"] == 30) and a["best_step"] in (10, 20, 30) and a["val_checks"] >= 1
    assert a["chance_token_accuracy"] == pytest.approx(1 / 6)
    assert 0.0 < a["cpu_time_s"] and 0.0 < a["fit_time_s"] < a["wall_time_s"]


def test_a_run_stops_early_on_a_validation_plateau_and_keeps_the_best_check(tmp_path):
    settings = BS.smoke()
    settings.task_max_updates, settings.task_val_every, settings.task_patience = 200, 10, 1
    spec = smoke_spec(settings=settings)
    spec["model"]["lr"] = 1e-9  # nothing is learned: the validation accuracy never improves after the first check
    row = B.run_spec(spec, tmp_path, "disabled")
    assert (row["best_step"], row["stopped_at"], row["hit_cap"], row["val_checks"]) == (10, 20, False, 2)


def test_each_length_bucket_is_tested_on_sources_of_that_length_unseen_in_training():
    from experiments.core.datamodules import build_datamodule

    spec = smoke_spec()
    dm = build_datamodule(spec["data"], 8, 0)
    dm.prepare()
    seen = {tuple(ex.src) for split in ("train", "val") for ex in dm.examples(split)}
    assert {len(ex.src) for ex in dm.examples("train")} == {3, 4, 5}  # mixed lengths in training
    sets = BM.length_test_sets(spec["data"], dm, [3, 5], 8, 0)
    for length, at in sets.items():
        test = [tuple(ex.src) for ex in at.examples("test")]
        assert len(test) == 16 and {len(t) for t in test} == {length} and not seen & set(test)


def test_an_oracle_run_reports_the_excess_over_the_oracle_entropy(tmp_path):
    row = B.run_spec(smoke_spec("oracle", "rnn"), tmp_path, "disabled")
    assert row["excess_nll_per_token"] == pytest.approx(row["nll_test_per_token"] - row["oracle_entropy_per_token"])
    assert row["nll_oracle_per_token"] > 0


def write_corpus(folder, pairs):
    for split, rows in pairs.items():
        for side, index in (("de", 0), ("en", 1)):
            name = f"{'test_2016_flickr' if split == 'test' else split}.{side}.gz"
            with gzip.open(folder / name, "wt", encoding="utf-8") as f:
                f.write("\n".join(pair[index] for pair in rows) + "\n")


@pytest.mark.slow
def test_multi30k_runs_are_scored_per_source_length_bucket(tmp_path):
    rng = random.Random(0)
    words = "ein hund eine katze der mann die frau läuft sitzt auf dem gras im park".split()
    english = dict(zip(words, "a dog a cat the man the woman runs sits on the grass in park".split()))

    def pair():
        src = [rng.choice(words) for _ in range(rng.randint(1, 12))]
        return " ".join(src), " ".join(english[w] for w in src)

    write_corpus(tmp_path, {"train": [pair() for _ in range(200)], "val": [pair() for _ in range(10)],
                            "test": [pair() for _ in range(40)]})
    settings = BS.smoke()
    settings.datasets, settings.families, settings.pilot_lrs = ("multi30k",), ("rnn-attention",), (3e-3,)
    rows = B.run(settings, tmp_path / "out", workers=1, wandb_mode="disabled", echo=lambda *_: None,
                 multi30k_root=str(tmp_path))
    rows = [r for r in rows if r["kind"] == "bottleneck"]  # the pilot (on reverse) chose the rate
    assert len(rows) == 1 and rows[0]["lr"] == 3e-3
    buckets = rows[0]["buckets"]
    assert rows[0]["bucket_names"] == BM.bucket_names(settings.multi30k_buckets)
    assert set(buckets) == set(rows[0]["bucket_names"])
    assert sum(b["num_test"] for b in buckets.values()) == rows[0]["num_test"] == 40
    for b in buckets.values():
        assert b["num_test"] == 0 or 0.0 <= b["bleu4"] <= 1.0


@pytest.mark.slow
def test_the_command_runs_resumes_and_writes_the_report(tmp_path, capsys):
    from experiments.gvt import main as gvt

    out = tmp_path / "bn"
    argv = ["ablate", "bottleneck", "--preset", "smoke", "--out", str(out), "--workers", "2", "--wandb-mode",
            "disabled"]
    assert gvt(argv) == 0
    first = capsys.readouterr().out
    assert "C2 inconclusive" in first  # one smoke seed: too few for a verdict
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    pilot = json.loads((out / "pilot.json").read_text())
    assert set(pilot["chosen"]) == set(BS.FAMILIES) and len(pilot["runs"]) == len(B.pilot_plan(BS.smoke()))
    rates = {f: c["lr"] for f, c in pilot["chosen"].items()}
    assert len(rows) == len(B.pilot_plan(BS.smoke())) + len(B.plan(BS.smoke(), rates))
    for row in rows:  # every verdict run at its family's chosen rate
        assert row["kind"] == "bottleneck_pilot" or row["lr"] == rates[row["family"]]
    report = (out / "report" / "report.md").read_text()
    assert "## C2: the context vector is the bottleneck" in report and "too few seeds (1 < 3)" in report
    assert "Learning-rate pilot (seeds 100" in report and "learning rates chosen by the pilot: rnn" in report
    assert (out / "report" / "bottleneck_reverse.png").is_file()
    assert json.loads((out / "report" / "verdicts.json").read_text())["questions"]["C2"]["verdict"] == "inconclusive"
    assert gvt(argv) == 0  # resumed: nothing is run again
    assert "runs already in" in capsys.readouterr().out
    assert (out / "results.jsonl").read_text().count("\n") == len(rows)


def test_the_command_refuses_bad_input(capsys):
    assert B.main(["--preset", "smoke", "--datasets", "wmt"]) == 2
    assert "bottleneck.datasets: unknown ['wmt']" in capsys.readouterr().err


# ---- report section --------------------------------------------------------------------------------------------


def synthetic_rows():
    rows = []
    for family in BS.FAMILIES:
        for lr, acc in ((1e-3, 0.4), (3e-3, 0.7)):
            rows.append({"key": f"p{family}{lr}", "kind": "bottleneck_pilot", "dataset": "reverse", "family": family,
                         "seed": 100, "lr": lr, "val_token_accuracy": acc, "wall_time_s": 1.0})
        for seed in range(3):
            by_length = {str(n): {"token_accuracy": acc + seed / 100, "exact_match": acc / 2, "num_test": 10}
                         for n, acc in ((4, 0.95), (16, 0.6))}
            rows.append({"key": f"r{family}{seed}", "kind": "bottleneck", "dataset": "reverse", "family": family,
                         "seed": seed, "src_len": None, "lengths": [4, 16], "by_length": by_length, "lr": 3e-3,
                         "stopped_at": 400 + seed, "best_step": 200, "hit_cap": seed == 2, "max_updates": 402,
                         "num_parameters": 100, "wall_time_s": 1.0})
            rows.append({"key": f"m{family}{seed}", "kind": "bottleneck", "dataset": "multi30k", "family": family,
                         "seed": seed, "src_len": None, "num_parameters": 1000, "wall_time_s": 1.0,
                         "buckets": {"<=10": {"num_test": 5, "bleu4": 0.2 + seed / 100, "nll_test_per_token": 3.0},
                                     ">10": {"num_test": 7, "bleu4": 0.1, "nll_test_per_token": 3.5 + seed / 10}}})
    return rows


def test_report_section_has_tables_with_intervals_and_figures(tmp_path):
    lines, figures = BR.report_section(synthetic_rows(), tmp_path)
    text = "\n".join(lines)
    assert "| rnn-attention | 0.96 [0.935, 0.985] (n=3) | 0.61 [0.585, 0.635] (n=3) |" in text
    assert "| rnn | 0.400 | **0.700** |" in text  # the pilot, its choice in bold
    assert ("- rnn: lr 0.003; stopped at 400 (best 200), 401 (best 200), 402 (best 200) updates; 1 of 3 at the cap "
            "402") in text
    assert "18 runs and 6 pilot runs" in text
    assert "### oracle\n\nnot run in this folder" in text
    assert "Test pairs per bucket: <=10: 5, >10: 7." in text
    assert set(figures) == {"bottleneck_reverse", "bottleneck_multi30k"}
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in figures.values())


def test_report_section_without_runs_says_so(tmp_path):
    lines, figures = BR.report_section([], tmp_path)
    assert any(line.startswith("not run") for line in lines) and figures == {}


def test_without_the_corpus_multi30k_is_skipped_saying_so(tmp_path):
    settings = BS.smoke()
    settings.datasets, settings.families, settings.task_lengths = ("reverse", "multi30k"), ("rnn",), (3,)
    settings.pilot_lrs = (3e-3,)
    said = []
    rows = B.run(settings, tmp_path / "out", workers=1, wandb_mode="disabled", echo=said.append,
                 multi30k_root=str(tmp_path / "nowhere"))
    assert [(r["kind"], r["dataset"]) for r in rows] == [("bottleneck_pilot", "reverse"), ("bottleneck", "reverse")]
    assert any(line.startswith("bottleneck: multi30k not run: no corpus at") for line in said)
