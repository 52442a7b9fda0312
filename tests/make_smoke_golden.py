"""The smoke presets' numbers, for the layout golden test (tests/test_layout_golden.py).

    PYTHONPATH=. python tests/make_smoke_golden.py      # rewrites tests/data/smoke_golden.json

It runs ``gvt sweep all --preset smoke`` and ``gvt lecture --preset lecture-smoke`` (in a temporary folder, with a
temporary GVT_CACHE_DIR, W&B disabled, one thread) and collects what they computed: every result row of the sweep
and of the lecture's C2, C3 and C4 (by key), both reports' verdicts (minus C1's, which rests on timings) and both
pre-registration hashes. Timings (``*_time_s``) and paths are left out: they vary between runs and machines. C1's
measurements are timings only and are left out as a whole; its pre-registration is in the lecture's hash.

Regenerate only on purpose (a change of numbers that is meant), never to make the test pass after a move.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "data" / "smoke_golden.json"
DROPPED_KEYS = {"paths"}  # run folders' relative paths: not numbers, and not the point


def commands(out: Path) -> list[list[str]]:
    return [["sweep", "all", "--preset", "smoke", "--out", str(out / "sweep"), "--wandb-mode", "disabled"],
            ["lecture", "--preset", "lecture-smoke", "--out", str(out / "lecture")]]


def run_presets(out: Path, cache: Path, timeout: float = 900) -> None:
    """Both smoke presets into ``out`` (side by side: each process has one thread)."""
    env = {**os.environ, "WANDB_MODE": "disabled", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1",
           "GVT_CACHE_DIR": str(cache), "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                                                  os.environ.get("PYTHONPATH")]))}

    def one(args):
        return subprocess.run([sys.executable, "-m", "experiments.gvt", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=timeout)

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(one, commands(out)))
    for args, result in zip(commands(out), results):
        if result.returncode != 0:
            raise RuntimeError(f"gvt {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}")


def clean(value):
    """``value`` without timings and paths (recursively)."""
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items() if k not in DROPPED_KEYS and not k.endswith("_time_s")}
    if isinstance(value, list):
        return [clean(v) for v in value]
    return value


def rows(path: Path) -> dict[str, dict]:
    out = {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        out[row["key"]] = clean(row)
    return out


def collect(out: Path) -> dict:
    sweep = json.loads((out / "sweep" / "report" / "verdicts.json").read_text())
    lecture = json.loads((out / "lecture" / "report" / "verdicts.json").read_text())
    return {
        "rows": {"sweep": rows(out / "sweep" / "results.jsonl"),
                 **{f"lecture/{part}": rows(out / "lecture" / part / "results.jsonl") for part in ("c2", "c3", "c4")}},
        "verdicts": {"sweep": clean(sweep["questions"]),
                     "lecture": clean({k: v for k, v in lecture["questions"].items() if k != "C1"})},
        "preregistration_hashes": {"sweep": sweep["preregistration"]["hash"],
                                   "lecture": lecture["preregistration"]["hash"]},
    }


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        run_presets(Path(tmp) / "out", Path(tmp) / "cache")
        golden = collect(Path(tmp) / "out")
    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    GOLDEN.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN} ({sum(len(r) for r in golden['rows'].values())} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
