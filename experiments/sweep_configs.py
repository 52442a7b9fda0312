"""``python -m experiments.sweep_configs``: regenerate the committed W&B sweep configs (``configs/sweeps/*.yaml``,
one per preset command in ``experiments.core.wandb_sweep.COMMITTED``) with ``gvt sweep ... --emit-wandb-sweep``."""

from __future__ import annotations

import contextlib
import shlex
import tempfile
from pathlib import Path

from experiments.cli import main
from experiments.core.wandb_sweep import COMMITTED


def write_committed(root: str | Path = ".") -> list[Path]:
    """Regenerate ``configs/sweeps/*.yaml`` (``COMMITTED``) under the project root ``root``."""
    written = []
    root = Path(root).resolve()
    with tempfile.TemporaryDirectory() as scratch, contextlib.chdir(scratch):  # no local run folder is consulted
        for name, args in COMMITTED.items():
            command, *rest = shlex.split(args)
            path = root / name
            if main(command, [*rest, "--emit-wandb-sweep", str(path)]) != 0:
                raise RuntimeError(f"could not generate {name}")
            written.append(path)
    return written


if __name__ == "__main__":
    for p in write_committed():
        print(p)
