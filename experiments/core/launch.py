"""One plan, any launcher: the run plan of a folder (``plan.json``), ``run-one`` of a planned key, worker slots.

A run folder's ``plan.json`` holds every planned run's full spec under its key, so that any launcher (the local
executor, a ``gvt sweep run-one`` started by a W&B agent on another machine, a batch job) runs exactly the same
thing for a key::

    {"plan_hash": "3f1c...",                 # sha256 of the sorted keys of every planned run (12 hex digits)
     "runs": {"<key>": {<spec>}, ...},        # in planning order
     "history": [{"part": H, "plan_hash": H_after, "runs": n, "command": "sweep batch-size --preset ...",
                  "time": "..."}, ...]}      # each planning invocation that added runs

A key ends in its spec's config hash (``experiments.core.specs.run_key``), so a key names one exact computation:
a spec edited by hand no longer matches its key and the plan is refused. The plan hash of a set of runs is
the hash of their keys. Planning again into a folder adds runs (the grid may grow) and never changes a planned
one; every hash the plan has had, and the hash of every set of runs added to it (a *part*: what one
``--plan-only`` or one W&B sweep asked for), stays valid. Every row records the hash it was run under
(``plan_hash``), and a folder whose rows carry a hash its plan never had is refused: the plan was replaced
after runs started.

``run_planned`` is the one way a planned run is executed (``gvt sweep run-one``, the local executor and its
worker processes all call it): it holds a per-key file lock (two processes given the same key in one folder
run it once), skips a key whose row is already in the table, runs the producer of an ``init_from`` spec first
when its row is missing (runs are deterministic, so two machines that each run it get identical rows), records
a crash in ``errors.jsonl`` (the next ``run-one`` of the key retries it) and adds the row atomically.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

from experiments.core.results import ResultsTable, atomic_write_text
from experiments.core.runner import run_group, run_one
from experiments.core.specs import run_key
from modules.errors import ConfigError, GvtError
from modules.files import file_lock

PLAN = "plan.json"
LOCKS = ".locks"


class PlanError(GvtError, ValueError):
    pass


# ---- the plan ------------------------------------------------------------------------------------------------


def plan_hash(keys) -> str:
    """The hash of a set of runs: sha256 of their sorted keys (each key ends in its spec's config hash)."""
    return hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:12]


def accepted_hashes(plan: dict) -> set[str]:
    """Every hash this plan has had, and the hash of every part added to it."""
    out = {plan["plan_hash"]}
    for entry in plan.get("history", []):
        out |= {entry["part"], entry["plan_hash"]}
    return out


@contextlib.contextmanager
def folder_lock(run_dir: str | Path, name: str) -> Iterator[None]:
    """An exclusive ``flock`` on ``RUN_DIR/.locks/<name>.lock``; the OS releases it when its holder dies."""
    with file_lock(Path(run_dir) / LOCKS / f"{re.sub(r'[^A-Za-z0-9_.=-]', '_', name)}.lock"):
        yield


def _check_spec(key: str, spec: dict, where: str) -> None:
    if spec.get("key", key) != key or run_key(spec) != key:
        raise PlanError(f"{where}: the spec planned as {key} no longer matches its key (it would run as "
                        f"{run_key(spec)}): the plan was edited after it was written; plan again with "
                        "`gvt sweep ... --plan-only` into a new --out folder")


def read_run_plan(run_dir: str | Path) -> Optional[dict]:
    """The folder's plan, checked (see the module docstring), or None when the folder has none."""
    path = Path(run_dir) / PLAN
    if not path.exists():
        return None
    plan = json.loads(path.read_text(encoding="utf-8"))
    for key, spec in plan["runs"].items():
        _check_spec(key, spec, str(path))
    if plan_hash(plan["runs"]) != plan["plan_hash"]:
        raise PlanError(f"{path}: runs were added to or removed from the plan by hand (its keys hash to "
                        f"{plan_hash(plan['runs'])}, the plan says {plan['plan_hash']}); plan again with "
                        "`gvt sweep ... --plan-only`")
    return plan


