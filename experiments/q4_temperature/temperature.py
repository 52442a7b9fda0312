"""Quality against diversity across sampling temperatures (Caccia et al. 2018, "Language GANs Falling Short").

Judging a generator at one temperature mixes up two things: how good its samples are and how much of the data
it covers. Sweeping the softmax temperature T traces a curve for each model, and one family is better than
another only if its curve lies below/left of the other's. At temperature T:

- oracle data: quality = NLL_oracle of samples drawn with logits / T (lower is better); coverage = NLL_test,
  the model's NLL of held-out data under the same tempered distribution it samples from, softmax(logits / T)
  over the ids it can produce (``GeneratorModule.score_batch``; lower is better). At T = 1 these are the run's
  own NLL_oracle and NLL_test.
- real data: quality = BLEU-n of the samples against the test references (higher is better); diversity =
  Self-BLEU-n among the samples (lower is better).

Every point also carries ``model_entropy_per_token``, the model's NLL of its own samples at T.

For a GAN generator with a latent input, NLL_test at every T is the run's estimate of the z-marginal,
-log mean_k p(y | c, z_k) over the model's ``nll_z_samples`` draws, with the same seeded draws as the run's
NLL_test.

Two curves are compared where they can be: quality at matched diversity and diversity at matched quality
(``matched_gap``), each curve interpolated between neighbouring temperatures and reduced to its lower envelope.
The default temperatures (``experiments.core.presets.DEFAULT_TEMPERATURES``, 0.3 to 2.5) are wide so that they overlap.
"""

from __future__ import annotations

import bisect
import csv
import json
import math
from pathlib import Path
from typing import Optional, Sequence

import torch

from experiments.core.presets import DEFAULT_TEMPERATURES  # one grid for the presets and `gvt temperature`
from modules.errors import ConfigError
from modules.files import atomic_write_text
from modules.metrics import SequenceNLL


@torch.no_grad()
def nll_test_at(model, datamodule, temperature: float, split: str = "test", seed: Optional[int] = None,
                max_examples: Optional[int] = None) -> dict:
    """The model's NLL of ``split`` under the distribution it samples from at ``temperature``, per token and per
    sentence: the run's own NLL_test computation (``score_batch``) with softmax(logits / T). Batch i's z draws
    (a GAN with z) are seeded ``seed + i``; ``seed`` None is the model's eval_seed, so that at T = 1 this is
    exactly the run's NLL_test."""
    nll = SequenceNLL()
    sentences = 0
    with model.generator_in_eval_mode():
        loader = datamodule.test_dataloader() if split == "test" else datamodule.val_dataloader()
        for batch_idx, batch in enumerate(loader):
            log_probs, counts = model.score_batch(batch.to(model.device), batch_idx, temperature=temperature,
                                                  seed=seed)
            nll.update(log_probs, counts)
            sentences += len(batch)
            if max_examples is not None and sentences >= max_examples:
                break
    result = nll.compute()
    return {"per_token": float(result["per_token"]), "per_sentence": float(result["per_sentence"])}


def temperature_curve(model, datamodule, temperatures: Sequence[float] = DEFAULT_TEMPERATURES,
                      num_samples: Optional[int] = None, stage: str = "test", seed: Optional[int] = None) -> list[dict]:
    """One point per temperature with every sample metric plus NLL_test at that temperature (``seed``: see
    ``nll_test_at``).

    ``model`` must be attached to a Trainer whose data module is ``datamodule`` (it is after ``trainer.test``).
    """
    with torch.inference_mode():  # the metric states were last reset under trainer.test's inference mode
        return _temperature_curve(model, datamodule, temperatures, num_samples, stage, seed)


def _temperature_curve(model, datamodule, temperatures, num_samples, stage, seed) -> list[dict]:
    points = []
    logged = model.evaluation.num_logged_samples
    model.evaluation.num_logged_samples = 0  # the run's own sample table stays the T = 1 one
    try:
        for t in temperatures:
            if t <= 0:
                raise ConfigError(f"temperatures must be > 0, got {t}")
            metrics = model.sample_metrics(stage, temperature=float(t), num_samples=num_samples)
            point = {"temperature": float(t)}
            point.update({k.split("/", 1)[1]: float(v) for k, v in metrics.items()})
            nll = nll_test_at(model, datamodule, float(t), split=stage, seed=seed)
            point["nll_test_per_token"] = nll["per_token"]
            point["nll_test_per_sentence"] = nll["per_sentence"]
            points.append(point)
    finally:
        model.evaluation.num_logged_samples = logged
    return points


