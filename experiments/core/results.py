"""The results table of a run folder: one row per finished run, never a torn or doubled row.

Layout of a run folder::

    RUN_DIR/
      sweep.json            what was asked for (the plan); a rerun checks it is compatible
      results.jsonl         the table: one JSON object per line, one line per finished run
      results.csv           the same rows as CSV, for spreadsheets (derived, rewritten with the table)
      errors.jsonl          runs that raised (not results; retried on the next invocation)
      runs/<key>/           per-run files: curves.csv, temperature.csv, Lightning CSV log, W&B offline run
      report/               written by ``gvt report``

Why the whole file is rewritten for every new row: the table is replaced with ``os.replace`` from a fully
written and fsynced temporary file, so a reader (or a crash at any instant) sees either the old table or the new
one, never half a row. Rows number in the hundreds, so the rewrite costs microseconds next to a training run.
Concurrent writers (``--workers N``) serialize on an ``flock`` and re-read the table under it, so a row is
added exactly once: the row key (family, batch size, seed, config hash, ...) is checked under the lock.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
from pathlib import Path
from typing import Iterator, Optional

from modules.files import atomic_write_text, file_lock  # the one atomic writer (report.py imports it from here)

TABLE = "results.jsonl"
CSV_TABLE = "results.csv"
ERRORS = "errors.jsonl"
LOCK = ".results.lock"


def _json_default(value):
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in the results table")


def _clean(value):
    # JSON has no NaN/inf; store them as strings so the file stays standard JSON and round-trips.
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _restore(value):
    if isinstance(value, str) and value in ("nan", "inf", "-inf"):
        return float(value)
    if isinstance(value, dict):
        return {k: _restore(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_restore(v) for v in value]
    return value


class ResultsTable:
    """Rows of finished runs in ``RUN_DIR/results.jsonl``; see the module docstring for the guarantees."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / TABLE

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with file_lock(self.run_dir / LOCK):
            yield

    def rows(self) -> list[dict]:
        if not self.path.exists():
            return []
        rows, seen = [], set()
        for line in self.path.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                row = _restore(json.loads(line))
            except json.JSONDecodeError:
                continue  # cannot happen with atomic replaces; tolerated for hand-edited tables
            if row.get("key") in seen:
                continue
            seen.add(row.get("key"))
            rows.append(row)
        return rows

    def keys(self) -> set[str]:
        return {row["key"] for row in self.rows()}

    def add(self, row: dict) -> bool:
        """Append ``row`` (it must have a ``key``). Returns False, writing nothing, if that key is already in."""
        if "key" not in row:
            raise ValueError("a results row needs a 'key'")
        line = json.dumps(_clean(row), sort_keys=True, default=_json_default)
        with self._locked():
            rows = self.rows()
            if any(r.get("key") == row["key"] for r in rows):
                return False
            old = self.path.read_text(encoding="utf-8") if self.path.exists() else ""
            if old and not old.endswith("\n"):
                old += "\n"
            atomic_write_text(self.path, old + line + "\n")
            atomic_write_text(self.run_dir / CSV_TABLE, rows_to_csv(rows + [row]))
        return True

    def add_error(self, key: str, message: str) -> None:
        with self._locked():
            path = self.run_dir / ERRORS
            old = path.read_text(encoding="utf-8") if path.exists() else ""
            atomic_write_text(path, old + json.dumps({"key": key, "error": message}) + "\n")


def flat_scalars(row: dict, prefix: str = "") -> dict:
    """Nested dicts flattened with ``/``; lists are left out (they live in per-run files)."""
    out = {}
    for k, v in row.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flat_scalars(v, name + "/"))
        elif not isinstance(v, (list, tuple)):
            out[name] = v
    return out


def rows_to_csv(rows: list[dict]) -> str:
    flat = [flat_scalars(r) for r in rows]
    columns: list[str] = []
    for r in flat:
        columns += [c for c in r if c not in columns]
    front = [c for c in ("key", "kind", "family", "batch_size", "seed") if c in columns]
    columns = front + [c for c in columns if c not in front]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for r in flat:
        writer.writerow({k: ("" if v is None else v) for k, v in r.items()})
    return buf.getvalue()


def read_plan(run_dir: str | Path) -> Optional[dict]:
    path = Path(run_dir) / "sweep.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def write_plan(run_dir: str | Path, plan: dict) -> None:
    atomic_write_text(Path(run_dir) / "sweep.json", json.dumps(plan, indent=2, sort_keys=True) + "\n")
