"""Q3 and Q3z's verdicts (the rule and Holm: experiments.core.verdicts).

- **Q3** primary ``dependence_difference``: own-MI dependence on the condition (``mi_self / mi_oracle``), MLE
  minus GAN, per seed, at the pre-registered setting (SESOI 0.5). **Q3z** primary ``z_insensitivity`` = 1 -
  Hamming(z only) / Hamming(sampling noise only) (SESOI 0.5).
"""

from __future__ import annotations

from typing import Optional

from experiments.core.stats import finite, t_interval
from experiments.core.verdicts import (Cell, Verdict, VerdictSettings, _by, _gate_usable, _not_run, _standard,
                                       _usability, families_of, paired, per_seed, verdict_rows)


# ---- Q3 ------------------------------------------------------------------------------------------------------


def _setting(row) -> tuple:
    return row["condition"], row.get("condition_strength")


def _q3_rows(rows, settings: VerdictSettings) -> list[dict]:
    abl = [r for r in _by(rows, kind="ablation") if r["condition"] != "none" and "probes" in r]
    return [r for r in abl
            if finite(r["probes"].get("mi_oracle")) and r["probes"]["mi_oracle"] > settings.q3_min_oracle_mi]


def primary_setting(abl: list[dict]) -> Optional[tuple]:
    """The pre-registered Q3 setting: label conditioning if the grid has it (else source), at its largest strength
    (where the data depend on the condition most)."""
    settings_ = {_setting(r) for r in abl}
    for cond in ("label", "source"):
        strengths = [s for c, s in settings_ if c == cond]
        if strengths:
            return cond, max(strengths, key=lambda s: s if s is not None else -1)
    return None


def _primary_z(rows: list[dict], family: str, positive: bool = False) -> Optional[int]:
    zs = [r.get("z_dim") or 0 for r in _by(rows, family=family)]
    zs = [z for z in zs if z > 0] if positive else zs
    return max(zs) if zs else None


def q3_condition(rows: list[dict], settings: Optional[VerdictSettings] = None) -> Verdict:
    settings = settings or VerdictSettings()
    rows = verdict_rows(rows)
    claim = ("Without special tricks a GAN's output depends little on its input (here: the condition); a "
             "Transformer's output is clearly tied to its input.")
    margin = settings.sesoi["Q3"]
    rule_text = (f"Dependence = the model's own I(c; y) (its likelihood q(y | c) in the oracle's estimator) / the "
                 f"oracle's I(c; y), per seed. Primary cell: dependence of {settings.mle_family} minus that of "
                 f"{settings.gan_family} (its largest z_dim), paired by seed, at the pre-registered setting (label "
                 f"conditioning if present, else source, at the largest strength; settings whose oracle MI is below "
                 f"{settings.q3_min_oracle_mi} nats are skipped), SESOI {margin}. Both families must be usable there "
                 f"(J's interval below the counted bigram's). Other settings and families are reported beside it.")
    primary = "dependence_difference"
    abl = _q3_rows(rows, settings)
    setting = primary_setting(abl)
    dep = lambda r: r["probes"].get("mi_self_fraction")  # noqa: E731
    if setting is None:
        why = "not run: no conditioning ablation in this run folder (`gvt ablate conditioning --out RUN_DIR`)"
        cells = {primary: _not_run("MLE - GAN dependence", why, margin)}
        return _standard("Q3", claim, rule_text, margin, primary, cells, why, [], settings)
    rs = [r for r in abl if _setting(r) == setting]
    mle_rows = _by(rs, family=settings.mle_family)
    z = _primary_z(rs, settings.gan_family)
    gan_rows = _by(rs, family=settings.gan_family, z_dim=z) if z is not None else []
    label = f"{setting[0]}, strength {setting[1]}"
    missing = [f for f, x in ((settings.mle_family, mle_rows), (settings.gan_family, gan_rows)) if not x]
    if missing:
        gate = f"not run: {', '.join(missing)} at {label}"
        cells = {primary: _not_run("MLE - GAN dependence", gate, margin)}
    else:
        met, gate = _gate_usable((mle_rows, settings.mle_family), (gan_rows, f"{settings.gan_family} z{z}"))
        cells = {primary: Cell(f"dependence {settings.mle_family} - {settings.gan_family} z{z} ({label})",
                               paired(per_seed(mle_rows, dep), per_seed(gan_rows, dep)), margin,
                               met, gate or "both families usable")}
    details = []
    for s in sorted({_setting(r) for r in abl}, key=str):
        srows = [r for r in abl if _setting(r) == s]
        line = []
        for fam in families_of(srows):
            for zz in sorted({r.get("z_dim") or 0 for r in _by(srows, family=fam)}):
                frows = [r for r in _by(srows, family=fam) if (r.get("z_dim") or 0) == zz]
                name = fam + (f" z{zz}" if frows[0].get("adversarial") else "")
                ok, _ = _usability(frows, name)
                cells.setdefault(f"dependence {name} ({s[0]} {s[1]})",
                                 Cell(f"dependence of {name} ({s[0]}, strength {s[1]})",
                                      list(per_seed(frows, dep).values()), None, ok,
                                      "usable" if ok else "not known to be usable"))
                line.append(f"{name} {t_interval(per_seed(frows, dep).values()).fmt()}"
                            + ("" if ok else " (not usable)" if ok is False else " (usability unknown)"))
        details.append(f"- {s[0]}, strength {s[1]}{' (primary)' if s == setting else ''}: dependence "
                       + "; ".join(line))
    return _standard("Q3", claim, rule_text, margin, primary, cells, gate, details, settings)


