"""Lightning DDP on CPU (gloo, 2 processes): the same metrics as one process on the same weights and samples."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
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


@pytest.mark.parametrize("config, strategy, extra", [
    ("configs/experiment/transformer_oracle_small.yaml", "ddp", []),
    # the GAN steps two networks separately: each backward leaves the other's parameters unused;
    # no pretraining, so the 2-process training plays the adversarial game
    ("configs/experiment/gan_gumbel_oracle_small.yaml", "ddp_find_unused_parameters_true",
     ["--model.init_args.game.pretrain_epochs", "0"]),
], ids=["transformer", "gan"])
def test_two_process_validation_equals_one_process(tmp_path, config, strategy, extra):
    common = ["--config", config, "--trainer.enable_progress_bar", "false", "--tracking.name", "run",
              "--model.init_args.evaluation.num_eval_samples", "300", "--model.init_args.evaluation.eval_batch_size", "64"]
    gvt("fit", *common, *extra, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "4",
        "--trainer.devices", "2", "--trainer.strategy", strategy,
        "--trainer.limit_val_batches", "0", "--trainer.default_root_dir", str(tmp_path / "fit"))
    (ckpt,) = tmp_path.glob("fit/run/version_0/checkpoints/last.ckpt")  # trained with 2 processes
    gvt("validate", *common, "--ckpt_path", str(ckpt), "--trainer.default_root_dir", str(tmp_path / "one"))
    gvt("validate", *common, "--ckpt_path", str(ckpt), "--trainer.devices", "2", "--trainer.strategy", strategy,
        "--trainer.default_root_dir", str(tmp_path / "two"))
    one, two = last_metrics(tmp_path / "one"), last_metrics(tmp_path / "two")
    assert set(one) == set(two) and "val/nll_oracle_per_token" in one and "val/self_bleu2" in one
    for key in one:  # states reduced across ranks, not averaged per rank: equal up to float summation order
        assert two[key] == pytest.approx(one[key], rel=1e-6, abs=1e-9), key
