"""Every `gvt ...` example in the README runs as a command, cheaply: a Lightning command with --print_config (the
whole config is resolved and every setting looked up), any other with --help, whose text must name each flag the
example uses. A renamed flag, a moved setting or a missing config file in an example fails here."""

import re
from pathlib import Path

import pytest

from experiments.gvt import main

ROOT = Path(__file__).resolve().parents[1]
LIGHTNING = ("fit", "validate", "test", "predict")
PLACEHOLDERS = {"FILE": "configs/experiment/transformer_oracle_small.yaml"}  # the README's stand-in for a config


def readme_commands() -> list[str]:
    """The `gvt` lines of the README's code blocks (fenced or indented), continuation lines joined, comments cut."""
    commands, in_fence, pending = [], False, ""
    for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_fence = not in_fence
            continue
        code = line if in_fence else (line[4:] if line.startswith("    ") else None)
        if code is None:
            continue
        code = pending + code.split(" # ")[0].strip() if pending else code.split(" # ")[0].strip()
        if code.endswith("\\"):
            pending = code[:-1] + " "
            continue
        pending = ""
        found = re.search(r"(?:^|&& |\.venv/bin/)(gvt .*)$", code)
        if found:
            commands.append(found.group(1).strip())
    return commands


COMMANDS = readme_commands()


def test_the_readme_has_examples_of_every_kind():
    names = {c.split()[1] for c in COMMANDS if len(c.split()) > 1}
    assert {"fit", "predict", "sample", "sweep", "report", "lecture"} <= names, names


def cheap(command: str) -> list[str]:
    """The example's arguments and the flag that keeps it cheap; a synopsis (`[--preset P]`, `A | B`) keeps its
    command words only (its flags are looked for in the help)."""
    args = [PLACEHOLDERS.get(word, word) for word in command.split()[1:]]
    if "[" in command or " | " in command:
        words = []
        for a in args:  # the command and its subcommand: the words before the first flag or placeholder
            if not re.fullmatch(r"[a-z][a-z-]*", a):
                break
            words.append(a)
        args = words
    return args + (["--print_config"] if args[:1] and args[0] in LIGHTNING else ["--help"])


@pytest.mark.parametrize("command", COMMANDS)
def test_a_readme_command_runs(command, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    args = cheap(command)
    try:
        status = main(args)
    except SystemExit as exc:  # argparse and LightningCLI exit after printing
        status = exc.code or 0
    out = capsys.readouterr()
    assert status == 0, f"{args}: {out.err}"
    if args[-1] == "--help":
        flags = {f.strip("[]").partition("=")[0] for f in command.split() if f.strip("[").startswith("--")}
        missing = sorted(f for f in flags if f not in out.out)
        assert not missing, f"`{command}`: the help of `gvt {' '.join(args[:2])}` has no {missing}"
