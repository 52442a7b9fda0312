"""Measurements taken along a run on one fixed held-out batch with fixed noise: the held-out loss curve and its
roughness (Q2, "noisier"), and the game checkpoints (Q1).

A player's own training loss cannot measure its progress: each value is taken on another batch, with other noise,
and a GAN's generator loss is scored against a discriminator that moves too. So every measurement here is taken on
one fixed batch (the first ``rows`` examples of the validation split, which no run trains or validates on), with
every random draw (z, Gumbel noise, sampled tokens) from a generator seeded with ``HELD_OUT_SEED``, the generator
and discriminator in eval mode (no dropout), under ``torch.no_grad``: two measurements of a run differ only because
its networks changed, and no draw touches the training RNG, so a run trains exactly as it would without them.

Held-out loss (``held_out_loss``):
- MLE families (``transformer``, ``mle-continued``, ``transformer-z``): the batch's NLL per token by the shared
  scoring (``GeneratorModule.score_batch``, the rule of NLL_test), i.e. the held-out cross-entropy.
- GANs: the generator's loss against the discriminator of that moment, ``generator_loss(loss, D(real), D(fake))``,
  with the batch's real rows and fakes drawn for its conditions with the fixed noise in the form G's next update
  would see them: relaxed one-hots at the current Gumbel beta (``gumbel``), sampled ids (``reinforce``; its
  surrogate loss is not a loss against D, so this is the adversarial loss it plays for).

Roughness (row field ``roughness``, curve ``held_out_curve``): the held-out loss at ``points + 1`` evenly spaced
points of the run, the updates nearest j U / points (j = 0..points, U = the run's planned generator updates; fewer
points if U < points), i.e. the same sample counts j S / points at every batch size of an equal-samples budget S
whenever U is a multiple of ``points``. ``roughness`` = the mean over interior points of
|L[j+1] - 2 L[j] + L[j-1]|, the mean absolute second difference: a smooth curve (steady learning) has a small one,
step-to-step noise raises it. It is in the loss's own units (nats per token for MLE, G-loss units for a GAN), so
compare batch sizes within a family, not families with each other. NaN with fewer than 3 points or a non-finite
loss.

Game checkpoints (row field ``game_checkpoints``, Q1): at ``count`` evenly spaced update counts
round(j U / (count - 1)), j = 0..count-1 (the untrained or loaded model first, the final model last), one dict each:
- ``update``: generator updates done; ``held_out_loss``: as above, against the discriminator of that moment;
- ``g_loss_vs_final_d`` (GANs; None for MLE): the very fakes of that checkpoint (same G, noise and beta) and the same
  real rows, scored by the discriminator as it is at the end of training: the mechanism check, in which only the
  opponent differs from ``held_out_loss``;
- ``nll_test``: NLL per token of the first ``num_test`` test sentences (``score_batch``);
- ``nll_oracle``: the oracle's NLL per token of ``num_samples`` samples of the model at temperature 1 (fixed noise,
  the test split's conditions);
- ``model_entropy``: the model's own NLL per token of those same samples (``score_batch`` on them), an estimate of
  its entropy per token;
- ``J`` = (nll_test - H_oracle) + (nll_oracle - model_entropy), the estimated KL(p||q) + KL(q||p) per token, with
  H_oracle the oracle's entropy per token (``OracleDataModule.entropy_per_token``, row field
  ``oracle_entropy_per_token``). Without an oracle (text data) nll_oracle and J are None.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from typing import Any, Optional

import torch

from modules.data.batch import Example, collate
from modules.data.vocab import PAD_ID
from modules.models.gan_estimators import real_for_discriminator
from modules.models.gan_losses import generator_loss

# Every draw of the held-out measurements comes from generators seeded here (the same for every run and family, so
# paired seeds see the same held-out noise).
HELD_OUT_SEED = 4321


def evenly_spaced_updates(total: int, intervals: int) -> list[int]:
    """The distinct update counts nearest j total / intervals, j = 0..intervals (halves round up), sorted."""
    if total < 0 or intervals < 1:
        raise ValueError(f"need total >= 0 updates and intervals >= 1, got {total}, {intervals}")
    return sorted({(2 * j * total + intervals) // (2 * intervals) for j in range(intervals + 1)})


def roughness(values: list[float]) -> float:
    """Mean absolute second difference |v[j+1] - 2 v[j] + v[j-1]| of evenly spaced values; NaN with fewer than
    3 values or a non-finite one."""
    if len(values) < 3 or not all(math.isfinite(v) for v in values):
        return math.nan
    second = [abs(values[j + 1] - 2 * values[j] + values[j - 1]) for j in range(1, len(values) - 1)]
    return sum(second) / len(second)


def is_gan(model) -> bool:
    return getattr(model, "family", None) == "gan"


@contextmanager
def measuring(model):
    """Eval mode (no dropout) and no gradients inside; every submodule's own mode is restored afterwards."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for module, mode in modes:
            module.training = mode


