"""C2 (experiments/bottleneck.py): the plan at equal budgets, the runs and their measurements, resuming, the report
section, the command; and the translation BLEU it reports (modules.metrics.bleu.corpus_bleu)."""

import gzip
import json
import random

import pytest

from experiments import bottleneck as B
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
    assert B.bucket_of(length, (10, 15, 20)) == expected
    assert expected in B.bucket_names((10, 15, 20))


def test_plan_trains_every_family_at_an_equal_budget():
    settings = B.lecture()
    specs = B.plan(settings)
    expected = (len(settings.task_lengths) + len(settings.oracle_lengths) + 1) * 3 * len(settings.seeds)
    assert len(specs) == len({s["key"] for s in specs}) == expected
    for dataset in B.DATASETS:
        group = [s for s in specs if s["dataset"] == dataset]
        assert {s["family"] for s in group} == set(B.FAMILIES)
        assert len({(s["updates"], s["batch_size"]) for s in group}) == 1  # same samples for every family
        for name, value in settings.shared.items():  # the same optimiser settings for every family
            assert {json.dumps(s["model"][name]) for s in group} == {json.dumps(value)}
    # at one seed and length every family sees the same data
    reverse = [s for s in specs if s["dataset"] == "reverse" and s["seed"] == 1 and s["src_len"] == 8]
    assert len({json.dumps(s["data"], sort_keys=True) for s in reverse}) == 1
    assert reverse[0]["data"]["init_args"]["task_seed"] == 1


def test_lecture_nets_have_matched_parameter_counts():
    from experiments.families import get_family

    settings = B.lecture()
    counts = {}
    for family in B.FAMILIES:
        fam = get_family(family)
        model = fam.load_class()(vocab_size=settings.task_num_words + 5,
                                 **fam.init_kwargs({**settings.shared, **settings.models[family]}))
        counts[family] = sum(p.numel() for p in model.generator.parameters())
    assert max(counts.values()) / min(counts.values()) < 1.05, counts


@pytest.mark.parametrize("change, message", [
    ({"datasets": ("reverse", "wmt")}, "bottleneck.datasets: unknown"),
    ({"task_lengths": (8, 4)}, "bottleneck.task_lengths must be increasing"),
    ({"oracle_lengths": ()}, "bottleneck.oracle_lengths must be increasing"),
    ({"task_updates": 0}, "bottleneck.task_updates must be >= 1"),
    ({"multi30k_buckets": (20, 10)}, "bottleneck.multi30k_buckets must be increasing"),
    ({"seeds": ()}, "bottleneck.seeds"),
    ({"families": ("rnn", "lstm-gan")}, "bottleneck.models has no net settings for"),
])
def test_bad_settings_are_refused_by_name(change, message):
    settings = B.lecture()
    for name, value in change.items():
        setattr(settings, name, value)
    with pytest.raises(ConfigError, match=message):
        settings.check()


def test_unknown_preset_is_refused():
    with pytest.raises(ConfigError, match="unknown bottleneck preset 'huge'"):
        B.get_preset("huge")


# ---- runs ------------------------------------------------------------------------------------------------------


def smoke_spec(dataset="reverse", family="rnn-attention"):
    return next(s for s in B.plan(B.smoke()) if s["dataset"] == dataset and s["family"] == family)


def test_a_run_is_reproduced_by_its_seed(tmp_path):
    spec = smoke_spec()
    a, b = B.run_spec(spec, tmp_path / "a", "disabled"), B.run_spec(spec, tmp_path / "b", "disabled")
    for name in ("token_accuracy", "exact_match", "nll_test_per_token", "final_train_loss", "num_parameters"):
        assert a[name] == b[name], name
    assert a["updates"] == spec["updates"] and a["samples_seen"] == spec["updates"] * spec["batch_size"]
    assert 0.0 <= a["token_accuracy"] <= 1.0 and a["chance_token_accuracy"] == pytest.approx(1 / 6)
    assert 0.0 < a["cpu_time_s"] and 0.0 < a["fit_time_s"] < a["wall_time_s"]


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
    settings = B.smoke()
    settings.datasets, settings.families = ("multi30k",), ("rnn-attention",)
    rows = B.run(settings, tmp_path / "out", workers=1, wandb_mode="disabled", echo=lambda *_: None,
                 multi30k_root=str(tmp_path))
    assert len(rows) == 1
    buckets = rows[0]["buckets"]
    assert rows[0]["bucket_names"] == B.bucket_names(settings.multi30k_buckets)
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
    assert len(rows) == len(B.plan(B.smoke()))
    report = (out / "report" / "report.md").read_text()
    assert "## C2: the context vector is the bottleneck" in report and "too few seeds (1 < 3)" in report
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
    for family in B.FAMILIES:
        for seed in range(3):
            for length, acc in ((4, 0.95), (16, 0.6)):
                rows.append({"key": f"r{family}{seed}{length}", "kind": "bottleneck", "dataset": "reverse",
                             "family": family, "seed": seed, "src_len": length, "token_accuracy": acc + seed / 100,
                             "exact_match": acc / 2, "num_parameters": 100, "wall_time_s": 1.0})
            rows.append({"key": f"m{family}{seed}", "kind": "bottleneck", "dataset": "multi30k", "family": family,
                         "seed": seed, "src_len": None, "num_parameters": 1000, "wall_time_s": 1.0,
                         "buckets": {"<=10": {"num_test": 5, "bleu4": 0.2 + seed / 100, "nll_test_per_token": 3.0},
                                     ">10": {"num_test": 7, "bleu4": 0.1, "nll_test_per_token": 3.5 + seed / 10}}})
    return rows


def test_report_section_has_tables_with_intervals_and_figures(tmp_path):
    lines, figures = B.report_section(synthetic_rows(), tmp_path)
    text = "\n".join(lines)
    assert "| rnn-attention | 0.96 [0.935, 0.985] (n=3) |" in text
    assert "### oracle\n\nnot run in this folder" in text
    assert "Test pairs per bucket: <=10: 5, >10: 7." in text
    assert set(figures) == {"bottleneck_reverse", "bottleneck_multi30k"}
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in figures.values())


def test_report_section_without_runs_says_so(tmp_path):
    lines, figures = B.report_section([], tmp_path)
    assert any(line.startswith("not run") for line in lines) and figures == {}


def test_without_the_corpus_multi30k_is_skipped_saying_so(tmp_path):
    settings = B.smoke()
    settings.datasets, settings.families, settings.task_lengths = ("reverse", "multi30k"), ("rnn",), (3,)
    said = []
    rows = B.run(settings, tmp_path / "out", workers=1, wandb_mode="disabled", echo=said.append,
                 multi30k_root=str(tmp_path / "nowhere"))
    assert [r["dataset"] for r in rows] == ["reverse"]
    assert any(line.startswith("bottleneck: multi30k not run: no corpus at") for line in said)
