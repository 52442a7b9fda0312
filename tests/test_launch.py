"""One plan, any launcher: plan.json, `gvt sweep run-one`, worker slots, W&B sweep configs, merged reports.

The fast tests use a stand-in for the training run (``experiments.core.runner.run_one``) where only the bookkeeping
around it is under test; the slow ones train the smoke preset's transformer runs for real, in `gvt` processes:
simulated W&B agents on two "machines" (two folders), a killed `run-one`, and 1 vs 2 workers.
"""

import json
import math
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

import experiments.core.launch as launch
import experiments.core.runner as runner
from experiments.cli import main as gvt_main
from experiments.core.launch import (PlanError, WorkerSlot, assign_workers, read_run_plan, run_planned, uses_accelerator,
                                write_run_plan)
from experiments.core.merge import RowConflict, comparable, merge_rows, merge_run_folders, rows_from_wandb
from experiments.core.presets import get_preset
from experiments.core.results import ResultsTable, write_plan
from experiments.core.specs import run_key
from experiments.core.wandb_sweep import (COMMITTED, ROW_ARTIFACT, SweepServerError, agent_argv, create_sweep, log_row,
                                     sweep_config)
from experiments.q2_batch_size.sweep import sweep_specs

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ["--preset", "smoke", "--families", "transformer"]


def smoke_specs(**tracking) -> list[dict]:
    return sweep_specs(get_preset("smoke").sweep, {"wandb_mode": "disabled", **tracking})


def fake_row(spec: dict, nll: float = 5.0) -> dict:
    return {"key": spec["key"], "kind": spec["kind"], "family": spec["family"], "batch_size": spec["batch_size"],
            "seed": spec["seed"], "plan_hash": spec.get("plan_hash"), "final": {"nll_oracle_per_token": nll},
            "wall_time_s": 1.0, "fit_time_s": 0.5, "paths": {"folder": f"runs/{spec['key']}"}}


@pytest.fixture
def fake_training(monkeypatch):
    """``run_one`` replaced by a stand-in that records the specs it was given and returns a fake row."""
    calls = []

    def run_one(spec, run_dir):
        calls.append(spec)
        return fake_row(spec)

    monkeypatch.setattr(launch, "run_one", run_one)  # the name run_planned calls
    return calls


# ---- worker slots --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("workers, devices, cpus, per_device, expected_devices, expected_threads", [
    (2, [], 2, 1, [None, None], 1),  # CPU: the cores are split
    (4, [], 16, 1, [None] * 4, 4),
    (3, [], 2, 1, [None] * 3, 1),  # never below one thread
    (2, ["0", "1"], 16, 1, ["0", "1"], 8),  # one GPU each
    (4, ["0", "1"], 16, 2, ["0", "1", "0", "1"], 4),  # round robin, two per GPU
    (2, ["0"], 8, 2, ["0", "0"], 4),  # two workers packed on one GPU
    (2, ["3", "5"], 4, 1, ["3", "5"], 2),  # the parent's CUDA_VISIBLE_DEVICES entries, not 0..n-1
    (1, ["0", "1"], 8, 1, ["0"], 8),
])
def test_assign_workers(workers, devices, cpus, per_device, expected_devices, expected_threads):
    slots = assign_workers(workers, devices, cpus, per_device)
    assert [s.device for s in slots] == expected_devices
    assert [s.index for s in slots] == list(range(workers))
    assert {s.threads for s in slots} == {expected_threads}


@pytest.mark.parametrize("workers, devices, per_device, match", [
    (3, ["0", "1"], 1, "--workers-per-device"),  # more workers than GPU places
    (0, [], 1, "--workers must be >= 1"),
    (2, ["0"], 0, "--workers-per-device must be >= 1"),
])
def test_assign_workers_refuses(workers, devices, per_device, match):
    with pytest.raises(ValueError, match=match):
        assign_workers(workers, devices, 8, per_device)


def test_only_specs_that_use_an_accelerator_get_gpus():
    cpu = [{"trainer": {"accelerator": "cpu"}}]
    assert not uses_accelerator(cpu)
    assert uses_accelerator(cpu + [{"trainer": {"accelerator": "auto", "devices": 1}}])