class HeldOutBatch:
    """The fixed held-out batch and the fixed noise of every held-out measurement (module docstring)."""

    def __init__(self, dm, rows: int, seed: int = HELD_OUT_SEED):
        if rows < 1:
            raise ValueError(f"the held-out batch needs rows >= 1, got {rows}")
        examples = dm.examples("val")[:rows]
        self.batch = collate(examples)
        self.seed = seed

    def fakes(self, model) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
        """A GAN's fakes for the batch's conditions, drawn with the fixed noise -> ((B, L, V) relaxed one-hots or
        (B, L) ids, (B, L) pad mask); None for a model without a discriminator. Call inside ``measuring``."""
        if not is_gan(model):
            return None
        gen = torch.Generator(device=model.device).manual_seed(self.seed)
        _, L = model.generation_lengths()
        return model.estimator.fakes(model, self.batch.to(model.device), L, generator=gen)

    def loss(self, model, fakes: Optional[tuple[torch.Tensor, torch.Tensor]] = None) -> float:
        """The held-out loss of ``model`` as it is now (module docstring); a GAN's ``fakes`` are scored by its
        current discriminator. Call inside ``measuring``."""
        batch = self.batch.to(model.device)
        if not is_gan(model):
            log_probs, counts = model.score_batch(batch, 0)  # (B,), (B,)
            return float(-log_probs.sum() / counts.sum())
        if fakes is None:
            raise ValueError("a GAN's held-out loss needs its fakes (HeldOutBatch.fakes)")
        D = model.discriminator
        _, L = model.generation_lengths()
        real, real_pad = real_for_discriminator(batch.tgt, L)  # (B, L)
        fake, fake_pad = fakes
        d_real = D(real, batch.src, batch.src_pad_mask, real_pad)  # (B,)
        d_fake = D(fake, batch.src, batch.src_pad_mask, fake_pad)  # (B,)
        return float(generator_loss(model.game.loss, d_real, d_fake))