def write_run_plan(run_dir: str | Path, specs: list[dict], command: Optional[str] = None) -> tuple[dict, str]:
    """Add ``specs`` to the folder's plan; returns (the plan, the hash of ``specs``' keys: this part's hash).

    A key already planned keeps its spec's identity (it is in the key); its untracked settings (``tracking``,
    ``threads``) take the latest planning's values, like a resumed sweep's options do. The history records the
    part when it is new and either adds runs or comes from a planning ``command`` (a launcher may name it).
    """
    run_dir = Path(run_dir)
    with folder_lock(run_dir, "plan"):
        plan = read_run_plan(run_dir) or {"plan_hash": plan_hash([]), "runs": {}, "history": []}
        known = accepted_hashes(plan) if plan["history"] else set()
        before = len(plan["runs"])
        keys = []
        for spec in specs:
            _check_spec(spec["key"], spec, "the new plan")
            plan["runs"][spec["key"]] = spec
            keys.append(spec["key"])
        part = plan_hash(keys)
        plan["plan_hash"] = plan_hash(plan["runs"])
        new_part = part not in known or plan["plan_hash"] not in known
        if new_part and (command is not None or len(plan["runs"]) > before):
            plan["history"].append({"part": part, "plan_hash": plan["plan_hash"], "runs": len(set(keys)),
                                    "command": command, "time": time.strftime("%Y-%m-%d %H:%M:%S")})
        atomic_write_text(run_dir / PLAN, json.dumps(plan, indent=1, default=str) + "\n")
    return plan, part


def merge_run_plans(run_dir: str | Path, plans: list[dict]) -> Optional[dict]:
    """The union of several folders' plans as ``run_dir``'s plan, keeping every hash each of them accepted."""
    plans = [p for p in plans if p]
    if not plans:
        return None
    for p in plans:
        plan, _ = write_run_plan(run_dir, list(p["runs"].values()))
    with folder_lock(run_dir, "plan"):
        plan = read_run_plan(run_dir)
        known = accepted_hashes(plan)
        for p in plans:
            for entry in p.get("history", []):
                if entry["part"] not in known or entry["plan_hash"] not in known:
                    plan["history"].append(entry)
                    known |= {entry["part"], entry["plan_hash"]}
        atomic_write_text(Path(run_dir) / PLAN, json.dumps(plan, indent=1, default=str) + "\n")
    return plan


def check_rows(run_dir: str | Path, plan: dict, rows: list[dict]) -> None:
    """Refuse a folder whose rows were run under a plan hash this plan never had."""
    accepted = accepted_hashes(plan)
    foreign = sorted({r["plan_hash"] for r in rows if r.get("plan_hash") and r["plan_hash"] not in accepted})
    if foreign:
        raise PlanError(f"{run_dir} holds rows run under plan {', '.join(foreign)}, which its plan.json (hash "
                        f"{plan['plan_hash']}) never was: the plan was replaced after runs started; give a new "
                        "folder, or restore the plan the rows were made with")


# ---- running one planned key ---------------------------------------------------------------------------------


@dataclass
class RunResult:
    key: str
    ok: bool
    message: str = ""
    row: Optional[dict] = None
    already_done: bool = False


def _checked_plan(run_dir: Path, keys: Sequence[str], expect_hash: Optional[str]) -> dict:
    plan = read_run_plan(run_dir)
    if plan is None:
        raise PlanError(f"{run_dir} has no {PLAN}: make it with `gvt sweep ... --plan-only --out {run_dir}` (or "
                        "copy it from the machine that planned the sweep)")
    if expect_hash and expect_hash not in accepted_hashes(plan):
        raise PlanError(f"{run_dir / PLAN} (hash {plan['plan_hash']}) is not the plan this launcher was made from "
                        f"(hash {expect_hash}): the plan was edited or replaced, or this machine's code plans "
                        "differently; plan again and make a new sweep, or copy the original plan.json here")
    for key in keys:
        if key not in plan["runs"]:
            raise PlanError(f"{key} is not a planned run of {run_dir} ({len(plan['runs'])} runs in {run_dir / PLAN})")
    return plan