def test_a_worker_takes_its_slot_and_sees_only_its_gpu(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.setattr(launch, "_SLOT", None)
    slots = queue.Queue()
    slots.put(WorkerSlot(1, "1", 3))
    launch.take_slot(slots)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "1" and launch.slot_threads() == 3


def test_a_workers_thread_share_applies_only_where_the_spec_leaves_threads_open(tmp_path, fake_training):
    specs = smoke_specs()[:2]
    specs[1] = {**specs[1], "threads": None}
    write_run_plan(tmp_path, specs)
    for spec in specs:
        run_planned(tmp_path, spec["key"], threads=4)
    assert [s["threads"] for s in fake_training] == [1, 4]


# ---- the plan ------------------------------------------------------------------------------------------------


def test_plan_holds_every_spec_under_its_key_and_replanning_changes_nothing(tmp_path):
    specs = smoke_specs()
    plan, part = write_run_plan(tmp_path, specs, command="sweep batch-size --preset smoke")
    assert list(plan["runs"]) == [s["key"] for s in specs] and plan["plan_hash"] == part
    assert read_run_plan(tmp_path)["runs"] == json.loads(json.dumps(plan["runs"]))
    again, part2 = write_run_plan(tmp_path, smoke_specs(wandb_mode="online"))
    assert part2 == part and again["plan_hash"] == part and len(again["history"]) == 1
    assert all(s["tracking"]["wandb_mode"] == "online" for s in again["runs"].values())  # untracked: latest wins


def test_a_grown_plan_keeps_accepting_the_hashes_it_had(tmp_path):
    specs = smoke_specs()
    _, first = write_run_plan(tmp_path, specs[:2])
    plan, second = write_run_plan(tmp_path, specs[2:])
    assert len(plan["runs"]) == 4 and len({first, second, plan["plan_hash"]}) == 3
    assert {first, second, plan["plan_hash"]} <= launch.accepted_hashes(plan)


def test_a_spec_edited_in_the_plan_is_refused(tmp_path):
    write_run_plan(tmp_path, smoke_specs())
    path = tmp_path / "plan.json"
    plan = json.loads(path.read_text())
    key = next(iter(plan["runs"]))
    plan["runs"][key]["budget"]["updates"] += 1
    path.write_text(json.dumps(plan))
    with pytest.raises(PlanError, match="edited"):
        read_run_plan(tmp_path)


def test_a_run_removed_from_the_plan_by_hand_is_refused(tmp_path):
    write_run_plan(tmp_path, smoke_specs())
    path = tmp_path / "plan.json"
    plan = json.loads(path.read_text())
    plan["runs"].pop(next(iter(plan["runs"])))
    path.write_text(json.dumps(plan))
    with pytest.raises(PlanError, match="by hand"):
        read_run_plan(tmp_path)


# ---- run-one -------------------------------------------------------------------------------------------------


def test_run_planned_runs_exactly_the_planned_spec_once_with_the_plan_hash_in_its_row(tmp_path, fake_training):
    specs = smoke_specs()
    _, part = write_run_plan(tmp_path, specs)
    result = run_planned(tmp_path, specs[1]["key"])
    assert result.ok and [s["key"] for s in fake_training] == [specs[1]["key"]]
    assert {k: v for k, v in fake_training[0].items() if k != "plan_hash"} == json.loads(json.dumps(specs[1]))
    assert ResultsTable(tmp_path).rows()[0]["plan_hash"] == part
    again = run_planned(tmp_path, specs[1]["key"])
    assert again.ok and again.already_done and len(fake_training) == 1


def test_run_one_without_a_plan_or_with_an_unplanned_key_is_refused(tmp_path, fake_training):
    with pytest.raises(PlanError, match="no plan.json"):
        run_planned(tmp_path, "transformer__bs1__seed0__0000000000")
    write_run_plan(tmp_path, smoke_specs())
    with pytest.raises(PlanError, match="is not a planned run"):
        run_planned(tmp_path, "transformer__bs1__seed0__0000000000")
    assert not fake_training


def test_a_crashed_run_is_recorded_and_the_next_run_one_retries_it(tmp_path, monkeypatch):
    spec = smoke_specs()[0]
    write_run_plan(tmp_path, [spec])
    attempts = []

    def crash_once(spec, run_dir):
        attempts.append(spec["key"])
        if len(attempts) == 1:
            raise RuntimeError("out of memory (simulated)")
        return fake_row(spec)

    monkeypatch.setattr(launch, "run_one", crash_once)
    first = run_planned(tmp_path, spec["key"])
    assert not first.ok and "out of memory" in first.message
    errors = [json.loads(line) for line in (tmp_path / "errors.jsonl").read_text().splitlines()]
    assert [e["key"] for e in errors] == [spec["key"]] and "out of memory" in errors[0]["error"]
    assert ResultsTable(tmp_path).keys() == set()
    second = run_planned(tmp_path, spec["key"])
    assert second.ok and ResultsTable(tmp_path).keys() == {spec["key"]} and len(attempts) == 2


def test_run_one_of_a_dependent_spec_runs_its_missing_producer_first(tmp_path, fake_training):
    producer, other = smoke_specs()[:2]
    dependent = {**other, "init_from": {"key": producer["key"]}}
    dependent["key"] = run_key(dependent)
    write_run_plan(tmp_path, [producer, dependent])
    assert run_planned(tmp_path, dependent["key"]).ok
    assert [s["key"] for s in fake_training] == [producer["key"], dependent["key"]]
    other_folder = tmp_path / "second"
    write_run_plan(other_folder, [producer, dependent])
    run_planned(other_folder, producer["key"])
    run_planned(other_folder, dependent["key"])
    assert [s["key"] for s in fake_training[2:]] == [producer["key"], dependent["key"]]  # producer not run twice


def test_a_stale_plan_is_refused(tmp_path, fake_training, capsys):
    specs = smoke_specs()
    _, sweep_hash = write_run_plan(tmp_path / "run", specs)
    assert run_planned(tmp_path / "run", specs[0]["key"], expect_hash=sweep_hash).ok
    # The plan is replaced after runs started: the same grid planned with another budget (new keys).
    settings = get_preset("smoke").sweep
    settings.budget_value = 64
    write_run_plan(tmp_path / "other", sweep_specs(settings, {}))
    shutil.copyfile(tmp_path / "other" / "plan.json", tmp_path / "run" / "plan.json")
    new_keys = list(read_run_plan(tmp_path / "run")["runs"])
    with pytest.raises(PlanError, match="not the plan this launcher was made from"):
        run_planned(tmp_path / "run", new_keys[1], expect_hash=sweep_hash)
    with pytest.raises(PlanError, match="replaced after runs started"):
        run_planned(tmp_path / "run", new_keys[1])
    code = gvt_main("sweep", ["run-one", str(tmp_path / "run"), "--key", new_keys[1], "--plan-hash", sweep_hash])
    assert code == 2 and f"(hash {sweep_hash})" in capsys.readouterr().err
    assert len(fake_training) == 1


def test_run_one_plans_first_where_the_sweeps_plan_is_missing(tmp_path, fake_training, capsys):
    make = "sweep batch-size --preset smoke --families transformer --group g"
    keys = [s["key"] for s in smoke_specs()]
    sweep_hash = launch.plan_hash(keys)
    fresh, used = tmp_path / "fresh", tmp_path / "used"
    settings = get_preset("smoke").sweep
    settings.budget_value = 64
    write_run_plan(used, sweep_specs(settings, {}))  # this folder already holds another sweep's plan
    for folder in (fresh, used):
        code = gvt_main("sweep", ["run-one", str(folder), "--key", keys[0], "--plan-hash", sweep_hash,
                                  "--make-plan", make])
        assert code == 0, capsys.readouterr().err
        assert sweep_hash in launch.accepted_hashes(read_run_plan(folder))
    assert len(read_run_plan(used)["runs"]) == 8
    assert [s["key"] for s in fake_training] == [keys[0], keys[0]]
    # A machine whose code plans other runs than the sweep's: refused after planning, nothing run.
    code = gvt_main("sweep", ["run-one", str(tmp_path / "other"), "--key", keys[0], "--plan-hash", "0" * 12,
                              "--make-plan", make])
    assert code == 2 and "not the plan this launcher was made from" in capsys.readouterr().err
    assert len(fake_training) == 2


# ---- merging run folders -------------------------------------------------------------------------------------


def _folder(path: Path, rows: list[dict], plan=None, errors=()) -> Path:
    table = ResultsTable(path)
    for row in rows:
        table.add(row)
        folder = path / row["paths"]["folder"]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "curves.csv").write_text(f"update,train/loss\n1,{row['final']['nll_oracle_per_token']}\n")
    for key in errors:
        table.add_error(key, "boom")
    if plan:
        write_plan(path, plan)
    return path


