"""One report from many machines: run folders (or W&B runs) merged into one run folder by key.

A key names one exact computation (family, batch size, seed, ..., config hash), and runs are deterministic, so
two rows with the same key from two machines must agree: identical duplicates merge into one row; rows that
differ in any number are refused with both sources named. Timing (``wall_time_s``, ``fit_time_s``, any
``*_time_s``) and provenance (``plan_hash``) differ between machines and are not compared.

The merged folder is an ordinary run folder (``results.jsonl``, ``results.csv``, ``errors.jsonl`` of runs that
failed everywhere, ``sweep.json`` with the experiments' settings and the union of their grids, ``plan.json``
with the union of the folders' plans, and each run's small files under ``runs/<key>/``: curves, temperature
curve, spec; not checkpoints), so ``gvt report`` reads it like any other, and ``gvt sweep run-one`` (or the same
``gvt sweep`` command with ``--out`` the merged folder) runs what is still missing there.
"""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

from experiments.core.launch import merge_run_plans, read_run_plan
from experiments.core.results import (ERRORS, TABLE, CSV_TABLE, ResultsTable, _clean, _json_default, _restore,
                                      atomic_write_text, read_plan, rows_to_csv, write_plan)
from experiments.core.wandb_sweep import ROW_ARTIFACT
from modules.errors import ConfigError, DataError, GvtError, MissingInputError

# provenance: the plan hash, and how many seeds a vectorised run trained with (its numbers are the same either way)
NOT_COMPARED = {"wall_time_s", "fit_time_s", "plan_hash", "vectorised_with"}
RUN_FILES = ("curves.csv", "temperature.csv", "run.json")


class RowConflict(GvtError, ValueError):
    pass


def _canonical(value) -> str:
    return json.dumps(_clean(value), sort_keys=True, default=_json_default)


def comparable(row: dict) -> dict:
    """The part of a row that two machines running the same key must agree on."""
    return {k: v for k, v in row.items() if k not in NOT_COMPARED and not k.endswith("_time_s")}


def _leaves(value, prefix: str = "") -> dict[str, str]:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            out.update(_leaves(v, f"{prefix}{k}/"))
        return out
    return {prefix.rstrip("/"): _canonical(value)}


def differing_fields(a: dict, b: dict) -> list[str]:
    la, lb = _leaves(comparable(a)), _leaves(comparable(b))
    return sorted(k for k in set(la) | set(lb) if la.get(k) != lb.get(k))


@dataclass
class Merged:
    rows: list[dict]
    origin: dict[str, str]  # key -> the source whose row was kept
    duplicates: int = 0  # identical rows met again in a later source
    sources: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # W&B runs not finished


def merge_rows(sources: Iterable[tuple[str, list[dict]]]) -> Merged:
    """Rows of all sources, one per key; identical duplicates merge, differing ones raise ``RowConflict``."""
    merged = Merged(rows=[], origin={})
    by_key: dict[str, dict] = {}
    for where, rows in sources:
        merged.sources.append(where)
        for row in rows:
            key = row["key"]
            if key not in by_key:
                by_key[key] = row
                merged.origin[key] = where
                merged.rows.append(row)
                continue
            if _canonical(comparable(row)) != _canonical(comparable(by_key[key])):
                fields = differing_fields(by_key[key], row)
                raise RowConflict(f"run {key} has different results in {merged.origin[key]} and in {where} "
                                  f"({', '.join(fields[:6])}{', ...' if len(fields) > 6 else ''}): the same key "
                                  "must give the same numbers; find out which machine differs before merging")
            merged.duplicates += 1
    return merged


def _union(a: list, b: list) -> list:
    out = list(a)
    for x in b:
        if x not in out:
            out.append(x)
    return sorted(out, key=str)


def merge_settings(plans: Iterable[tuple[str, Optional[dict]]]) -> Optional[dict]:
    """The experiments' settings (``sweep.json``) of several folders: same settings required, grids united."""
    merged, first = None, {}
    for where, plan in plans:
        if not plan:
            continue
        if merged is None:
            merged = copy.deepcopy(plan)
            first = {name: where for name in plan.get("experiments", {})}
            continue
        for name, exp in plan.get("experiments", {}).items():
            old = merged["experiments"].get(name)
            if old is None:
                merged["experiments"][name] = copy.deepcopy(exp)
                first[name] = where
                continue
            differ = sorted(k for k in set(old["settings"]) | set(exp["settings"])
                            if _canonical(old["settings"].get(k)) != _canonical(exp["settings"].get(k)))
            if differ:
                raise RowConflict(f"{first[name]} and {where} hold {name} experiments with other settings "
                                  f"({', '.join(differ)}); report them separately")
            old["grid"] = {k: _union(old["grid"].get(k, []), exp["grid"].get(k, []))
                           for k in set(old["grid"]) | set(exp["grid"])}
    return merged


