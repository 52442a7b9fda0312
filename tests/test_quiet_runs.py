"""A sweep prints only the package's own lines: no Lightning banner, no "weights_only" notice, no third-party
warning, also from worker processes (issue 22 item 2)."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The package's own line formats: the experiment's header and progress bar, a run's summary line, the end line.
OWN = [re.compile(p) for p in (
    r"^batch-size: ",  # header lines and the tqdm bar of the experiment (desc = its name)
    r"^\S+__seed\d+\S*  NLL_oracle \d+\.\d+  NLL_test \d+\.\d+  \d+\.\ds( \[[a-z, ]+\])?$",  # one finished run
    r"^experiments finished in \d+ s$",
)]


def test_a_sweep_with_two_workers_and_a_checkpoint_prints_only_its_own_lines(tmp_path):
    env = {**os.environ, "WANDB_MODE": "disabled", "GVT_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("PYTHONWARNINGS", None)
    cmd = [sys.executable, "-m", "experiments.gvt", "sweep", "batch-size", "--preset", "smoke", "--families",
           "transformer", "mle-continued", "--workers", "2", "--out", str(tmp_path / "run"), "--wandb-mode",
           "disabled", "--no-report"]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line.strip() for line in (done.stdout + "\n" + done.stderr).replace("\r", "\n").splitlines()]
    foreign = [line for line in lines if line and not any(p.search(line) for p in OWN)]
    assert not foreign, "lines that are not the package's own:\n" + "\n".join(foreign[:20])
    assert sum(bool(OWN[1].search(line)) for line in lines) == 8  # every run's summary line is there


def test_gvt_fit_and_its_resume_print_no_banner_and_no_warning(tmp_path):
    """`gvt fit` (progress bar and model summary off, so that only stray lines remain) prints nothing of its own
    when all goes well; its resume prints Lightning's two restore lines and nothing else."""
    env = {**os.environ, "WANDB_MODE": "disabled", "GVT_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("PYTHONWARNINGS", None)
    base = [sys.executable, "-m", "modules.cli", "fit", "--config",
            "configs/experiment/transformer_oracle_small.yaml", "--trainer.default_root_dir", str(tmp_path / "runs"),
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            "--data.init_args.num_train", "64", "--trainer.log_every_n_steps", "1"]
    restore = re.compile(r"^Restor(ing states from the checkpoint path at|ed all states from the checkpoint at) \S+$")
    for extra, allowed in ((["--trainer.max_steps", "2"], []), (["--trainer.max_steps", "3", "--ckpt_path", "last"],
                                                                 [restore])):
        done = subprocess.run(base + extra, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        lines = [line.strip() for line in (done.stdout + "\n" + done.stderr).splitlines() if line.strip()]
        foreign = [line for line in lines if not any(p.search(line) for p in allowed)]
        assert not foreign, f"{extra}: lines that are not the package's own:\n" + "\n".join(foreign[:20])