def _settings_plan(budget=32, seeds=(0,)):
    return {"group": "g", "project": "p", "experiments": {"batch-size": {
        "preset": "smoke", "settings": {"budget_value": budget, "reference_batch_size": 8},
        "grid": {"families": ["transformer"], "batch_sizes": [1, 8], "seeds": list(seeds)}}}}


def test_merge_keeps_identical_duplicates_once_and_ignores_timing():
    a = fake_row({"key": "k1", "kind": "sweep", "family": "transformer", "batch_size": 1, "seed": 0})
    b = {**a, "wall_time_s": 99.0, "fit_time_s": 42.0, "plan_hash": "other"}
    c = fake_row({"key": "k2", "kind": "sweep", "family": "transformer", "batch_size": 8, "seed": 0})
    merged = merge_rows([("m1", [a]), ("m2", [b, c])])
    assert [r["key"] for r in merged.rows] == ["k1", "k2"] and merged.duplicates == 1
    assert merged.origin == {"k1": "m1", "k2": "m2"}


def test_merge_treats_nan_as_equal_to_nan():
    a = fake_row({"key": "k1", "kind": "sweep", "family": "t", "batch_size": 1, "seed": 0}, nll=math.nan)
    assert len(merge_rows([("m1", [a]), ("m2", [json.loads(json.dumps(a))])]).rows) == 1


