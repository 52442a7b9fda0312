"""Bad input (the project's error type) is one line and exit 2; any other exception is a bug and keeps its traceback
(exit 1), even when it is a ValueError, KeyError or FileNotFoundError."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

import experiments.cli as experiments_cli
import modules.sample_cli as sample_cli
from experiments.gvt import main
from modules.errors import CheckpointError, ConfigError, DataError, GvtError, MissingInputError

ROOT = Path(__file__).resolve().parents[1]
BUGS = [ValueError("internal: a bug"), KeyError("internal"), FileNotFoundError("internal: a bug"),
        TypeError("internal: a bug")]


def plant(monkeypatch, command: str, error: BaseException) -> list[str]:
    """Make ``command`` raise ``error`` from inside its work; returns the argv that runs it."""
    def raise_it(*args, **kwargs):
        raise error

    if command == "sample":
        monkeypatch.setattr(sample_cli, "load_model", raise_it)
        return ["sample", "--checkpoint", "any.ckpt"]
    monkeypatch.setattr(experiments_cli, "make_report", raise_it)
    return ["report", "some/run_dir"]


@pytest.mark.parametrize("command", ["sample", "report"])
@pytest.mark.parametrize("bug", BUGS, ids=lambda e: type(e).__name__)
def test_an_internal_error_keeps_its_traceback(command, bug, monkeypatch):
    argv = plant(monkeypatch, command, bug)
    with pytest.raises(type(bug)) as raised:
        main(argv)
    assert raised.value is bug


@pytest.mark.parametrize("command", ["sample", "report"])
@pytest.mark.parametrize("error", [ConfigError("model.lr must be > 0, got 0"), DataError("data.txt: line 2 is bad"),
                                   CheckpointError("checkpoint x.ckpt is unreadable"),
                                   MissingInputError("run_dir holds no finished runs")], ids=lambda e: type(e).__name__)
def test_bad_input_is_one_line_and_exit_2(command, error, monkeypatch, capsys):
    argv = plant(monkeypatch, command, error)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == f"gvt {command}: error: {error}\n"


@pytest.mark.parametrize("error", [ConfigError, DataError, CheckpointError, MissingInputError])
def test_project_errors_are_still_the_builtin_types_callers_catch(error):
    assert issubclass(error, GvtError)
    assert issubclass(error, FileNotFoundError if error is MissingInputError else ValueError)


def test_a_bug_exits_1_with_its_traceback():
    code = ("import sys, modules.sample_cli as s\n"
            "def bug(*a, **k):\n    raise KeyError('internal')\n"
            "s.load_model = bug\n"
            "from experiments.gvt import main\n"
            "sys.exit(main(['sample', '--checkpoint', 'any.ckpt']))\n")
    env = {k: v for k, v in os.environ.items() if k != "GVT_DEBUG"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1
    assert "Traceback" in out.stderr and "KeyError: 'internal'" in out.stderr