def _run_spec(plan: dict, key: str, expect_hash: Optional[str], wandb_mode: Optional[str],
              threads: Optional[int]) -> dict:
    """The planned spec as it runs here: the plan hash it runs under, this worker's threads, the W&B mode."""
    spec = {**plan["runs"][key], "plan_hash": expect_hash or plan["plan_hash"]}
    if threads and not spec.get("threads"):
        spec["threads"] = int(threads)
    if wandb_mode:
        spec["tracking"] = {**spec.get("tracking", {}), "wandb_mode": wandb_mode}
    return spec


def _producer_first(run_dir: Path, plan: dict, table: ResultsTable, key: str, expect_hash, wandb_mode, threads,
                    waiting_for: tuple) -> Optional[RunResult]:
    """Run the producer of ``key``'s ``init_from`` when its row is missing; a failed result for ``key`` when it
    fails, else None."""
    producer = (plan["runs"][key].get("init_from") or {}).get("key")
    if not producer or producer in table.keys():
        return None
    if producer in waiting_for or producer == key:
        raise PlanError(f"{key}: init_from forms a cycle through {producer}")
    first = run_planned(run_dir, producer, expect_hash=expect_hash, wandb_mode=wandb_mode, threads=threads,
                        _waiting_for=(*waiting_for, key))
    if first.ok:
        return None
    message = f"its init_from run {producer} failed: {first.message}"
    table.add_error(key, message)
    return RunResult(key, False, message)


def run_planned(run_dir: str | Path, key: str, *, expect_hash: Optional[str] = None,
                wandb_mode: Optional[str] = None, threads: Optional[int] = None,
                _waiting_for: tuple = ()) -> RunResult:
    """Run the planned spec ``key`` of ``run_dir`` and add its row (see the module docstring).

    ``expect_hash``: the plan hash the launcher was made from (a W&B sweep names it); refused unless the
    folder's plan is, or grew from, that plan. ``wandb_mode`` overrides the plan's tracking mode; ``threads``
    is the torch thread count for a spec that leaves it open (a worker's share of the cores).
    """
    run_dir = Path(run_dir)
    plan = _checked_plan(run_dir, [key], expect_hash)
    table = ResultsTable(run_dir)
    check_rows(run_dir, plan, table.rows())
    failed = _producer_first(run_dir, plan, table, key, expect_hash, wandb_mode, threads, _waiting_for)
    if failed is not None:
        return failed
    with folder_lock(run_dir, key):  # a second process given this key waits here, then finds the row
        if key in table.keys():
            return RunResult(key, True, "already in the results table", already_done=True)
        try:
            row = run_one(_run_spec(plan, key, expect_hash, wandb_mode, threads), run_dir)
        except Exception as err:  # a crash is recorded here and retried by the next run of this key
            table.add_error(key, "".join(traceback.format_exception(err))[-4000:])
            return RunResult(key, False, f"{type(err).__name__}: {err}")
        table.add(row)
    return RunResult(key, True, row=row)