def test_merge_refuses_conflicting_duplicates_naming_both_sources_and_the_field():
    a = fake_row({"key": "k1", "kind": "sweep", "family": "t", "batch_size": 1, "seed": 0})
    b = {**a, "final": {"nll_oracle_per_token": 5.5}}
    with pytest.raises(RowConflict, match=r"k1 .* in m1 and in m2 \(final/nll_oracle_per_token\)"):
        merge_rows([("m1", [a]), ("m2", [b])])


def test_merge_run_folders_writes_one_run_folder(tmp_path):
    spec = {"kind": "sweep", "family": "transformer", "seed": 0}
    r1, r2, r3 = (fake_row({**spec, "key": k, "batch_size": b}) for k, b in (("k1", 1), ("k2", 8), ("k3", 8)))
    d1 = _folder(tmp_path / "m1", [r1, r2], _settings_plan(seeds=[0]), errors=["k2", "k9"])
    d2 = _folder(tmp_path / "m2", [r2, r3], _settings_plan(seeds=[1]))
    merged = merge_run_folders([d1, d2], tmp_path / "merged")
    rows = ResultsTable(tmp_path / "merged").rows()
    assert [r["key"] for r in rows] == ["k1", "k2", "k3"] and merged.duplicates == 1
    assert (tmp_path / "merged" / "runs" / "k3" / "curves.csv").is_file()
    errors = [json.loads(line)["key"] for line in (tmp_path / "merged" / "errors.jsonl").read_text().splitlines()]
    assert errors == ["k9"]  # k2 failed once on m1 but has a row: not a failure of the merged study
    grid = json.loads((tmp_path / "merged" / "sweep.json").read_text())["experiments"]["batch-size"]["grid"]
    assert grid["seeds"] == [0, 1]