def divergence_terms(model, dm, *, num_samples: int, num_test: int, oracle_entropy: Optional[float],
                     seed: int = HELD_OUT_SEED) -> dict:
    """nll_test, nll_oracle, model_entropy and J of ``model`` as it is now (module docstring). Call inside
    ``measuring``."""
    chunk = int(model.evaluation.eval_batch_size)
    test = dm.examples("test")[:num_test]
    log_prob, tokens = 0.0, 0
    for i in range(0, len(test), chunk):
        lp, counts = model.score_batch(collate(test[i:i + chunk]).to(model.device), i // chunk)
        log_prob, tokens = log_prob + float(lp.sum()), tokens + int(counts.sum())
    out: dict[str, Any] = {"nll_test": -log_prob / max(1, tokens)}

    src, mask, _ = dm.conditions("test", num_samples)
    gen = torch.Generator(device=model.device).manual_seed(seed + 1)
    sample = model.sample(src, mask, generator=gen)
    words = model.decode_samples(sample.tokens, sample.lengths)
    own = collate([Example([t for t in s if t != PAD_ID], w) for s, w in zip(src.tolist(), words)])
    lp, counts = model.score_batch(own.to(model.device), 0)
    out["model_entropy"] = float(-lp.sum() / counts.sum())
    out["nll_oracle"] = out["J"] = None
    if hasattr(dm, "oracle_log_prob"):
        oracle_lp = dm.oracle_log_prob(sample.tokens[:, : dm.seq_len], src)  # (N,)
        out["nll_oracle"] = float(-oracle_lp.sum() / (len(oracle_lp) * dm.seq_len))
        if oracle_entropy is not None:
            out["J"] = (out["nll_test"] - oracle_entropy) + (out["nll_oracle"] - out["model_entropy"])
    return out


class RunMeasurements:
    """Takes the held-out curve and the game checkpoints of one run (module docstring) at its planned updates.

    ``held_out``: dict(points, rows) or None; ``checkpoints``: dict(count, rows, num_samples, num_test) or None;
    ``planned_updates``: the run's generator-update budget. Call ``measure(model, update)`` after every update
    (``as_lightning`` does, and at update 0 before training) and ``finish(model)`` after training for the row's
    fields.
    """

    def __init__(self, dm, planned_updates: int, batch_size: int, held_out: Optional[dict] = None,
                 checkpoints: Optional[dict] = None):
        self.dm, self.batch_size = dm, batch_size
        rows = max((held_out or {}).get("rows", 0), (checkpoints or {}).get("rows", 0)) or 64
        self.probe = HeldOutBatch(dm, rows)
        self.curve_at: set[int] = set()
        if held_out:
            self.curve_at = set(evenly_spaced_updates(planned_updates, max(1, min(held_out["points"],
                                                                                   planned_updates))))
        self.checkpoints_at: set[int] = set()
        self.checkpoint_settings = dict(checkpoints or {})
        self.oracle_entropy: Optional[float] = None
        if checkpoints:
            if checkpoints["count"] < 2:
                raise ValueError(f"game checkpoints need count >= 2, got {checkpoints['count']}")
            self.checkpoints_at = set(evenly_spaced_updates(planned_updates, checkpoints["count"] - 1))
            if hasattr(dm, "entropy_per_token"):
                self.oracle_entropy = float(dm.entropy_per_token()[0])
        self.curve: list[dict] = []
        self.checkpoints: list[dict] = []
        self._fakes: list = []
        self._measured: set[int] = set()
        self.seconds = 0.0  # spent measuring (the row's held_out_time_s)

    def wants(self, update: int) -> bool:
        """Whether ``measure`` takes a measurement after generator update ``update``."""
        return update not in self._measured and (update in self.curve_at or update in self.checkpoints_at)

    def measure(self, model, update: int) -> None:
        if not self.wants(update):
            return
        self._measured.add(update)
        start = time.perf_counter()
        try:
            self._measure(model, update)
        finally:
            self.seconds += time.perf_counter() - start

    def _measure(self, model, update: int) -> None:
        if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):  # diverged: nothing to sample from
            nan = math.nan
            if update in self.curve_at:
                self.curve.append({"update": update, "samples": update * self.batch_size, "loss": nan})
            if update in self.checkpoints_at:
                self.checkpoints.append({"update": update, "held_out_loss": nan, "g_loss_vs_final_d": None,
                                         "nll_test": nan, "nll_oracle": nan, "model_entropy": nan, "J": nan})
                self._fakes.append(None)
            return
        with measuring(model):
            fakes = self.probe.fakes(model)
            loss = self.probe.loss(model, fakes)
            if update in self.curve_at:
                self.curve.append({"update": update, "samples": update * self.batch_size, "loss": loss})
            if update in self.checkpoints_at:
                s = self.checkpoint_settings
                terms = divergence_terms(model, self.dm, num_samples=s["num_samples"], num_test=s["num_test"],
                                         oracle_entropy=self.oracle_entropy)
                self.checkpoints.append({"update": update, "held_out_loss": loss, "g_loss_vs_final_d": None,
                                         **terms})
                self._fakes.append(fakes)

    def finish(self, model) -> dict:
        """The row's fields; a GAN's checkpoints are re-scored here against its final discriminator."""
        start = time.perf_counter()
        with measuring(model):
            for point, fakes in zip(self.checkpoints, self._fakes):
                if fakes is not None:
                    point["g_loss_vs_final_d"] = self.probe.loss(model, fakes)
        out: dict[str, Any] = {}
        if self.curve_at:
            out["held_out_curve"] = self.curve
            out["roughness"] = roughness([p["loss"] for p in self.curve])
        if self.checkpoints_at:
            out["game_checkpoints"] = self.checkpoints
            out["oracle_entropy_per_token"] = self.oracle_entropy
        out["held_out_time_s"] = self.seconds + time.perf_counter() - start
        return out

    def as_lightning(self):
        import pytorch_lightning as pl

        from experiments.core.families import generator_updates

        outer = self

        class _Callback(pl.Callback):
            def on_train_start(self, trainer, pl_module):
                outer.measure(pl_module, generator_updates(pl_module, trainer))

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                outer.measure(pl_module, generator_updates(pl_module, trainer))

        return _Callback()