def q3_latent(rows: list[dict], settings: Optional[VerdictSettings] = None) -> Verdict:
    settings = settings or VerdictSettings()
    rows = verdict_rows(rows)
    claim = "Without special tricks a GAN's output depends little on its latent vector z."
    margin = settings.sesoi["Q3z"]
    rule_text = (f"z-ratio = Hamming distance between paired samples when only z changes / when only the sampling "
                 f"noise changes (same condition, common random numbers), per seed. Primary cell: 1 - z-ratio of "
                 f"{settings.gan_family} at its largest z_dim at Q3's setting, SESOI {margin} (z moves the output at "
                 f"most half as much as sampling noise). The GAN must be usable (J's interval below the bigram's).")
    primary = "z_insensitivity"
    abl = [r for r in _q3_rows(rows, settings) if r.get("adversarial") and (r.get("z_dim") or 0) > 0]
    setting = primary_setting(_q3_rows(rows, settings))
    insensitivity = lambda r: (1.0 - r["probes"]["change_z"] / r["probes"]["change_noise"]  # noqa: E731
                               if finite(r["probes"].get("change_z")) and r["probes"].get("change_noise") else None)
    rs = [r for r in abl if _setting(r) == setting]
    z = _primary_z(rs, settings.gan_family, positive=True)
    gan_rows = _by(rs, family=settings.gan_family, z_dim=z) if z else []
    if not gan_rows:
        gate = f"not run: no {settings.gan_family} run with z_dim > 0 in a conditioning ablation"
        cells = {primary: _not_run("1 - z-ratio", gate, margin)}
    else:
        met, gate = _gate_usable((gan_rows, f"{settings.gan_family} z{z}"))
        cells = {primary: Cell(f"1 - z-ratio, {settings.gan_family} z{z} ({setting[0]}, strength {setting[1]})",
                               list(per_seed(gan_rows, insensitivity).values()), margin, met, gate or "GAN usable")}
    details = []
    for fam, cond, strength, zz in sorted({(r["family"], r["condition"], r.get("condition_strength"), r["z_dim"])
                                           for r in abl}, key=str):
        frows = [r for r in abl if (r["family"], r["condition"], r.get("condition_strength"), r["z_dim"]) ==
                 (fam, cond, strength, zz)]
        iv = t_interval(per_seed(frows, insensitivity).values())
        details.append(f"- {fam}, {cond} (strength {strength}), z_dim {zz}: 1 - z-ratio {iv.fmt()}")
    return _standard("Q3z", claim, rule_text, margin, primary, cells, gate, details, settings)