def test_a_merged_folder_can_run_what_is_still_missing(tmp_path, fake_training):
    specs = smoke_specs()
    machines = [tmp_path / "m1", tmp_path / "m2"]
    for i, m in enumerate(machines):
        _, sweep_hash = write_run_plan(m, specs)
        assert run_planned(m, specs[i]["key"], expect_hash=sweep_hash).ok
    merged = tmp_path / "merged"
    merge_run_folders(machines, merged)
    assert read_run_plan(merged)["runs"].keys() == {s["key"] for s in specs}
    assert run_planned(merged, specs[2]["key"], expect_hash=sweep_hash).ok
    assert ResultsTable(merged).keys() == {s["key"] for s in specs[:3]}


def test_merge_run_folders_refuses_other_settings_and_its_own_input(tmp_path):
    r = fake_row({"key": "k1", "kind": "sweep", "family": "transformer", "batch_size": 1, "seed": 0})
    d1 = _folder(tmp_path / "m1", [r], _settings_plan(budget=32))
    d2 = _folder(tmp_path / "m2", [r], _settings_plan(budget=64))
    with pytest.raises(RowConflict, match=r"m1 and .*m2 hold batch-size experiments with other settings \(budget"):
        merge_run_folders([d1, d2], tmp_path / "merged")
    with pytest.raises(ValueError, match="is one of the folders"):
        merge_run_folders([d1, tmp_path / "m1"], d1)


def test_report_of_conflicting_folders_fails_naming_both_paths(tmp_path, capsys):
    spec = {"key": "k1", "kind": "sweep", "family": "transformer", "batch_size": 1, "seed": 0}
    d1 = _folder(tmp_path / "m1", [fake_row(spec, nll=5.0)])
    d2 = _folder(tmp_path / "m2", [fake_row(spec, nll=6.0)])
    assert gvt_main("report", [str(d1), str(d2), "--out", str(tmp_path / "merged")]) == 2
    err = capsys.readouterr().err
    assert str(d1) in err and str(d2) in err and "k1" in err
    assert gvt_main("report", [str(d1), str(d2)]) == 2 and "needs --out" in capsys.readouterr().err


# ---- W&B -----------------------------------------------------------------------------------------------------


def test_the_agent_runs_run_one_of_one_key():
    config = sweep_config(["k1", "k2"], "runs/x", "abc123", "sweep batch-size --preset smoke --group g", "p", "g")
    assert config["method"] == "grid" and config["parameters"] == {"key": {"values": ["k1", "k2"]}}
    assert agent_argv(config["command"], "k2") == [
        "/usr/bin/env", "gvt", "sweep", "run-one", "runs/x", "--plan-hash", "abc123",
        "--make-plan", "sweep batch-size --preset smoke --group g", "--wandb-mode", "online", "--key=k2"]


@pytest.mark.parametrize("name", sorted(COMMITTED))
def test_committed_sweep_configs_equal_what_the_generator_emits_now(name, tmp_path, monkeypatch):
    args = COMMITTED[name].split()
    monkeypatch.chdir(tmp_path)  # no local run folder is consulted, as in write_committed
    assert gvt_main(args[0], [*args[1:], "--emit-wandb-sweep", str(tmp_path / "out.yaml")]) == 0
    assert (ROOT / name).read_text() == (tmp_path / "out.yaml").read_text(), \
        f"{name} drifted from the presets: regenerate it with `python -m experiments.sweep_configs`"


def test_emit_wandb_sweep_leaves_the_run_folder_untouched(tmp_path):
    out = tmp_path / "run"
    assert gvt_main("sweep", ["batch-size", *SMOKE, "--out", str(out), "--emit-wandb-sweep",
                              str(tmp_path / "s.yaml")]) == 0
    config = yaml.safe_load((tmp_path / "s.yaml").read_text())
    assert not out.exists() and config["command"][4] == str(out)
    assert config["parameters"]["key"]["values"] == [s["key"] for s in smoke_specs()]


def test_creating_a_sweep_without_a_reachable_server_fails_clearly(monkeypatch):
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    with pytest.raises(SweepServerError, match="no W&B server reachable at http://127.0.0.1:9"):
        create_sweep({"method": "grid"}, "p")


class FakeRun:
    """What ``log_row`` needs of a live wandb run."""

    def __init__(self):
        self.summary, self.artifacts = {}, []

    def log_artifact(self, artifact):
        self.artifacts.append(artifact)


