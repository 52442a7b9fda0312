"""W&B runs offline with no network, and a W&B that cannot start never takes a run down."""

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from modules.tracking import Tracking, resolve_wandb_mode

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_wandb_env(monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", "/nonexistent-netrc")
    monkeypatch.setenv("HOME", "/nonexistent-home")


def test_auto_mode_is_offline_without_credentials(no_wandb_env):
    assert resolve_wandb_mode("auto") == "offline"


def test_auto_mode_is_online_with_an_api_key(no_wandb_env, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_wandb_mode("auto") == "online"


def test_environment_variable_wins(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_wandb_mode("online") == "disabled"


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="wandb_mode"):
        Tracking(wandb_mode="sometimes")


def test_disabled_gives_the_csv_logger_only(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    loggers = Tracking(wandb_mode="disabled").loggers(str(tmp_path), family="transformer")
    assert [type(lg).__name__ for lg in loggers] == ["CSVLogger"]


def test_offline_run_directory_is_created_without_network(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # any network attempt would fail
    loggers = Tracking(name="t", group="g", tags=["bs=1"], wandb_mode="offline").loggers(str(tmp_path), family="gan")
    assert [type(lg).__name__ for lg in loggers] == ["CSVLogger", "WandbLogger"]
    run = loggers[1].experiment
    assert run.group == "g" and run.job_type == "gan" and "bs=1" in run.tags
    loggers[1].log_metrics({"train/loss": 1.0}, step=0)
    run.finish()
    assert list(tmp_path.glob("t/version_0/wandb/offline-run-*/run-*.wandb"))


def test_online_mode_without_network_falls_back_to_csv_with_one_warning(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    with caplog.at_level(logging.WARNING, logger="modules.tracking"):
        loggers = Tracking(name="t", wandb_mode="online", init_timeout=5).loggers(str(tmp_path), family="gan")
    assert [type(lg).__name__ for lg in loggers] == ["CSVLogger"]
    warnings = [r for r in caplog.records if "W&B could not start" in r.getMessage()]
    assert len(warnings) == 1
    loggers[0].log_metrics({"train/loss": 1.0}, step=0)
    loggers[0].save()
    assert (tmp_path / "t" / "version_0" / "metrics.csv").exists()


@pytest.mark.filterwarnings("ignore:Experiment logs directory .* exists and is not empty")  # planted on purpose
def test_broken_wandb_directory_falls_back_to_csv(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    run_dir = tmp_path / "t" / "run0"
    run_dir.mkdir(parents=True)
    (run_dir / "wandb").write_text("not a directory")
    with caplog.at_level(logging.WARNING, logger="modules.tracking"):
        loggers = Tracking(name="t", version="run0", wandb_mode="offline", init_timeout=5).loggers(
            str(tmp_path), family="gan")
    assert [type(lg).__name__ for lg in loggers] == ["CSVLogger"]
    assert any("W&B could not start" in r.getMessage() for r in caplog.records)


def test_offline_runs_leave_the_process_environment_alone(tmp_path, monkeypatch):
    """WandbLogger used to set WANDB_MODE=dryrun for the whole process, so every later run was offline."""
    monkeypatch.delenv("WANDB_MODE", raising=False)
    loggers = Tracking(name="t", wandb_mode="offline").loggers(str(tmp_path), family="gan")
    loggers[1].experiment.finish()
    assert "WANDB_MODE" not in os.environ


def test_the_csv_log_does_not_take_its_fresh_folder_for_an_old_run(tmp_path, monkeypatch):
    """W&B writes into the run folder; the CSV logger used to start afterwards and warn that the folder "exists and
    is not empty. Previous log files ... will be deleted"."""
    monkeypatch.delenv("WANDB_MODE", raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loggers = Tracking(name="t", wandb_mode="offline").loggers(str(tmp_path), family="gan")
        for logger in loggers:
            logger.log_metrics({"train/loss": 1.0}, step=0)
            logger.save()
        loggers[1].experiment.finish()
    assert [str(w.message) for w in caught] == []
    assert (tmp_path / "t" / "version_0" / "metrics.csv").is_file()


def test_two_offline_runs_in_one_process_print_no_warning(tmp_path):
    """As a sweep does: W&B's "The anonymous setting has no effect" came once per process (per run in workers)."""
    code = (
        "import sys\n"
        "from modules.tracking import Tracking\n"
        "for name in ('a', 'b'):\n"
        "    loggers = Tracking(name=name, wandb_mode='offline').loggers(sys.argv[1], family='gan')\n"
        "    loggers[1].log_metrics({'train/loss': 1.0}, step=0)\n"
        "    loggers[1].experiment.finish()\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env["HTTPS_PROXY"] = "http://127.0.0.1:9"  # any network attempt would fail
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(list(tmp_path.glob("*/version_0/wandb/offline-run-*"))) == 2
    assert [line for line in proc.stderr.splitlines() if "warn" in line.lower()] == []
