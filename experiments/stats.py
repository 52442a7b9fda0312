"""Confidence intervals over seeds, without a SciPy dependency.

Every interval in the report is a two-sided 95% Student-t interval, mean +- t(0.975, n-1) * s / sqrt(n), over
seeds (each seed is one independent replicate of a whole run). With one seed there is no interval: the bounds
are NaN and every rule that needs an interval answers "inconclusive".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Optional

# t(0.975, df) for df = 1..30; above 30 a second-order expansion around the normal quantile is accurate to 1e-3.
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def t975(df: int) -> float:
    if df < 1:
        return math.nan
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    n: int
    std: float

    @property
    def defined(self) -> bool:
        return self.n >= 2 and math.isfinite(self.low) and math.isfinite(self.high)

    def above(self, threshold: float) -> bool:
        """The whole interval lies above ``threshold`` (needs at least two seeds)."""
        return self.defined and self.low > threshold

    def below(self, threshold: float) -> bool:
        return self.defined and self.high < threshold

    def fmt(self, digits: int = 3) -> str:
        if self.n == 0 or not math.isfinite(self.mean):
            return "n/a"
        if not self.defined:
            return f"{self.mean:.{digits}g} (n={self.n})"
        return f"{self.mean:.{digits}g} [{self.low:.{digits}g}, {self.high:.{digits}g}] (n={self.n})"


def t_interval(values: Iterable[Optional[float]]) -> Interval:
    """Mean and 95% t-interval of the finite values (None and NaN/inf are left out and not counted)."""
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(xs)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, math.nan)
    mean = sum(xs) / n
    if n == 1:
        return Interval(mean, math.nan, math.nan, 1, math.nan)
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = t975(n - 1) * std / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, std)


def finite(x) -> bool:
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def log_t_interval(values: Iterable[Optional[float]]) -> Interval:
    """Geometric mean and 95% interval of positive values (a t-interval on their logarithms, mapped back).

    For quantities that vary over orders of magnitude between seeds, such as a noise scale, where an interval on
    the raw values would reach below zero. Non-positive and non-finite values are left out.
    """
    logs = [math.log(float(v)) for v in values if finite(v) and float(v) > 0]
    iv = t_interval(logs)
    if iv.n == 0:
        return iv
    return Interval(math.exp(iv.mean), math.exp(iv.low) if iv.defined else math.nan,
                    math.exp(iv.high) if iv.defined else math.nan, iv.n, iv.std)