class FakeArtifact:
    """A logged artifact as the public API returns it: ``download`` copies the logged files."""

    def __init__(self, artifact):
        self.type, self.entries = artifact.type, artifact.manifest.entries

    def download(self, root):
        Path(root).mkdir(parents=True)
        for name, entry in self.entries.items():
            shutil.copyfile(entry.local_path, Path(root) / name)
        return root


class FakeApiRun:
    def __init__(self, run_id, live=None, state="finished"):
        self.id, self.state = run_id, state
        self.summary = dict(live.summary) if live else {}
        self._artifacts = [FakeArtifact(a) for a in live.artifacts] if live else []

    def logged_artifacts(self):
        return self._artifacts


class FakeApi:
    def __init__(self, runs):
        self.runs, self.asked = runs, []

    def sweep(self, path):
        self.asked.append(path)
        return type("Sweep", (), {"runs": self.runs})()


def _logged(row, tmp_path, name) -> FakeRun:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "curves.csv").write_text("update,train/loss\n1,2.0\n")
    write_plan(folder, _settings_plan())
    live = FakeRun()
    log_row(live, row, [folder / "curves.csv", folder / "temperature.csv", folder / "sweep.json"])
    return live


def test_a_rows_wandb_summary_and_artifact_rebuild_the_run_folder(tmp_path):
    spec = {"kind": "sweep", "family": "transformer", "seed": 0}
    rows = [{**fake_row({**spec, "key": "k1", "batch_size": 1}, nll=math.nan), "temperature": [{"t": 1.0}]},
            fake_row({**spec, "key": "k2", "batch_size": 8})]
    live = [_logged(r, tmp_path, f"run{i}") for i, r in enumerate(rows)]
    assert live[1].summary["result/final/nll_oracle_per_token"] == 5.0
    assert [a.type for a in live[1].artifacts] == [ROW_ARTIFACT]
    api = FakeApi([FakeApiRun("a", live[0]), FakeApiRun("b", live[1]), FakeApiRun("c", live[1]),  # a retried run
                   FakeApiRun("d", None, state="crashed")])
    merged = rows_from_wandb("ent/proj", "sw1", tmp_path / "out", api=api)
    assert api.asked == ["ent/proj/sw1"] and merged.skipped == ["d"] and merged.duplicates == 1
    back = ResultsTable(tmp_path / "out").rows()
    assert [json.dumps(r, sort_keys=True) for r in back] == [json.dumps(r, sort_keys=True) for r in rows]
    assert (tmp_path / "out" / "runs" / "k1" / "curves.csv").read_text().startswith("update,train/loss")
    assert json.loads((tmp_path / "out" / "sweep.json").read_text())["experiments"]["batch-size"]


def test_a_run_without_its_artifact_gives_its_summary_scalars(tmp_path):
    row = fake_row({"key": "k1", "kind": "sweep", "family": "transformer", "batch_size": 1, "seed": 0})
    run = FakeApiRun("a", _logged(row, tmp_path, "r"))
    run._artifacts = []
    rows_from_wandb("ent/proj", "sw1", tmp_path / "out", api=FakeApi([run]))
    back = ResultsTable(tmp_path / "out").rows()[0]
    assert back["final"] == row["final"] and back["key"] == "k1" and "paths" in back


def test_conflicting_wandb_runs_of_one_key_are_refused(tmp_path):
    spec = {"key": "k1", "kind": "sweep", "family": "transformer", "batch_size": 1, "seed": 0}
    a, b = _logged(fake_row(spec, 5.0), tmp_path, "a"), _logged(fake_row(spec, 6.0), tmp_path, "b")
    with pytest.raises(RowConflict, match="W&B run ent/proj/ra and in W&B run ent/proj/rb"):
        rows_from_wandb("ent/proj", "sw1", tmp_path / "out", api=FakeApi([FakeApiRun("ra", a), FakeApiRun("rb", b)]))


# ---- end to end: real runs in `gvt` processes ----------------------------------------------------------------


