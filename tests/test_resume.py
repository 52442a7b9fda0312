"""Exact resume: a GAN `gvt fit` killed with SIGKILL mid-epoch and resumed with `--ckpt_path last` logs the same
losses and metrics as an uninterrupted run with the same seed (CPU).

What is restored: weights, both optimizers and schedulers, the generator-update counter (and with it the Gumbel
temperature), the REINFORCE baseline (a buffer), the global torch/python RNG states, and the position in the
training data (the epoch's shuffled order is rebuilt from (seed, epoch) and the batches already done are
skipped)."""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def gvt_args(root: Path, estimator: str) -> list[str]:
    return [
        sys.executable, "-m", "modules.cli", "fit", "--config", "configs/experiment/gan_gumbel_oracle_small.yaml",
        "--config", "tests/configs/resume_checkpoints.yaml",
        "--model.init_args.game.estimator", estimator, "--model.init_args.game.pretrain_epochs", "1",
        "--model.init_args.evaluation.num_eval_samples", "32", "--trainer.max_epochs", "4",
        "--trainer.limit_train_batches", "9", "--trainer.limit_val_batches", "2", "--trainer.log_every_n_steps", "1",
        "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(root),
        "--tracking.name", "run", "--tracking.wandb_mode", "disabled",
    ]


def env():
    return {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}


def metrics(root: Path) -> dict[tuple[str, str], str]:
    """(step, metric) -> value over every CSV log of the run folder (a resumed run writes a new version)."""
    out = {}
    for path in sorted(root.glob("run/version_*/metrics.csv")):
        for row in csv.DictReader(path.open()):
            for key, value in row.items():
                if value and key not in ("epoch", "step"):
                    out[(row["step"], key)] = value
    return out


@pytest.mark.parametrize("estimator", ["gumbel", "reinforce"])
def test_killed_and_resumed_run_equals_uninterrupted_run(tmp_path, estimator):
    straight = tmp_path / "straight"
    subprocess.run(gvt_args(straight, estimator), cwd=ROOT, env=env(), check=True, capture_output=True, timeout=600)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(gvt_args(killed, estimator), cwd=ROOT, env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    # Kill as soon as the first adversarial-epoch mid-epoch checkpoint exists (epoch 1, before its end).
    deadline = time.time() + 600
    folder = killed / "run" / "version_0" / "checkpoints"

    def mid_epoch_checkpoint_written() -> bool:
        step_ckpts = list(folder.glob("epoch=1-step=*.ckpt"))
        last = folder / "last.ckpt"
        # last.ckpt is written after the step checkpoint: wait for it, or the kill may land in between
        return bool(step_ckpts) and last.exists() and last.stat().st_mtime >= step_ckpts[0].stat().st_mtime

    while time.time() < deadline and not mid_epoch_checkpoint_written():
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.02)
    time.sleep(0.2)  # let the write of last.ckpt finish; the kill still lands mid-epoch (9 batches per epoch)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    subprocess.run(gvt_args(killed, estimator) + ["--ckpt_path", "last"], cwd=ROOT, env=env(), check=True,
                   capture_output=True, timeout=600)

    # the second CSV log belongs to the resumed run: it must start mid-way, not at step 0
    resumed_csv = killed / "run" / "version_1" / "metrics.csv"
    resumed_steps = [int(row["step"]) for row in csv.DictReader(resumed_csv.open())]
    assert min(resumed_steps) > 0

    want, got = metrics(straight), metrics(killed)
    final_step = max(int(step) for step, _ in want)
    assert final_step == max(int(step) for step, _ in got)
    assert any(k[1] == "train/g_loss" for k in got) and any(k[1] == "val/nll_oracle_per_token" for k in got)
    mismatches = {k: (want.get(k), got[k]) for k in got if want.get(k) != got[k]}
    assert not mismatches, f"{len(mismatches)} values differ, e.g. {list(mismatches.items())[:5]}"
    # Everything from the resumed step on is there; before it, at most the checkpointed step's own log rows
    # (written just after the checkpoint) can be lost to the kill.
    first_resumed = min(resumed_steps)
    missing_steps = {int(step) for step, _ in set(want) - set(got)}
    assert missing_steps <= {first_resumed - 1}, sorted(missing_steps)
