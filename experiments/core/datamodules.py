"""The data module a run or a checkpoint was trained on, rebuilt from its settings.

The class is imported by name from the settings (``importlib``), so this module itself loads neither Lightning nor
the data code.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Optional

import yaml

from modules.errors import MissingInputError


def build_datamodule(data: dict, batch_size: int, seed: int):
    """The data module of a run spec's ``data`` (``class_path`` and ``init_args``, as in a LightningCLI config)."""
    module_name, _, class_name = data["class_path"].rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(**{**data.get("init_args", {}), "batch_size": batch_size, "seed": seed})


def datamodule_for_checkpoint(checkpoint: Path, data_config: Optional[Path] = None):
    """The data module a checkpoint was trained on: from ``data_config`` (a YAML with a ``data:`` section or a
    bare ``class_path``/``init_args``), else from the experiment runner's ``run.json`` or LightningCLI's
    ``config.yaml`` beside the checkpoint."""
    candidates = [data_config] if data_config else []
    for folder in (checkpoint.parent, checkpoint.parent.parent):
        candidates += [folder / "run.json", folder / "config.yaml"]
    for path in candidates:
        if path is None or not Path(path).exists():
            continue
        path = Path(path)
        if path.suffix == ".json":
            spec = json.loads(path.read_text())
            return build_datamodule(spec["data"], spec["batch_size"], spec["seed"])
        config = yaml.safe_load(path.read_text())
        data = config.get("data", config)
        if "class_path" in data:
            init = dict(data.get("init_args", {}))
            return build_datamodule({"class_path": data["class_path"], "init_args": init},
                                    init.pop("batch_size", 64), init.pop("seed", 0))
    raise MissingInputError(
        f"cannot tell which data {checkpoint} was trained on: pass --data-config (the run's config.yaml)"
    )