def gvt(*args, cwd=ROOT, timeout=900):
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "experiments.gvt", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def rows_by_key(run_dir: Path) -> dict[str, str]:
    """Each row's numbers (timing and provenance left out) as canonical JSON: NaN equals NaN, as a merge sees it."""
    return {r["key"]: json.dumps(comparable(r), sort_keys=True) for r in ResultsTable(run_dir).rows()}


@pytest.fixture(scope="module")
def local_rows(tmp_path_factory):
    """The local runner (one worker) on the smoke preset's transformer runs."""
    cwd = tmp_path_factory.mktemp("local")
    res = gvt("sweep", "batch-size", *SMOKE, "--out", "runs/smoke", "--no-report", "--workers", "1", cwd=cwd)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = rows_by_key(cwd / "runs" / "smoke")
    assert len(rows) == 4
    return rows


@pytest.mark.slow
def test_simulated_wandb_agents_on_two_machines_merge_to_the_local_runners_rows(tmp_path, local_rows):
    planner = tmp_path / "planner"
    planner.mkdir()
    # --launcher wandb with no server: the plan and the sweep config are written, then a clear error.
    res = gvt("sweep", "batch-size", *SMOKE, "--out", "runs/smoke", "--launcher", "wandb", cwd=planner)
    assert res.returncode == 2 and "no W&B server reachable" in res.stderr and "wandb sweep" in res.stderr
    config = yaml.safe_load((planner / "runs" / "smoke" / "wandb_sweep.yaml").read_text())
    keys = config["parameters"]["key"]["values"]
    assert sorted(keys) == sorted(local_rows)

    def agent(machine: Path, my_keys: list[str], results: list):
        machine.mkdir()
        for key in my_keys:  # a W&B agent starts one process per grid point, in its working directory
            argv = agent_argv(config["command"], key)
            assert argv[:2] == ["/usr/bin/env", "gvt"]
            results.append(gvt(*argv[2:], cwd=machine))

    outcomes = [[], []]
    machines = [tmp_path / "m1", tmp_path / "m2"]
    threads = [threading.Thread(target=agent, args=(m, keys[i::2], outcomes[i])) for i, m in enumerate(machines)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for res in outcomes[0] + outcomes[1]:
        assert res.returncode == 0, res.stderr[-3000:]
    for i, m in enumerate(machines):  # each machine planned for itself and ran only its keys
        assert set(ResultsTable(m / "runs" / "smoke").keys()) == set(keys[i::2])

    merged = tmp_path / "merged"
    res = gvt("report", str(machines[0] / "runs" / "smoke"), str(machines[1] / "runs" / "smoke"),
              "--out", str(merged), "--wandb-mode", "disabled")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "merged 4 runs from 2 folders" in res.stderr and (merged / "report" / "report.md").is_file()
    assert rows_by_key(merged) == local_rows  # every number equal to the local runner's


@pytest.mark.slow
def test_a_killed_run_one_leaves_no_row_and_the_next_run_one_finishes_it(tmp_path, local_rows, capsys):
    run_dir = tmp_path / "runs" / "smoke"
    assert gvt_main("sweep", ["batch-size", *SMOKE, "--out", str(run_dir), "--plan-only"]) == 0
    key = capsys.readouterr().out.split()[0]
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "experiments.gvt", "sweep", "run-one", str(run_dir), "--key", key],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    started = run_dir / "runs" / key / "run.json"  # written when the run starts, long before its row
    deadline = time.time() + 600
    while not started.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)  # no cleanup runs: what a crash, an OOM kill or a preempted node looks like
    proc.wait()
    assert started.exists(), "the run-one must have been killed after its run started"
    assert key not in ResultsTable(run_dir).keys()
    res = gvt("sweep", "run-one", str(run_dir), "--key", key)
    assert res.returncode == 0, res.stderr[-3000:]
    assert rows_by_key(run_dir) == {key: local_rows[key]}


@pytest.mark.slow
def test_two_workers_give_the_rows_of_one_worker(tmp_path, local_rows):
    res = gvt("sweep", "batch-size", *SMOKE, "--out", "runs/smoke", "--no-report", "--workers", "2", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "2 workers, cpu, cpu" in res.stderr
    assert rows_by_key(tmp_path / "runs" / "smoke") == local_rows
