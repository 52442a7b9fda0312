"""``gvt temperature --checkpoint PATH | --run-dir RUN_DIR [--temperatures ...]``: quality-diversity curves over sampling
temperatures for one checkpoint or every run of a folder (its options are parsed in experiments/cli.py)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from experiments.core.datamodules import datamodule_for_checkpoint
from experiments.core.presets import DEFAULT_TEMPERATURES
from experiments.core.results import ResultsTable
from experiments.q4_temperature.plots import plot_quality_diversity
from experiments.q4_temperature.temperature import quality_diversity_axes, temperature_curve, write_curve
from modules.errors import MissingInputError


def attach(model, datamodule, root: Path):
    """A minimal Trainer around ``model`` so that its shared evaluation code runs; returns the T = 1 test metrics."""
    import pytorch_lightning as pl  # Lightning loads only when a checkpoint is evaluated (see run_temperature_command)

    trainer = pl.Trainer(accelerator="auto", devices=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, default_root_dir=str(root))
    return trainer.test(model, datamodule=datamodule, verbose=False)[0]


def run_temperature_command(*, checkpoint=None, run_dir=None, data_config=None, temperatures=None,
                            num_samples=None, out=None, families=None, batch_sizes=None) -> int:
    """``gvt temperature``: curves for one checkpoint, or for every checkpointed run of a run folder, with a
    quality-diversity plot per family."""
    # modules.checkpoints loads the model classes, hence pytorch_lightning: only when curves are measured, so that
    # the other experiment commands (and the parents of their worker processes) do not carry it
    from modules.checkpoints import load_model

    temperatures = list(temperatures or DEFAULT_TEMPERATURES)
    jobs = []  # (checkpoint, family label, where the curve goes)
    if checkpoint:
        ckpt = Path(checkpoint)
        folder = Path(out) if out else ckpt.parent
        jobs.append((ckpt, None, folder / f"{ckpt.stem}_temperature.csv"))
    else:
        root = Path(run_dir)
        rows = ResultsTable(root).rows()
        if not rows:
            raise MissingInputError(f"{root} holds no finished runs (no results.jsonl)")
        folder = Path(out) if out else root / "temperature"
        for row in rows:
            if (families and row["family"] not in families) or (batch_sizes and row["batch_size"] not in batch_sizes):
                continue
            ckpt = root / row["paths"]["folder"] / "final.ckpt"
            if ckpt.exists():  # the runs' own files stay as the sweep wrote them
                jobs.append((ckpt, row["family"], folder / f"{row['key']}.csv"))
        if not jobs:
            raise MissingInputError(f"no run in {root} kept a final.ckpt (presets save them; see save_checkpoints)")
    curves: dict[str, list[list[dict]]] = {}
    for ckpt, family, target in jobs:
        model = load_model(str(ckpt))
        dm = datamodule_for_checkpoint(ckpt, Path(data_config) if data_config else None)
        dm.prepare()
        with tempfile.TemporaryDirectory() as tmp:
            attach(model, dm, Path(tmp))
            # NLL_test's z draws are the run's own (eval_seed), so the T = 1 point is the run's NLL_test
            points = temperature_curve(model, dm, temperatures, num_samples=num_samples)
        write_curve(target, points)
        label = family or model.family
        if checkpoint is None:
            label = f"{family} (bs {json.loads((ckpt.parent / 'run.json').read_text())['batch_size']})"
        curves.setdefault(label, []).append(points)
        x, y, _ = quality_diversity_axes(points)
        print(f"{ckpt}: " + "  ".join(f"T={p['temperature']:g}: {x}={p[x]:.3f} {y}={p[y]:.3f}" for p in points))
    folder.mkdir(parents=True, exist_ok=True)
    png = folder / "quality_diversity.png"
    plot_quality_diversity(curves, png)
    print(f"curves: {folder if run_dir else jobs[0][2]}; plot: {png}")
    return 0
