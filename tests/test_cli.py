"""`gvt` end to end: help, --print_config for every YAML, fit then sample, W&B offline with no network."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p for p in (ROOT / "configs" / "experiment").glob("*.yaml"))


def gvt(*args, env=None, timeout=300, cwd=ROOT):
    full_env = {**os.environ, "WANDB_MODE": "disabled", **(env or {})}
    return subprocess.run([sys.executable, "-m", "experiments.gvt", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def test_help_lists_every_subcommand():
    out = gvt("--help")
    assert out.returncode == 0
    for cmd in ("fit", "validate", "test", "predict", "sample", "sweep", "ablate", "temperature", "report"):
        assert f"  {cmd} " in out.stdout


def test_unknown_command_fails_with_help():
    out = gvt("train")
    assert out.returncode == 2 and "unknown command 'train'" in out.stderr


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_print_config_works_for_every_experiment_yaml(config, capsys, monkeypatch):
    from modules.cli import main

    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit) as exc:  # LightningCLI exits after printing
        main(["fit", "--config", str(config), "--print_config"])
    assert exc.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "class_path: modules.models." in printed and "class_path: modules.data." in printed


def test_bad_config_value_names_the_setting(tmp_path):
    out = gvt("fit", "--config", "configs/experiment/transformer_oracle_small.yaml", "--data.init_args.batch_size", "0",
              "--trainer.default_root_dir", str(tmp_path))
    assert out.returncode != 0
    assert "batch_size" in out.stderr


def test_a_first_fit_of_a_small_config_prints_no_warning(tmp_path):
    """A fresh folder, W&B offline and not silenced (its warnings come from there): stderr holds no warning. Before,
    it held LightningCLI's "args parameter ... sys.argv", W&B's "anonymous setting has no effect", the CSV logger's
    "exists and is not empty", Lightning's LitLogger tip and torch's LeafSpec deprecation."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9")  # any network attempt fails
    out = subprocess.run(
        [sys.executable, "-m", "modules.cli", "fit", "--config", "configs/experiment/transformer_oracle_small.yaml",
         "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3", "--trainer.log_every_n_steps", "1",
         "--trainer.default_root_dir", str(tmp_path / "runs"), "--model.init_args.evaluation.num_eval_samples", "8",
         "--tracking.wandb_mode", "offline"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert list(tmp_path.glob("runs/transformer_oracle_small/version_0/wandb/offline-run-*"))
    noise = [line for line in out.stderr.splitlines()
             if "warn" in line.lower() or "Tip:" in line or "deprecated" in line or "not empty" in line]
    assert noise == []


@pytest.fixture(scope="module")
def fitted_run(tmp_path_factory):
    """One tiny `gvt fit` with W&B offline, shared by the tests below."""
    root = tmp_path_factory.mktemp("fit")
    out = gvt(
        "fit", "--config", "configs/experiment/transformer_oracle_small.yaml",
        "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "4", "--trainer.limit_val_batches", "1",
        "--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false",
        "--model.init_args.evaluation.num_eval_samples", "16",
        "--tracking.wandb_mode", "offline",
        # an unroutable proxy: any network attempt would hang or fail loudly
        env={"WANDB_MODE": "", "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9",
             "WANDB_API_KEY": ""},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return root


def test_fit_writes_csv_log_checkpoint_and_offline_wandb_run(fitted_run):
    run_dirs = list(fitted_run.glob("transformer_oracle_small/version_*"))
    assert len(run_dirs) == 1
    run = run_dirs[0]
    assert (run / "metrics.csv").read_text().count("val/nll_oracle_per_token") == 1
    assert list(run.glob("checkpoints/*.ckpt"))
    assert list(run.glob("wandb/offline-run-*/run-*.wandb"))


def test_sample_from_the_fitted_checkpoint(fitted_run, tmp_path):
    ckpt = next(fitted_run.glob("transformer_oracle_small/version_*/checkpoints/*.ckpt"))
    out_file = tmp_path / "samples.txt"
    out = gvt("sample", "--checkpoint", str(ckpt), "--num-samples", "5", "--temperature", "0.8", "--top-k", "20",
              "--out", str(out_file))
    assert out.returncode == 0, out.stderr
    lines = out_file.read_text().splitlines()
    assert len(lines) == 5
    assert all(len(line.split()) == 12 and all(w.startswith("w") for w in line.split()) for line in lines)


def predict_csv(fitted_run, root, *extra):
    ckpt = next(fitted_run.glob("transformer_oracle_small/version_*/checkpoints/last.ckpt"))
    out = gvt("predict", "--config", "configs/experiment/transformer_oracle_small.yaml", "--ckpt_path", str(ckpt),
              "--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false",
              "--trainer.limit_predict_batches", "2", *extra)
    assert out.returncode == 0, out.stderr[-3000:]
    files = list(root.glob("transformer_oracle_small/version_*/predictions/predictions.csv"))
    assert len(files) == 1, out.stderr[-3000:]
    return files[0], out


def test_predict_writes_samples_for_each_condition_as_csv_in_the_run_folder(fitted_run, tmp_path):
    """`gvt predict` crashed with "`Trainer.predict` requires `forward` method to run"."""
    import csv

    path, out = predict_csv(fitted_run, tmp_path, "--prediction.samples_per_condition", "3",
                            "--prediction.temperature", "0.8", "--prediction.top_p", "0.9")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["condition_index", "condition", "sample_index", "sample"]
        rows = list(reader)
    conditions = 2 * 64  # two predict batches of the oracle's eval batch size (64), three samples each
    assert len(rows) == conditions * 3
    assert [(int(r["condition_index"]), int(r["sample_index"])) for r in rows] == \
        [(i, j) for i in range(conditions) for j in range(3)]
    assert all(r["condition"] == "" for r in rows)  # the small oracle is unconditional
    assert all(len(r["sample"].split()) == 12 and all(w.startswith("w") for w in r["sample"].split()) for r in rows)
    assert f"wrote {len(rows)} samples for {conditions} conditions to {path}" in out.stderr
    assert "warn" not in out.stderr.lower()


def test_predict_is_repeatable_with_its_seed(fitted_run, tmp_path):
    a, _ = predict_csv(fitted_run, tmp_path / "a", "--prediction.seed", "3")
    b, _ = predict_csv(fitted_run, tmp_path / "b", "--prediction.seed", "3")
    assert a.read_text() == b.read_text()


def test_predict_settings_are_checked(fitted_run, tmp_path):
    ckpt = next(fitted_run.glob("transformer_oracle_small/version_*/checkpoints/last.ckpt"))
    out = gvt("predict", "--config", "configs/experiment/transformer_oracle_small.yaml", "--ckpt_path", str(ckpt),
              "--trainer.default_root_dir", str(tmp_path), "--prediction.samples_per_condition", "0")
    assert out.returncode != 0 and "samples_per_condition" in out.stderr


def test_sample_is_reproducible_with_a_seed(fitted_run):
    ckpt = next(fitted_run.glob("transformer_oracle_small/version_*/checkpoints/*.ckpt"))
    a = gvt("sample", "--checkpoint", str(ckpt), "--num-samples", "3", "--seed", "7")
    b = gvt("sample", "--checkpoint", str(ckpt), "--num-samples", "3", "--seed", "7")
    assert a.returncode == 0 and a.stdout == b.stdout


def test_sample_refuses_truncated_and_missing_checkpoints(fitted_run, tmp_path):
    ckpt = next(fitted_run.glob("transformer_oracle_small/version_*/checkpoints/*.ckpt"))
    truncated = tmp_path / "t.ckpt"
    truncated.write_bytes(ckpt.read_bytes()[:1000])
    out = gvt("sample", "--checkpoint", str(truncated))
    assert out.returncode == 2 and "unreadable" in out.stderr
    out = gvt("sample", "--checkpoint", str(tmp_path / "nope.ckpt"))
    assert out.returncode == 2 and "does not exist" in out.stderr


PARTS = sorted((ROOT / "configs" / "data").glob("*.yaml")) + sorted((ROOT / "configs" / "model").glob("*.yaml"))


@pytest.mark.parametrize("part", PARTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_print_config_composes_every_partial_yaml(part, capsys, monkeypatch):
    """configs/data and configs/model compose with the trainer and logger parts."""
    from modules.cli import main

    monkeypatch.chdir(ROOT)
    group = "data" if part.parent.name == "data" else "model"
    other = ("--model", "configs/model/transformer_small.yaml") if group == "data" else \
        ("--data", "configs/data/oracle_small.yaml")
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--config", "configs/trainer/cpu.yaml", "--config", "configs/logger/offline.yaml",
              f"--{group}", str(part), *other, "--print_config"])
    assert exc.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "class_path: modules.models." in printed and "wandb_mode: offline" in printed
