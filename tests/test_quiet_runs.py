"""A sweep, `gvt fit` and `gvt lecture` print only the package's own lines: no Lightning banner, no "weights_only"
notice, no third-party warning, also from worker processes (issue 22 item 2)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

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


# `gvt lecture`'s own line formats (experiments/lecture.py and the claims' modules): headers, tqdm bars, one line
# per finished run, the verdict table and the report's path.
NUMBER = r"-?\d+(\.\d+)?"
LECTURE_OWN = [re.compile(p) for p in (
    r"^C[1-4]: ",  # a claim's header and progress lines (C3's bar too)
    rf"^C1:   replicate \d+/\d+, \d+ thread\(s\): {NUMBER} s$",
    r"^(bottleneck (pilot|verdict)|transfer (language models and pilot|verdict)): +\d+%\|",  # tqdm bars
    rf"^pilot lr {NUMBER} +\S+ +seed \d+  val token acc {NUMBER}  best at \d+  \({NUMBER}s\)$",
    rf"^(copy|reverse|sort|lookup) +\S+ +seed \d+  token acc( L\d+ {NUMBER})+  stopped at \d+ \([^)]+\)  "
    rf"\({NUMBER}s\)$",
    rf"^oracle L=\d+ +\S+ +seed \d+  excess NLL {NUMBER}  NLL_oracle {NUMBER}  \({NUMBER}s\)$",
    r"^bottleneck: learning rates chosen by the pilot: (\S+ \S+ \(val token accuracy [\d.]+\)(, )?)+$",
    rf"^\S+__bs\d+__seed\d+  NLL_test {NUMBER}  {NUMBER}s$",  # C3's training runs
    r"^transfer: (data prepared in |counted baselines )",
    r"^lm(-adapt-only)?__\S+__seed\d+  MR test NLL/token ",
    rf"^(clf|pilot)__\S+  accuracy {NUMBER} \(majority {NUMBER}\)  \d+ updates  {NUMBER}s$",
    r"^report: (verdicts, figures, heatmaps|\S+report\.md)$",
    r"^Verdicts \(each question's primary cell against its SESOI",
)]
LECTURE_VERDICT = re.compile(r"^C[1-4]   (supported|not supported|inconclusive|not run)  ")
LECTURE_END = re.compile(r"^lecture: report in \S+ \(\d+ s\)$")
LECTURE_OWN += [LECTURE_VERDICT, LECTURE_END]


@pytest.mark.slow
def test_gvt_lecture_prints_only_its_own_lines(tmp_path):
    """The whole `gvt lecture --preset lecture-smoke` (C1's timing processes, C2-C4's worker processes, the real
    corpora of ../shared/data) in a fresh interpreter without PYTHONWARNINGS: every line is one of the package's
    own formats, and the lines a reader needs are all there."""
    env = {**os.environ, "WANDB_MODE": "disabled", "GVT_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("PYTHONWARNINGS", None)
    cmd = [sys.executable, "-m", "experiments.gvt", "lecture", "--preset", "lecture-smoke", "--out",
           str(tmp_path / "run"), "--wandb-mode", "disabled"]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line.strip() for line in (done.stdout + "\n" + done.stderr).replace("\r", "\n").splitlines()]
    lines = [line for line in lines if line]
    foreign = [line for line in lines if not any(p.search(line) for p in LECTURE_OWN)]
    assert not foreign, "lines that are not the package's own:\n" + "\n".join(foreign[:20])
    verdicts = {line.split()[0] for line in lines if LECTURE_VERDICT.search(line)}
    assert verdicts == {"C1", "C2", "C3", "C4"}, verdicts
    assert any(LECTURE_END.search(line) for line in lines)
    assert (tmp_path / "run" / "report" / "report.md").is_file()


@pytest.mark.parametrize("line", [
    "GPU available: False, used: False",
    "TPU available: False, using: 0 TPU cores",
    "`Trainer.fit` stopped: `max_steps=1024` reached.",
    "/x/torch/serialization.py:1: FutureWarning: You are using `torch.load` with `weights_only=False`",
    "C2 warning: something",
])
def test_the_lecture_line_formats_do_not_admit_third_party_lines(line):
    assert not any(p.search(line) for p in LECTURE_OWN)