def write_curve(path: Path, points: list[dict]) -> None:
    from modules.files import atomic_write_text
    import io

    columns = []
    for p in points:
        columns += [c for c in p if c not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    writer.writerows(points)
    atomic_write_text(Path(path), buf.getvalue())


def read_curve(path: Path) -> list[dict]:
    with Path(path).open(newline="", encoding="utf-8") as f:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


def quality_diversity_axes(points: list[dict], bleu_n: int = 5) -> tuple[str, str, str]:
    """(x key, y key, kind) of the curve for these points: NLL_test/NLL_oracle on oracle data, else
    Self-BLEU/BLEU. Both axes are arranged so that lower-left is better after ``costs``."""
    if points and "nll_oracle_per_token" in points[0]:
        return "nll_test_per_token", "nll_oracle_per_token", "oracle"
    return f"self_bleu{bleu_n}", f"bleu{bleu_n}", "text"


def costs(points: list[dict], bleu_n: int = 5) -> list[tuple[float, float]]:
    """Each point as (diversity cost, quality cost), both lower-is-better."""
    x, y, kind = quality_diversity_axes(points, bleu_n)
    if kind == "oracle":
        return [(p[x], p[y]) for p in points]
    return [(p[x], -p[y]) for p in points]  # Self-BLEU lower is more diverse; BLEU higher is better


def dominated_fraction(curve: list[tuple[float, float]], points: list[tuple[float, float]]) -> float:
    """Fraction of ``points`` weakly dominated (both costs <=) by some point on ``curve``'s polyline.

    The polyline joins the curve's temperatures in order: interpolating between two neighbouring temperatures
    is what a temperature in between would give, to first order.
    """
    if not points or not curve:
        return math.nan
    segments = list(zip(curve, curve[1:])) or [(curve[0], curve[0])]

    def dominated(p):
        for a, b in segments:
            lo, hi = 0.0, 1.0
            for axis in (0, 1):
                d = b[axis] - a[axis]
                # a + t d <= p  on this axis, for t in [lo, hi]
                if abs(d) < 1e-12:
                    if a[axis] > p[axis] + 1e-12:
                        lo, hi = 1.0, 0.0
                elif d > 0:
                    hi = min(hi, (p[axis] - a[axis]) / d)
                else:
                    lo = max(lo, (p[axis] - a[axis]) / d)
            if lo <= hi + 1e-12:
                return True
        return False

    return sum(dominated(p) for p in points) / len(points)


def lower_envelope(curve: list[tuple[float, float]], per_segment: int = 32) -> tuple[list[float], list[float]]:
    """The best quality cost a curve reaches at each diversity cost: the polyline through the temperatures
    (interpolating between neighbours, as a temperature in between would, to first order), densified, sorted
    by diversity cost, with the running minimum of the quality cost. (xs, best y at diversity cost <= x)."""
    pts = list(curve[:1])
    for a, b in zip(curve, curve[1:]):
        pts += [(a[0] + (b[0] - a[0]) * i / per_segment, a[1] + (b[1] - a[1]) * i / per_segment)
                for i in range(1, per_segment + 1)]
    pts.sort()
    xs, best = [], []
    for x, y in pts:
        xs.append(x)
        best.append(min(y, best[-1]) if best else y)
    return xs, best


def _envelope_at(envelope: tuple[list[float], list[float]], x: float) -> float:
    xs, best = envelope
    return best[max(0, bisect.bisect_right(xs, x) - 1)]


def matched_gap(better: list[tuple[float, float]], worse: list[tuple[float, float]], matched: str = "diversity",
                grid: int = 64) -> Optional[float]:
    """How much lower ``better``'s cost is than ``worse``'s where the other cost is matched, averaged over the
    range both curves span (positive: ``better`` is better there). Points are (diversity cost, quality cost).

    - ``matched="diversity"``: quality at matched diversity: the mean over diversity costs x in the overlap of
      the two curves' x ranges of worse's best quality cost at x minus better's (``lower_envelope``);
    - ``matched="quality"``: diversity at matched quality, the same with the axes swapped.

    None when the ranges do not overlap (the curves were never measured at a common diversity / quality).
    """
    if matched not in ("diversity", "quality"):
        raise ValueError(f"matched must be 'diversity' or 'quality', got {matched!r}")
    if matched == "quality":
        better, worse = [(y, x) for x, y in better], [(y, x) for x, y in worse]
    if not better or not worse:
        return None
    lo = max(min(p[0] for p in better), min(p[0] for p in worse))
    hi = min(max(p[0] for p in better), max(p[0] for p in worse))
    if not hi > lo:
        return None
    env_b, env_w = lower_envelope(better), lower_envelope(worse)
    xs = [lo + (hi - lo) * i / (grid - 1) for i in range(grid)]
    return sum(_envelope_at(env_w, x) - _envelope_at(env_b, x) for x in xs) / grid


def axis_range(curve: list[tuple[float, float]], axis: int) -> tuple[float, float]:
    return min(p[axis] for p in curve), max(p[axis] for p in curve)