def write_merged_folder(out: Path, merged: Merged, files: dict[str, dict[str, Path]], settings: Optional[dict],
                        errors: list[dict]) -> None:
    """Write ``merged`` rows as the run folder ``out`` (its table is replaced whole), with each run's files."""
    out.mkdir(parents=True, exist_ok=True)
    for row in merged.rows:
        folder = out / row.get("paths", {}).get("folder", f"runs/{row['key']}")
        folder.mkdir(parents=True, exist_ok=True)
        for name, path in files.get(row["key"], {}).items():
            shutil.copyfile(path, folder / name)
    if settings:
        write_plan(out, settings)
    done = {r["key"] for r in merged.rows}
    failed = {e["key"]: e for e in errors if e["key"] not in done}
    atomic_write_text(out / ERRORS, "".join(json.dumps(e) + "\n" for e in failed.values()))
    atomic_write_text(out / TABLE, "".join(_canonical(r) + "\n" for r in merged.rows))
    atomic_write_text(out / CSV_TABLE, rows_to_csv(merged.rows))


def merge_run_folders(run_dirs: list[str | Path], out: str | Path) -> Merged:
    """``gvt report DIR1 DIR2 ... --out OUT``: the folders' rows merged by key into the run folder ``out``."""
    out = Path(out)
    dirs = [Path(d) for d in run_dirs]
    for d in dirs:
        if not (d / TABLE).is_file():
            raise MissingInputError(f"{d} holds no finished runs (no {d / TABLE})")
        if d.resolve() == out.resolve():
            raise ConfigError(f"--out {out} is one of the folders being merged; give a new folder")
    sources = [(str(d), ResultsTable(d).rows()) for d in dirs]
    merged = merge_rows(sources)
    settings = merge_settings((str(d), read_plan(d)) for d in dirs)
    files: dict[str, dict[str, Path]] = {}
    errors: list[dict] = []
    for d in dirs:
        for row in ResultsTable(d).rows():
            if merged.origin[row["key"]] == str(d):
                folder = d / row.get("paths", {}).get("folder", f"runs/{row['key']}")
                files[row["key"]] = {n: folder / n for n in RUN_FILES if (folder / n).is_file()}
        if (d / ERRORS).is_file():
            errors += [json.loads(line) for line in (d / ERRORS).read_text(encoding="utf-8").splitlines() if line]
    write_merged_folder(out, merged, files, settings, errors)
    merge_run_plans(out, [read_run_plan(d) for d in dirs])  # so `run-one` / a rerun can finish what is missing
    return merged


def _unflatten(flat: dict) -> dict:
    out: dict = {}
    for name, value in flat.items():
        *parents, leaf = name.split("/")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def _row_from_run(run, download_to: Path) -> tuple[dict, dict[str, Path]]:
    """A W&B run's row and files: from its ``gvt-row`` artifact, else (scalars only) from its summary."""
    artifacts = [a for a in run.logged_artifacts() if a.type == ROW_ARTIFACT]
    if artifacts:
        folder = Path(artifacts[-1].download(root=str(download_to)))
        row = _restore(json.loads((folder / "row.json").read_text(encoding="utf-8")))
        return row, {p.name: p for p in folder.iterdir() if p.is_file() and p.name != "row.json"}
    summary = dict(run.summary.items()) if hasattr(run.summary, "items") else dict(run.summary)
    row = _unflatten({k[len("result/"):]: v for k, v in summary.items() if k.startswith("result/")})
    if "key" not in row:
        raise DataError(f"W&B run {run.id} has neither a {ROW_ARTIFACT} artifact nor a result/ summary")
    return _restore(row), {}


def rows_from_wandb(path: str, sweep_id: str, out: str | Path, api=None):
    """``gvt report --wandb ENTITY/PROJECT --sweep ID``: the sweep's finished runs as the run folder ``out``.

    Rows come from each run's ``gvt-row`` artifact (whole rows, curves, the experiments' settings); a run without
    one gives its summary's scalars. Runs of the same key (a retried run) merge like folders do.
    """
    if api is None:
        import wandb  # heavy, and only this command talks to a W&B server

        api = wandb.Api()
    if path.count("/") != 1:
        raise ConfigError(f"--wandb takes ENTITY/PROJECT, got {path!r}")
    sweep = api.sweep(f"{path}/{sweep_id}")
    sources, files, settings, skipped = [], {}, [], []
    with tempfile.TemporaryDirectory() as tmp:
        for run in sweep.runs:
            if getattr(run, "state", "finished") != "finished":
                skipped.append(run.id)
                continue
            row, run_files = _row_from_run(run, Path(tmp) / run.id)
            where = f"W&B run {path}/{run.id}"
            sources.append((where, [row]))
            files[(where, row["key"])] = run_files
            if "sweep.json" in run_files:
                settings.append((where, json.loads(run_files["sweep.json"].read_text(encoding="utf-8"))))
        if not sources:
            raise MissingInputError(f"sweep {path}/{sweep_id} has no finished runs"
                                    + (f" ({len(skipped)} not finished)" if skipped else ""))
        merged = merge_rows(sources)
        kept = {r["key"]: {n: p for n, p in files[(merged.origin[r["key"]], r["key"])].items() if n != "sweep.json"}
                for r in merged.rows}
        write_merged_folder(Path(out), merged, kept, merge_settings(settings), [])
    merged.skipped = skipped  # runs not finished (crashed, running): not in the folder
    return merged
