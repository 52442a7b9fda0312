"""Lightning DDP on CPU (gloo, 2 processes): the same metrics as one process on the same weights and samples."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "configs/experiment/transformer_oracle_small.yaml"
pytestmark = pytest.mark.slow


def gvt(*args):
    env = {**os.environ, "WANDB_MODE": "disabled"}
    out = subprocess.run([sys.executable, "-m", "modules.cli", *args], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def last_metrics(folder: Path) -> dict[str, float]:
    (path,) = folder.glob("run/version_*/metrics.csv")
    rows = [r for r in csv.DictReader(path.open()) if r.get("val/nll_test_per_token")]
    return {k: float(v) for k, v in rows[-1].items() if k.startswith("val/") and v}


def test_two_process_validation_equals_one_process(tmp_path):
    common = ["--config", CONFIG, "--trainer.enable_progress_bar", "false", "--tracking.name", "run",
              "--model.init_args.num_eval_samples", "300", "--model.init_args.eval_batch_size", "64"]
    gvt("fit", *common, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "4",
        "--trainer.limit_val_batches", "0", "--trainer.default_root_dir", str(tmp_path / "fit"))
    (ckpt,) = tmp_path.glob("fit/run/version_0/checkpoints/last.ckpt")
    gvt("validate", *common, "--ckpt_path", str(ckpt), "--trainer.default_root_dir", str(tmp_path / "one"))
    gvt("validate", *common, "--ckpt_path", str(ckpt), "--trainer.devices", "2", "--trainer.strategy", "ddp",
        "--trainer.default_root_dir", str(tmp_path / "two"))
    one, two = last_metrics(tmp_path / "one"), last_metrics(tmp_path / "two")
    assert set(one) == set(two) and "val/nll_oracle_per_token" in one and "val/self_bleu2" in one
    for key in one:  # states reduced across ranks, not averaged per rank: equal up to float summation order
        assert two[key] == pytest.approx(one[key], rel=1e-6, abs=1e-9), key
