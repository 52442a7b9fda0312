"""C4's plan: the language models' and the classifiers' specs per body, arm, seed and label count, and the
learning-rate pilot's jobs (run by experiments.c4_transfer.transfer)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from experiments.c4_transfer.settings import ALL, LM_ARMS, Size, TransferSettings
from experiments.core.specs import config_hash


def _size_label(size: Size) -> str:
    return ALL if size == ALL else str(size)


def lm_spec(settings: TransferSettings, body: str, seed: int, data_path: Path, init: str = "general") -> dict:
    """A language model's spec; ``init`` "general": pretrained on the general corpus, then adapted (the pretrained
    arm's); "none": adapted on MR's text from its random initialisation (the adapt_only arm's)."""
    spec = {"kind": "lm", "body": body, "seed": seed, "init": init, "data": settings.data,
            "body_args": settings.body_args[body], "pretrain": settings.pretrain if init == "general" else None,
            "adapt": settings.adapt, "optimizer": settings.optimizer}
    prefix = "lm" if init == "general" else "lm-adapt-only"
    spec["key"] = f"{prefix}__{body}__seed{seed}__{config_hash(spec)}"
    spec.update(data_path=str(data_path), threads=settings.threads, eval_batch_size=settings.eval_batch_size,
                accelerator=settings.accelerator)
    return spec


def classifier_spec(settings: TransferSettings, body: str, arm: str, seed: int, size: Size, lm: Optional[dict],
                    lr: float, data_path: Path, kind: str = "classifier") -> dict:
    """One classifier run; ``lm``: the arm's language model spec (None for scratch); ``lr``: the arm's peak rate
    (the pilot's choice); ``kind`` "pilot" for the pilot's runs."""
    ul = settings.ulmfit
    recipe = (dict(lr_factor=float(ul["lr_factor"]), unfreeze_every=int(ul["unfreeze_every"]))
              if arm in ul.get("arms", []) else dict(lr_factor=1.0, unfreeze_every=0))
    spec = {"kind": kind, "body": body, "arm": arm, "seed": seed, "size": _size_label(size), "data": settings.data,
            "body_args": settings.body_args[body], "finetune": settings.finetune, "recipe": recipe, "lr": float(lr),
            "optimizer": settings.optimizer, "lm": lm["key"] if lm is not None else None}
    prefix = "clf" if kind == "classifier" else "pilot"
    spec["key"] = f"{prefix}__{body}__{arm}__n{_size_label(size)}__seed{seed}__{config_hash(spec)}"
    spec.update(data_path=str(data_path), primary_body=settings.primary_body,
                primary_size=settings.primary_size, eval_batch_size=settings.eval_batch_size, threads=settings.threads,
                accelerator=settings.accelerator)
    return spec


def plan_lms(settings: TransferSettings, data_path: Path) -> dict[tuple[str, int, str], dict]:
    """-> the language-model specs by (body, seed, arm), for the verdict seeds and the pilot seed."""
    return {(body, seed, arm): lm_spec(settings, body, seed, data_path, init)
            for seed in settings.lm_seeds for body in settings.bodies
            for arm, init in LM_ARMS.items() if arm in settings.arms}


def plan(settings: TransferSettings, data_path: Path, lr_choices: dict) -> tuple[list[dict], list[list[dict]]]:
    """-> the language-model specs, and the verdict's classifier jobs (lists of specs of one body, arm and seed),
    each arm at its rate ``lr_choices[body][arm]``."""
    lms = plan_lms(settings, data_path)
    jobs = [[classifier_spec(settings, body, arm, seed, size, lms.get((body, seed, arm)), lr_choices[body][arm],
                             data_path) for size in settings.label_sizes]
            for seed in settings.seeds for body in settings.bodies for arm in settings.arms]
    return list(lms.values()), jobs


def pilot_jobs(settings, data_path: Path) -> list[list[dict]]:
    """The pilot's classifier jobs: one per (body, arm, rate), its specs one per pilot size."""
    if settings.pilot is None:
        return []
    seed = int(settings.pilot["seed"])
    lms = plan_lms(settings, data_path)
    return [[classifier_spec(settings, body, arm, seed, size, lms.get((body, seed, arm)), lr, data_path,
                             kind="pilot") for size in settings.pilot["sizes"]]
            for body in settings.bodies for arm in settings.arms for lr in settings.pilot["lrs"]]
