"""`gvt lecture` (experiments/lecture.py): C1-C4 into one folder, the report, verdicts.json, resuming, and C2/C4
through their modules' contract. C2 and C4 are FAKE modules here (monkeypatched into sys.modules) or absent: no
test claims that the real bottleneck or transfer ablation ran."""

import hashlib
import json
import os
import subprocess
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from experiments import lecture, lecture_report
from experiments.c3_attention.claim import C3Settings
from experiments.core import verdicts as V

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def fake_module(question: str, calls: list) -> types.ModuleType:
    """A stand-in obeying the C2/C4 contract of notes: PRESETS, run, verdict, report_section."""
    module = types.ModuleType(f"fake_{question}")

    @dataclass
    class Settings:
        seeds: list = field(default_factory=lambda: [0, 1, 2])

    def run(settings, out, *, workers=2, wandb_mode="offline", echo=print):
        calls.append({"question": question, "out": Path(out), "workers": workers, "seeds": settings.seeds})
        Path(out).mkdir(parents=True, exist_ok=True)
        return [{"seed": s, "effect": 1.0 + 0.01 * s} for s in settings.seeds]

    def verdict(rows, *, alpha=0.05, min_seeds=3):
        cells = {"fake_effect": V.Cell(f"FAKE {question} effect", [r["effect"] for r in rows], 0.1)}
        return V._standard(question, f"FAKE {question} claim", "FAKE rule", 0.1, "fake_effect", cells, None, [],
                           V.VerdictSettings(alpha=alpha, min_seeds=min_seeds))

    def report_section(rows, out):
        from matplotlib.figure import Figure

        path = Path(out) / f"fake_{question}.png"
        fig = Figure(figsize=(1, 1))
        fig.add_subplot().plot([0, 1])
        fig.savefig(path)
        return [f"FAKE {question} SECTION with {len(rows)} rows"], {"fake": path}

    module.PRESETS = {"smoke": Settings, "lecture": Settings}
    module.run, module.verdict, module.report_section = run, verdict, report_section
    return module


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """`gvt lecture --preset lecture-smoke` in-process with fake C2/C4 modules, run twice (the second resumes)."""
    out = tmp_path_factory.mktemp("lecture") / "smoke"
    calls: list = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, lecture.C2_MODULE, fake_module("C2", calls))
        mp.setitem(sys.modules, lecture.C4_MODULE, fake_module("C4", calls))
        argv = ["--preset", "lecture-smoke", "--out", str(out), "--wandb-mode", "disabled"]
        assert lecture.main(argv) == 0
        first = {"results": (out / "c3" / "results.jsonl").read_text(),
                 "state": json.loads((out / "lecture.json").read_text())}
        assert lecture.main(argv) == 0
    return {"out": out, "calls": calls, "first": first}


@pytest.mark.slow
def test_report_has_every_claim_the_times_and_the_machine(smoke):
    text = (smoke["out"] / "report" / "report.md").read_text()
    for heading in ("## C1:", "## C2:", "## C3:", "## C4:", "## Time and machine", "## Settings of the preset"):
        assert heading in text
    assert "| C1 |" in text and "| all parts |" in text and "Machine: " in text and "load average" in text
    assert "Confound" in text  # C1's confound stands beside its verdict
    assert "has no attention weights" in text or "no attention weights to show" in text  # plain rnn, said


@pytest.mark.slow
def test_c3_section_reports_both_baselines_and_the_masking_test(smoke):
    text = (smoke["out"] / "report" / "report.md").read_text()
    assert "| positional baseline |" in text and "| changed: attended masked | changed: random masked |" in text
    assert "| rnn-attention | sort (primary) |" in text and "| transformer | copy |" in text
    scores = [json.loads(p.read_text()) for p in (smoke["out"] / "c3" / "runs").glob("*/c3_scores.json")]
    for row in scores:
        assert {"alignment_positional", "mask_flip_attended", "mask_flip_random"} <= set(row)
        if row["task"] == "copy":
            assert row["alignment_positional"] == 1.0  # the diagonal
        assert 0.0 <= row["mask_flip_random"] <= 1.0 and 0.0 <= row["mask_flip_attended"] <= 1.0
    c3 = json.loads((smoke["out"] / "report" / "verdicts.json").read_text())["questions"]["C3"]
    assert c3["primary"] == "alignment_above_baseline"
    assert {"masking_rnn-attention_sort", "alignment_above_baseline_transformer_copy"} <= set(c3["cells"])


