"""The conditioning ablation's settings (Q3): its grid, budget and probes; each preset
(``experiments.core.presets``) fills one in."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass
class AblationSettings:
    """The conditioning ablation (Q3)."""

    data: dict  # without condition / condition_strength (the grid sets them)
    models: dict[str, dict]
    families: list[str]
    conditions: list[str]
    strengths: list[float]
    z_dims: list[int]  # GAN families only; the MLE family has no latent input
    seeds: list[int]
    batch_size: int = 16
    budget: str = "samples"
    budget_value: int = 1024
    num_classes: int = 4
    source_len: int = 4
    probes: dict = field(default_factory=lambda: dict(num=300, contrast=16))
    curve_points: int = 50
    trainer: dict = field(default_factory=lambda: dict(accelerator="cpu", devices=1))
    save_checkpoints: bool = False
    threads: Optional[int] = 1
    engine: str = "vectorised"  # as SweepSettings.engine
    # The samples of each seed's and setting's own conditional MLE checkpoint (experiments.q3_conditioning.ablation), from
    # which the families with init_from (mle-continued, gan-gumbel-pt) start; None: those families are left out
    pretrain_budget: Optional[int] = None