def run_planned_group(run_dir: str | Path, keys: Sequence[str], *, expect_hash: Optional[str] = None,
                      wandb_mode: Optional[str] = None, threads: Optional[int] = None) -> list[RunResult]:
    """The planned runs ``keys`` (one configuration, several seeds: ``experiments.core.runner.group_key``) trained as
    one vectorised group (``experiments.core.runner.run_group``; a configuration that cannot be vectorised runs seed by
    seed there), with everything ``run_planned`` does per key: each key's lock, producer first, rows already there
    skipped, a crash recorded for every key of the group, each row added atomically. -> one result per key."""
    run_dir = Path(run_dir)
    plan = _checked_plan(run_dir, keys, expect_hash)
    table = ResultsTable(run_dir)
    check_rows(run_dir, plan, table.rows())
    results: dict[str, RunResult] = {}
    for key in keys:
        failed = _producer_first(run_dir, plan, table, key, expect_hash, wandb_mode, threads, ())
        if failed is not None:
            results[key] = failed
    todo = [k for k in keys if k not in results]
    with contextlib.ExitStack() as locks:
        for key in sorted(todo):  # one order for every process, so that two groups never wait on each other
            locks.enter_context(folder_lock(run_dir, key))
        done = table.keys()
        for key in todo:
            if key in done:
                results[key] = RunResult(key, True, "already in the results table", already_done=True)
        todo = [k for k in todo if k not in results]
        if todo:
            try:
                rows = run_group([_run_spec(plan, k, expect_hash, wandb_mode, threads) for k in todo], run_dir)
            except Exception as err:  # recorded for every run of the group; the next invocation retries them
                message = "".join(traceback.format_exception(err))[-4000:]
                for key in todo:
                    table.add_error(key, f"(vectorised group of {len(todo)} seeds) {message}")
                    results[key] = RunResult(key, False, f"{type(err).__name__}: {err}")
            else:
                for key, row in zip(todo, rows):
                    table.add(row)
                    results[key] = RunResult(key, True, row=row)
    return [results[k] for k in keys]


# ---- worker slots: one device (or a share of the cores) per worker process ----------------------------------


@dataclass(frozen=True)
class WorkerSlot:
    index: int
    device: Optional[str]  # the CUDA_VISIBLE_DEVICES entry the worker sees as its only GPU; None: CPU only
    threads: int  # torch threads for runs that leave ``threads`` open


def assign_workers(workers: int, devices: Sequence[str], cpu_count: int, workers_per_device: int = 1
                   ) -> list[WorkerSlot]:
    """Worker ``i`` gets GPU ``devices[i % len(devices)]`` (round robin; at most ``workers_per_device`` workers
    per GPU), or no GPU when ``devices`` is empty; each gets ``cpu_count // workers`` threads (at least 1)."""
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    if workers_per_device < 1:
        raise ConfigError(f"--workers-per-device must be >= 1, got {workers_per_device}")
    threads = max(1, int(cpu_count) // workers)
    if not devices:
        return [WorkerSlot(i, None, threads) for i in range(workers)]
    capacity = len(devices) * workers_per_device
    if workers > capacity:
        raise ConfigError(f"--workers {workers} is more than the {len(devices)} visible GPU(s) x --workers-per-device "
                         f"{workers_per_device} = {capacity}; raise --workers-per-device to pack runs on a GPU")
    return [WorkerSlot(i, str(devices[i % len(devices)]), threads) for i in range(workers)]


def uses_accelerator(specs: list[dict]) -> bool:
    return any(str(s.get("trainer", {}).get("accelerator", "cpu")) != "cpu" for s in specs)


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES entries (its own list when it is set)."""
    import torch

    count = torch.cuda.device_count()  # counts without initialising CUDA, so spawned workers can still choose
    listed = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return listed[:count] if listed else [str(i) for i in range(count)]


def worker_slots(workers: int, specs: list[dict], workers_per_device: int = 1) -> list[WorkerSlot]:
    devices = visible_gpus() if uses_accelerator(specs) else []
    return assign_workers(workers, devices, os.cpu_count() or 1, workers_per_device)


_SLOT: Optional[WorkerSlot] = None


def take_slot(slots) -> WorkerSlot:
    """In a new worker process, before anything touches CUDA: take the next slot and see only its GPU."""
    global _SLOT
    _SLOT = slots.get()
    if _SLOT.device is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = _SLOT.device
    os.environ.setdefault("OMP_NUM_THREADS", str(_SLOT.threads))
    return _SLOT


def slot_threads() -> Optional[int]:
    """This worker's thread share, or None outside a worker (torch's default)."""
    return _SLOT.threads if _SLOT is not None else None