@pytest.mark.slow
def test_verdicts_json_has_the_q_report_schema(smoke):
    data = json.loads((smoke["out"] / "report" / "verdicts.json").read_text())
    assert data["correction"] == "holm" and data["alpha"] == 0.05 and data["preregistration"]["hash"]
    assert set(data["questions"]) == {"C1", "C2", "C3", "C4"}
    for q in data["questions"].values():
        assert q["verdict"] in (V.SUPPORTED, V.NOT_SUPPORTED, V.INCONCLUSIVE)
        assert {"rule", "margin", "primary", "cells", "holm", "reason"} <= set(q)
        for cell in q["cells"].values():
            assert {"estimate", "interval", "n", "precondition_met"} <= set(cell)
    assert data["questions"]["C1"]["margin"] == lecture.C1_SESOI
    assert data["questions"]["C3"]["margin"] == lecture.C3_SESOI
    assert data["questions"]["C1"]["cells"]["slope_difference"]["n"] == 3  # the smoke preset's 3 processes
    assert data["questions"]["C1"]["c1"]["device"]["type"] == "cpu"
    assert "CPU" in data["questions"]["C1"]["reason"] and "torch thread(s)" in data["questions"]["C1"]["reason"]


@pytest.mark.slow
def test_c2_and_c4_come_from_their_modules(smoke):
    data = json.loads((smoke["out"] / "report" / "verdicts.json").read_text())
    assert data["questions"]["C2"]["claim"] == "FAKE C2 claim" and data["questions"]["C4"]["claim"] == "FAKE C4 claim"
    assert data["questions"]["C2"]["verdict"] == V.SUPPORTED  # the fake's effect, decided in the Holm family
    text = (smoke["out"] / "report" / "report.md").read_text()
    assert "FAKE C2 SECTION with 3 rows" in text and "FAKE C4 SECTION with 3 rows" in text
    first = [c for c in smoke["calls"]][:2]
    assert [(c["question"], c["out"].name, c["workers"]) for c in first] == [("C2", "c2", 1), ("C4", "c4", 1)]


@pytest.mark.slow
def test_figures_and_heatmaps_are_pngs(smoke):
    report = smoke["out"] / "report"
    names = ["c1_step_time.png", "c3_alignment.png", "heatmaps/c3_copy_rnn-attention_0.png",
             "heatmaps/c3_copy_transformer_0.png", "heatmaps/c3_copy_transformer_0_heads.png",
             "heatmaps/c3_sort_rnn-attention_0.png", "heatmaps/c3_sort_transformer_0.png", "fake_C2.png"]
    for name in names:
        assert (report / name).read_bytes()[:8] == PNG_MAGIC, name
        assert f"]({name})" in (report / "report.md").read_text() or name.startswith("fake")


@pytest.mark.slow
def test_a_rerun_redoes_nothing(smoke):
    out = smoke["out"]
    assert (out / "c3" / "results.jsonl").read_text() == smoke["first"]["results"]  # no run trained twice
    state = json.loads((out / "lecture.json").read_text())
    assert smoke["first"]["state"]["parts"]["c1"]["resumed"] is False
    assert state["parts"]["c1"]["resumed"] is True and len(state["parts"]["c1"]["wall_s"]) == 2
    c3_scores = sorted((out / "c3" / "runs").glob("*/c3_scores.json"))
    assert len(c3_scores) == 4  # rnn-attention and transformer on copy and sort, seed 0


def test_absent_modules_leave_not_run_sections(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, lecture.C2_MODULE, None)  # as if experiments.c2_bottleneck.bottleneck were not there
    result = lecture.run_lecture("lecture-smoke", tmp_path, only=["c2"], wandb_mode="disabled", echo=lambda m: None)
    by_q = {v.question: v for v in result.verdicts}
    assert by_q["C2"].verdict == V.INCONCLUSIVE and by_q["C2"].reason == "not run: experiments.c2_bottleneck.bottleneck is not there"
    assert by_q["C1"].reason.startswith("not run: left out by --only")
    text = result.report.read_text()
    assert "not run: experiments.c2_bottleneck.bottleneck is not there (on this branch)" in text
    assert not (tmp_path / "c1").exists() and not (tmp_path / "c3").exists()  # --only ran nothing else


