"""The ``gvt`` command: the library's commands (modules/cli.py: fit, validate, test, predict, sample) and the
experiment commands (experiments/cli.py: sweep, ablate, temperature, report; experiments/lecture.py: lecture).

It sits above both packages, so the library never imports the experiments. ``python -m experiments.gvt ...`` is the
same command without an installed entry point.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Optional

from modules import cli as library_cli
from modules.known_warnings import known_warnings_filtered

EXPERIMENT_COMMANDS = ("sweep", "ablate", "temperature", "report")

EXPERIMENTS_HELP = """
Experiments (experiments/; a run folder is resumable: rerun the command to finish it):
  sweep        gvt sweep batch-size|all [--preset quick|smoke|paper|coco] [--families ...] [--batch-sizes ...]
               [--seeds ...] [--budget samples|steps] [--budget-value N] [--lr-scaling none|linear|sqrt]
               [--out RUN_DIR]        (`all`: the batch-size sweep, the conditioning ablation and the report)
               [--workers N] [--workers-per-device K]  [--plan-only | --launcher wandb | --emit-wandb-sweep FILE]
               gvt sweep run-one RUN_DIR --key KEY      exactly one planned run (what W&B agents run)
  ablate       gvt ablate conditioning [--preset ...] [--conditions none,label,source] [--strengths ...]
               [--z-dims ...] [--out RUN_DIR]
               gvt ablate bottleneck [--preset lecture|smoke] [--datasets ...] [--seeds ...] [--out RUN_DIR]
               C2: rnn, rnn-attention, transformer against source length, with the verdict
               gvt ablate transfer [--preset lecture|smoke] [--bodies lstm,transformer] [--out RUN_DIR]
               C4: ULMFiT (pretrain, adapt, classify MR) against training from scratch, with the verdict
  temperature  gvt temperature --checkpoint PATH | --run-dir RUN_DIR [--temperatures ...]
               quality-diversity curves over sampling temperatures
  report       gvt report RUN_DIR                       plots (PNG) and a Markdown verdict table
               gvt report DIR1 DIR2 ... --out MERGED    run folders of several machines, merged by key
               gvt report --wandb ENTITY/PROJECT --sweep ID     the rows rebuilt from a W&B sweep
  lecture      gvt lecture [--preset lecture|lecture-smoke] [--out DIR] [--seeds ...] [--workers N]
               [--only c1,c2,c3,c4]     the lecture's claims C1-C4 (timing, bottleneck, attention, transfer)
               into one folder, then DIR/report/report.md and verdicts.json
"""
HELP = library_cli.HELP_HEAD + EXPERIMENTS_HELP + library_cli.HELP_TAIL


def _experiment_command(command: str, argv: list[str]) -> int:
    # The experiment modules load torch (seconds): only for an experiment command, not for `gvt --help` or the
    # library's commands, which load what they need themselves.
    from experiments import cli as experiments_cli

    os.environ.setdefault("WANDB_SILENT", "true")
    with known_warnings_filtered():  # a few third-party messages that do not apply, by exact text
        return experiments_cli.main(command, argv)


def _lecture_command(argv: list[str]) -> int:
    from experiments import lecture

    os.environ.setdefault("WANDB_SILENT", "true")
    with known_warnings_filtered():
        return lecture.main(argv)


def main(argv: Optional[list[str]] = None) -> int:
    experiment_commands = {name: functools.partial(_experiment_command, name) for name in EXPERIMENT_COMMANDS}
    experiment_commands["lecture"] = _lecture_command
    return library_cli.main(argv, extra_commands=experiment_commands, help_text=HELP)


if __name__ == "__main__":
    sys.exit(main())
