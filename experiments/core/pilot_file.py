"""The learning-rate pilot's committed file (configs/pilot/<preset>.json): read, checked and applied to a preset.

The pilot itself (its runs and the choice) is ``experiments.core.pilot``; this half is what every preset reads, so it
depends on nothing else of the experiments.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Optional, Sequence

from modules.errors import ConfigError

DEFAULT_SEEDS = (1000, 1001)  # far from every preset's verdict seeds (0, 1, 2, ...)
PILOT_DIR = Path(__file__).resolve().parents[2] / "configs" / "pilot"  # experiments/core/ -> the project root
FORMAT_VERSION = 1


def pilot_path(preset_name: str) -> Path:
    return PILOT_DIR / f"{preset_name}.json"


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def verdict_seeds(preset) -> list[int]:
    """Every seed the preset's verdict runs use (its sweep's and its ablation's)."""
    seeds = set(preset.sweep.seeds) | set(preset.ablation.seeds if preset.ablation else [])
    return sorted(seeds)


def check_seeds(pilot_seeds: Sequence[int], preset) -> None:
    """Refuse pilot seeds that overlap the preset's verdict seeds (module docstring, point 2)."""
    if not pilot_seeds:
        raise ConfigError("the pilot needs at least one seed (--seeds)")
    if len(set(pilot_seeds)) != len(pilot_seeds):
        raise ConfigError(f"the pilot seeds {list(pilot_seeds)} repeat a seed")
    overlap = sorted(set(pilot_seeds) & set(verdict_seeds(preset)))
    if overlap:
        raise ConfigError(f"pilot seeds {overlap} are among the verdict seeds of preset {preset.name!r} "
                         f"({verdict_seeds(preset)}): the learning rates must be chosen on seeds kept apart from the "
                         f"runs they are judged on; give --seeds outside them (default {list(DEFAULT_SEEDS)})")


# ---- reading the committed choice ------------------------------------------------------------------------------


def read_pilot(path: str | Path) -> dict:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
        raise ConfigError(f"{path}: not a learning-rate pilot file (no 'choices' list)")
    for c in data["choices"]:
        if not {"family", "batch_size", "multiplier"} <= set(c):
            raise ConfigError(f"{path}: a choice lacks family, batch_size or multiplier: {c}")
        if not (isinstance(c["multiplier"], (int, float)) and c["multiplier"] > 0):
            raise ConfigError(f"{path}: the multiplier of {c['family']} at batch size {c['batch_size']} must be > 0, "
                             f"got {c['multiplier']!r}")
    return data


def apply_pilot(preset, path: Optional[str | Path] = None):
    """Set ``preset.sweep.lr_pilot`` from its committed pilot file (default configs/pilot/<name>.json), if any.
    A file for another preset, or one whose seeds overlap the preset's verdict seeds, is refused."""
    path = Path(path) if path is not None else pilot_path(preset.name)
    if not path.is_file():
        return preset
    data = read_pilot(path)
    if data.get("preset") != preset.name:
        raise ConfigError(f"{path} is the pilot of preset {data.get('preset')!r}, not of {preset.name!r}")
    check_seeds(list(data.get("seeds") or []), preset)
    multipliers: dict[str, dict[str, float]] = {}
    for c in data["choices"]:
        multipliers.setdefault(c["family"], {})[str(int(c["batch_size"]))] = float(c["multiplier"])
    preset.sweep.lr_pilot = {"file": path.name, "sha256": file_sha256(path), "multipliers": multipliers,
                             "choices": data["choices"], "seeds": data.get("seeds"),
                             "extension": data.get("extension")}
    return preset