def test_an_import_error_inside_a_part_module_is_not_hidden(tmp_path, monkeypatch):
    (tmp_path / "broken_part.py").write_text("import not_a_module_of_this_project\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="not_a_module_of_this_project"):
        lecture.import_part("broken_part")


def test_seeds_reach_the_delegated_part(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setitem(sys.modules, lecture.C4_MODULE, fake_module("C4", calls))
    lecture.run_delegated("C4", lecture.C4_MODULE, "smoke", tmp_path / "c4", seeds=[7, 8], workers=2,
                          wandb_mode="disabled", echo=lambda m: None)
    assert calls[0]["seeds"] == [7, 8] and calls[0]["out"] == tmp_path / "c4"


def test_unknown_delegated_preset_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, lecture.C2_MODULE, fake_module("C2", []))
    with pytest.raises(lecture.ConfigError, match="has no preset 'nope'"):
        lecture.run_delegated("C2", lecture.C2_MODULE, "nope", tmp_path, seeds=None, workers=1,
                              wandb_mode="disabled", echo=print)


@pytest.mark.parametrize("text, parts", [(None, ["c1", "c2", "c3", "c4"]), ("c3,c1", ["c1", "c3"]), ("C2", ["c2"])])
def test_only_parses_parts(text, parts):
    assert lecture.parse_only(text) == parts


@pytest.mark.parametrize("text", ["c5", "c1,x", ","])
def test_only_rejects_unknown_parts(text):
    with pytest.raises(lecture.ConfigError, match="--only takes parts among c1, c2, c3, c4"):
        lecture.parse_only(text)


MODELS = {"rnn-attention": {}, "transformer": {}}


@pytest.mark.parametrize("kwargs, match", [
    (dict(tasks=["sort"], task_data={}), "c3.tasks: 'sort' has no unique true alignment unless c3.task_data.distinct"),
    (dict(tasks=["rotate"]), "c3.tasks: unknown task 'rotate'"),
    (dict(tasks=["copy", "reverse"]), r"c3.primary_tasks \['sort'\] are not among c3.tasks"),
    (dict(primary_tasks=[]), "c3.primary_tasks must name at least one task"),
])
def test_c3_settings_refuse_what_cannot_be_scored(kwargs, match):
    with pytest.raises(lecture.ConfigError, match=match):
        C3Settings(models=MODELS, **kwargs)


def test_c3_presets_decide_on_the_content_task():
    for name in lecture.PRESETS:
        c3 = lecture.PRESETS[name]().c3
        assert c3.primary_tasks == ["sort"] and "sort" in c3.tasks and c3.task_data["distinct"] is True
    prereg = lecture.preregistration(lecture.PRESETS["lecture"]())
    assert prereg["settings"]["c3"]["primary_tasks"] == ["sort"]
    assert prereg["settings"]["c3"]["primary"] == "alignment_above_baseline"
    assert "max(chance, positional baseline)" in prereg["settings"]["c3"]["rule"]


def test_gvt_dispatches_lecture(tmp_path):
    """`gvt lecture` through the entry point: the C1 part of the smoke preset, then a bad --only (exit 2)."""
    run = lambda *args: subprocess.run([sys.executable, "-m", "experiments.gvt", "lecture", *args],  # noqa: E731
                                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    ok = run("--preset", "lecture-smoke", "--only", "c1", "--out", str(tmp_path), "--wandb-mode", "disabled")
    assert ok.returncode == 0, ok.stderr
    assert "C1: timing training steps" in ok.stderr and "C1 " in ok.stdout
    assert (tmp_path / "report" / "report.md").is_file() and (tmp_path / "c1" / "parallel.json").is_file()
    bad = run("--only", "c9", "--out", str(tmp_path))
    assert bad.returncode == 2 and "gvt lecture: error: --only takes parts among" in bad.stderr


@pytest.mark.slow
def test_figures_are_logged_as_wandb_images_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    from matplotlib.figure import Figure

    png = tmp_path / "heat.png"
    fig = Figure(figsize=(1, 1))
    fig.add_subplot().imshow([[0.0, 1.0]])
    fig.savefig(png)
    assert lecture.log_to_wandb(lecture.PRESETS["lecture-smoke"](), tmp_path, {"c3_heat": png}, [], "offline",
                                echo=print)
    assert list((tmp_path / "report").glob("wandb/offline-run-*/files/media/images/lecture/c3_heat*.png"))


# ---- C1's measurement (experiments/c1_parallel/measure.py) and the benchmark over it ----------------------------------------

TINY = dict(lengths=[2, 4], batch_size=2, vocab_size=20, d_model=8, n_heads=2, layers=1, warmup=0, repeats=2)


def test_measure_keeps_every_timed_step_at_matched_sizes():
    import torch

    from experiments.c1_parallel.measure import ParallelSettings, measure, slopes_per_replicate

    before = torch.get_num_threads()
    record = measure(ParallelSettings(**TINY, threads=[1]), echo=lambda m: None)
    assert torch.get_num_threads() == before
    assert len(record["timings"]) == 2 * 2 * 2  # families x lengths x rounds
    assert all(t["seconds"] > 0 for t in record["timings"])
    p = record["parameters"]
    assert abs(p["lstm"] / p["transformer"] - 1) <= lecture.PARAMETER_TOLERANCE
    # the rounds of one process are one replicate
    assert {f: len(v) for f, v in slopes_per_replicate(record, 1).items()} == {"lstm": 1, "transformer": 1}
    assert record["device"]["type"] == "cpu"


def test_each_replicate_is_its_own_process():
    from experiments.c1_parallel.measure import ParallelSettings, measure_replicates, replicates_of, slopes_per_replicate

    lines = []
    record = measure_replicates(ParallelSettings(**TINY, threads=[1, 2], replicates=2), echo=lines.append)
    assert replicates_of(record) == [0, 1]
    assert len(record["timings"]) == 2 * 2 * 2 * 2 * 2  # replicates x threads x families x lengths x rounds
    pids = [r["pid"] for r in record["replicates"]]
    assert len(set(pids)) == 4 and os.getpid() not in pids  # one fresh process per replicate and thread count
    assert [(r["replicate"], r["threads"]) for r in record["replicates"]] == [(0, 1), (0, 2), (1, 1), (1, 2)]
    assert {f: len(v) for f, v in slopes_per_replicate(record, 2).items()} == {"lstm": 2, "transformer": 2}
    assert record["settings"]["replicates"] == 2 and record["device"]["type"] == "cpu"
    assert any("replicate 2/2, 2 thread(s)" in line for line in lines)


def test_a_failing_replicate_process_is_a_clear_error(tmp_path, monkeypatch):
    """A child that dies (here a stand-in experiments.c1_parallel.measure found first from the working directory) is named
    with its exit code and the end of its output, not read as a record."""
    from experiments.c1_parallel.measure import ParallelSettings, run_replicate

    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "__init__.py").write_text("")
    (tmp_path / "experiments" / "c1_parallel").mkdir()
    (tmp_path / "experiments" / "c1_parallel" / "__init__.py").write_text("")
    (tmp_path / "experiments" / "c1_parallel" / "measure.py").write_text(
        "import sys\nsys.stderr.write('boom\\n')\nsys.exit(3)\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(lecture.ConfigError, match=r"C1 replicate 0 \(1 thread\(s\)\) failed with exit code 3: boom"):
        run_replicate(ParallelSettings(**TINY), 0, 1, tmp_path)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_a_clear_error(tmp_path, capsys):
    from experiments.c1_parallel.measure import ParallelSettings, measure_replicates

    with pytest.raises(lecture.ConfigError, match="C1's device is cuda, but CUDA is not available here"):
        measure_replicates(ParallelSettings(**TINY, device="cuda"), echo=lambda m: None)
    argv = ["--preset", "lecture-smoke", "--only", "c1", "--c1-device", "cuda", "--out", str(tmp_path),
            "--wandb-mode", "disabled"]
    assert lecture.main(argv) == 2
    assert "gvt lecture: error: C1's device is cuda, but CUDA is not available here" in capsys.readouterr().err
    assert not (tmp_path / "c1" / "parallel.json").exists()


def test_the_c1_device_and_rule_are_pre_registered():
    cpu = lecture.preregistration(lecture.PRESETS["lecture"]())
    settings = lecture.PRESETS["lecture"]()
    settings.c1 = lecture.ParallelSettings(**{**settings.c1.to_dict(), "device": "cuda"})
    gpu = lecture.preregistration(settings)
    assert cpu["settings"]["c1_device"] == "cpu" and gpu["settings"]["c1_device"] == "cuda"
    assert cpu["hash"] != gpu["hash"]
    rule = cpu["settings"]["c1_rule"]
    assert rule["sesoi"] == lecture.C1_SESOI and "lower bound >= SESOI" in rule["supported"]
    assert "leave-longest-out" in rule["supported"] and cpu["settings"]["c1_replicates"] == 5


@pytest.mark.parametrize("bad, message", [(dict(lengths=[8]), "c1.lengths needs at least two"),
                                          (dict(threads=[0]), "c1.threads"),
                                          (dict(replicates=0), "c1.replicates must be >= 1"),
                                          (dict(device="gpu"), "c1.device must be cpu, cuda or cuda:N"),
                                          (dict(d_model=10, n_heads=4), "divisible by c1.n_heads")])
def test_parallel_settings_refuse_bad_input(bad, message):
    from experiments.c1_parallel.measure import ParallelSettings

    with pytest.raises(lecture.ConfigError, match=message):
        ParallelSettings(**bad)


def test_bench_parallel_script_prints_its_table_and_plot(tmp_path):
    out = tmp_path / "bench.png"
    done = subprocess.run([sys.executable, "benchmarks/bench_parallel.py", "--lengths", "2,4", "--batch-size", "2",
                           "--vocab-size", "20", "--d-model", "8", "--n-heads", "2", "--layers", "1", "--warmup", "0",
                           "--repeats", "2", "--threads", "1", "--devices", "cpu", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert "growth of step time with length" in done.stdout and "lstm/transformer" in done.stdout
    assert out.read_bytes()[:8] == PNG_MAGIC


def test_a_module_section_sits_one_heading_level_below_the_claim():
    lines = ["## C2: the bottleneck", "text", "### reverse", "#### detail", "## second"]
    assert lecture_report.subsection(lines) == ["### Tables and figures", "text", "#### reverse", "##### detail",
                                         "### second"]


def test_the_preregistration_holds_c2s_pilot_grid_cap_and_gates(monkeypatch):
    import dataclasses

    from experiments.c2_bottleneck import settings as c2_settings

    settings = lecture._settings_for("lecture")
    prereg = lecture.preregistration(settings)
    c2 = prereg["settings"]["parts"]["C2"]
    assert c2["settings"]["pilot_lrs"] == list(c2_settings.lecture().pilot_lrs) and c2["pilot_rule"]
    assert c2["settings"]["task_max_updates"] == c2_settings.lecture().task_max_updates
    assert c2["gates"]["control_max_drop"] == c2_settings.CONTROL_MAX_DROP
    monkeypatch.setitem(c2_settings.PRESETS, "lecture", lambda: dataclasses.replace(c2_settings.lecture(),
                                                                                   pilot_lrs=(1e-3,)))
    assert lecture.preregistration(settings)["hash"] != prereg["hash"]  # another grid is another registration


LECTURE_PREREGISTRATION = ROOT / "configs" / "preregistration" / "lecture.json"
LECTURE_REPORT = ROOT / "docs" / "lecture_report" / "verdicts.json"


def rehash(settings: dict) -> str:
    """The lecture's hash of recorded settings (``lecture.preregistration``'s digest)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def test_the_committed_lecture_preregistration_is_the_lecture_presets():
    """configs/preregistration/lecture.json holds what the lecture preset defines now: a change to the preset, a
    SESOI, a gate or a rule fails here until a new pre-registration is committed."""
    committed = json.loads(LECTURE_PREREGISTRATION.read_text())
    now = json.loads(json.dumps(lecture.preregistration(lecture.PRESETS["lecture"]()), default=str))
    assert now["hash"] == committed["hash"] == rehash(committed["settings"])
    assert now["settings"] == committed["settings"]


def test_the_committed_lecture_report_was_judged_by_the_committed_preregistration():
    """docs/lecture_report's recorded settings give its hash, and they are the committed pre-registration's but for
    the rates C4's pilot chose during the run."""
    committed = json.loads(LECTURE_PREREGISTRATION.read_text())
    recorded = json.loads(LECTURE_REPORT.read_text())["preregistration"]
    assert rehash(recorded["settings"]) == recorded["hash"] == committed["report_hash"]
    chosen = recorded["settings"]["c4"].pop("lr_choices")
    assert chosen and committed["settings"]["c4"].pop("lr_choices", None) is None
    assert recorded["settings"] == committed["settings"]
