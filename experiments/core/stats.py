"""Confidence intervals over seeds, without a SciPy dependency.

An interval is a two-sided Student-t interval at ``level`` (95% unless a verdict's Holm step asks for more),
mean +- t((1 + level) / 2, n - 1) * s / sqrt(n), over seeds (each seed is one independent replicate of a whole
run). With one seed there is no interval: the bounds are NaN. When every seed gave the same value (s = 0) there
is no honest interval either: a t interval would have zero width and claim certainty that three equal numbers do
not give (a fraction that is 1 for three seeds can be 0.8 for the fourth). Such an interval is not ``defined``;
it prints as "1 (n=3, all equal: no interval)" and every rule answers "inconclusive" on it, saying why.

The t distribution's CDF is the regularized incomplete beta function (continued fraction, Numerical Recipes
6.4); quantiles are found by bisection on it. ``t975`` keeps the tabulated 97.5% quantile used before.
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


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(x: float, df: float) -> float:
    """P(T <= x) for Student's t with ``df`` degrees of freedom."""
    if math.isinf(x):
        return 1.0 if x > 0 else 0.0
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + x * x))  # P(T > |x|)
    return 1.0 - tail if x >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t (0 < p < 1), by bisection on ``t_cdf``."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"a quantile needs 0 < p < 1, got {p}")
    if df < 1:
        return math.nan
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    n: int
    std: float
    level: float = 0.95

    @property
    def zero_spread(self) -> bool:
        """Two or more values, all equal: no spread to build an interval from."""
        return self.n >= 2 and self.std == 0.0

    @property
    def defined(self) -> bool:
        return self.n >= 2 and self.std > 0 and math.isfinite(self.low) and math.isfinite(self.high)

    @property
    def se(self) -> float:
        return self.std / math.sqrt(self.n) if self.n >= 2 else math.nan

    def above(self, threshold: float) -> bool:
        """The whole interval lies above ``threshold`` (needs a defined interval)."""
        return self.defined and self.low > threshold

    def below(self, threshold: float) -> bool:
        return self.defined and self.high < threshold

    def fmt(self, digits: int = 3) -> str:
        if self.n == 0 or not math.isfinite(self.mean):
            return "n/a"
        if self.zero_spread:
            return f"{self.mean:.{digits}g} (n={self.n}, all equal: no interval)"
        if not self.defined:
            return f"{self.mean:.{digits}g} (n={self.n})"
        return f"{self.mean:.{digits}g} [{self.low:.{digits}g}, {self.high:.{digits}g}] (n={self.n})"

    def to_json(self) -> dict:
        """``estimate``, ``interval`` ([low, high], or None where there is none), ``n``, ``level``."""
        clean = lambda x: x if math.isfinite(x) else None  # noqa: E731
        return {"estimate": clean(self.mean) if self.n else None,
                "interval": [self.low, self.high] if self.defined else None, "n": self.n, "level": self.level}


def t_interval(values: Iterable[Optional[float]], level: float = 0.95) -> Interval:
    """Mean and t-interval at ``level`` of the finite values (None and NaN/inf are left out and not counted)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"an interval's level must lie in (0, 1), got {level}")
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(xs)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, math.nan, level)
    mean = sum(xs) / n
    if n == 1:
        return Interval(mean, math.nan, math.nan, 1, math.nan, level)
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    if std == 0.0:
        return Interval(mean, math.nan, math.nan, n, 0.0, level)
    quantile = t975(n - 1) if level == 0.95 else t_quantile((1.0 + level) / 2.0, n - 1)
    half = quantile * std / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, std, level)


def t_p_value(values: Iterable[Optional[float]], threshold: float) -> float:
    """Two-sided p-value of the one-sample t test of mean = ``threshold``: the ``1 - level`` at which the
    t interval's bound touches ``threshold`` (NaN without a defined interval)."""
    iv = t_interval(values)
    if not iv.defined:
        return math.nan
    return 2.0 * (1.0 - t_cdf(abs(iv.mean - threshold) / iv.se, iv.n - 1))


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


def seeds_needed(pilot_std: float, sesoi: float, level: float = 0.95, max_seeds: int = 1000) -> int:
    """The fewest seeds n whose expected interval half-width, t((1 + level) / 2, n - 1) * s / sqrt(n) with the
    pilot's standard deviation s, is at most half the smallest effect of interest: then an effect of the SESOI's
    size has an interval that excludes 0, and a null effect one that excludes the SESOI. ``level`` is the
    interval's level after the Holm correction the verdict will use (e.g. 1 - 0.05 / 6 for the strictest step)."""
    if not (pilot_std >= 0 and math.isfinite(pilot_std)):
        raise ValueError(f"the pilot's standard deviation must be finite and >= 0, got {pilot_std}")
    if not sesoi > 0:
        raise ValueError(f"the smallest effect of interest must be > 0, got {sesoi}")
    if pilot_std == 0:
        raise ValueError("the pilot's seeds all gave the same value: a spread of 0 cannot size the seeds "
                         "(run more pilot seeds, or check the measurement varies at all)")
    for n in range(2, max_seeds + 1):
        quantile = t975(n - 1) if level == 0.95 else t_quantile((1.0 + level) / 2.0, n - 1)
        if quantile * pilot_std / math.sqrt(n) <= sesoi / 2.0:
            return n
    raise ValueError(f"more than {max_seeds} seeds needed for a half-width of {sesoi / 2:g} at a pilot standard "
                     f"deviation of {pilot_std:g}: raise the SESOI or reduce the noise")
