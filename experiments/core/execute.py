"""Runs a list of run specs into a run folder: resumable, one progress bar, optionally several worker processes.

The specs are first added to the folder's plan (``plan.json``), and every run goes through
``experiments.core.launch.run_planned``, the very path of ``gvt sweep run-one``: a run is the same wherever it runs.

Resuming is by key: a spec whose key is already in the results table is skipped, so running the same command
again finishes what a killed invocation left and redoes nothing. A run that raises is logged to
``errors.jsonl`` (not to the table) and retried next time; the others go on.

``workers > 1`` trains that many runs at once in spawned processes. Each worker has its own slot
(``experiments.core.launch.assign_workers``): on a machine with GPUs (and specs that use an accelerator) its own GPU,
round robin, ``workers_per_device`` workers sharing one; and ``cores // workers`` torch threads for specs that
leave ``threads`` open (the CPU presets fix one thread per run: a tiny model at a small batch size is bound by
Python overhead, not arithmetic, and one thread keeps the numbers identical however the runs are spread). Each
worker writes its own rows (the table's lock makes that safe) and dies with its parent, so a killed sweep leaves
no orphan still writing.

Runs that start from another run (``init_from: {"key": K}``, e.g. the pretrained arms) are ordered: every run
that another one starts from goes first, and a dependent run is handed out (to this process or a worker) only
after its producer's row is in the table. If the producer fails, its dependents are not run: each is logged to
``errors.jsonl`` as failed with the producer's key, and both are retried on the next invocation. A producer
whose row is already in the table (a resumed sweep) is not redone.
"""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from experiments.core.launch import (run_planned, run_planned_group, slot_threads, take_slot, worker_slots,
                                     write_run_plan)
from experiments.core.results import ResultsTable
from experiments.core.runner import group_key


@dataclass
class Outcome:
    finished: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    wall_s: float = 0.0


def estimated_cost(spec: dict) -> float:
    """Relative cost of a run, for the progress bar's ETA: per-update overhead dominates at small batches,
    arithmetic at large ones; a GAN update costs about three MLE updates; evaluation adds a constant."""
    adversarial = spec["family"].startswith("gan")
    per_update = (1.0 + spec["batch_size"] / 64) * (3.5 if adversarial else 1.0)
    extra = 40.0 + 60.0 * bool(spec.get("measure", {}).get("temperatures")) + 40.0 * bool(spec.get("measure", {}).get("noise"))
    extra += 60.0 * bool(spec.get("measure", {}).get("probes"))
    return spec["budget"]["updates"] * per_update + extra


def _summary(row: dict) -> str:
    f = row.get("final", {})
    parts = [f"{row['key'].rsplit('__', 1)[0]}"]
    for name, key in (("NLL_oracle", "nll_oracle_per_token"), ("NLL_test", "nll_test_per_token")):
        if key in f:
            parts.append(f"{name} {f[key]:.3f}")
    if "probes" in row:  # the model's own dependence on c first; the oracle's MI on its samples is only a bound
        p = {k: row["probes"].get(k, float("nan")) for k in
             ("mi_self", "mi_oracle", "accuracy", "chance_accuracy", "mi_model")}
        parts.append(f"own MI {p['mi_self']:.3f}/{p['mi_oracle']:.3f} (data's)  condition accuracy "
                     f"{p['accuracy']:.2f} (chance {p['chance_accuracy']:.2f})  oracle bound {p['mi_model']:.3f}")
    flags = [w for w in ("diverged", "collapsed") if row.get(w)]
    parts.append(f"{row['wall_time_s']:.1f}s" + (f" [{', '.join(flags)}]" if flags else ""))
    return "  ".join(parts)


def run_and_record(spec: dict, run_dir: str) -> tuple[str, bool, str]:
    """Train one planned spec and add its row (or record its crash); returns (key, ok, one-line summary or error)."""
    result = run_planned(run_dir, spec["key"], threads=slot_threads())
    return result.key, result.ok, (_summary(result.row) if result.row else result.message)


def run_task(specs: list[dict], run_dir: str) -> list[tuple[str, bool, str]]:
    """Train one task (one spec, or the seeds of one configuration as a vectorised group) and add its rows;
    returns (key, ok, one-line summary or error) per spec."""
    if len(specs) == 1:
        return [run_and_record(specs[0], run_dir)]
    results = run_planned_group(run_dir, [s["key"] for s in specs], threads=slot_threads())
    return [(r.key, r.ok, _summary(r.row) if r.row else r.message) for r in results]


def tasks_of(specs: list[dict], vectorise: bool = True) -> list[list[dict]]:
    """The specs as tasks, in planning order: with ``vectorise``, the seeds of one configuration
    (``experiments.core.runner.group_key``) form one task (a vectorised group), placed where its first seed was;
    otherwise one spec per task."""
    if not vectorise:
        return [[s] for s in specs]  # (the same numbers: a vectorised run's do not depend on its group)
    groups: dict[str, list[dict]] = {}
    for spec in specs:
        # only seeded run specs group, and never with the run they start from
        name = group_key(spec) if "seed" in spec else spec["key"]
        if any(s["key"] == producer_of(spec) for s in groups.get(name, [])):
            name = spec["key"]
        groups.setdefault(name, []).append(spec)
    return list(groups.values())


def producer_of(spec: dict) -> Optional[str]:
    """The key of the run ``spec`` starts from (``init_from``), or None (``experiments.core.runner`` validates it)."""
    init = spec.get("init_from")
    return init.get("key") if isinstance(init, dict) else None


def _init_worker(slots=None) -> None:
    # Die with the parent: a SIGKILLed sweep must not leave workers that keep training and writing rows.
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if slots is not None:
        take_slot(slots)  # its GPU and thread share, before anything touches CUDA
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def run_tasks(tasks, fn: Callable, settle: Callable, workers: int = 1) -> None:
    """Run ``fn(task)`` for every task: in order in this process with ``workers`` <= 1, else in that many spawned
    worker processes (one torch thread each, dying with the parent). ``settle(task, result)`` gets the result, or
    the exception ``fn`` raised, and returns the tasks that may run now (those that waited for this one); tasks
    are submitted in order. ``fn`` must be picklable (a module-level function or a ``functools.partial`` of one)."""
    queue = deque(tasks)

    def outcome(call):
        try:
            return call()
        except Exception as err:  # the caller records it; the other tasks go on
            return err

    if workers <= 1:
        while queue:
            task = queue.popleft()
            queue.extend(settle(task, outcome(lambda: fn(task))))
        return
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker) as pool:
        running = {}
        while queue or running:
            while queue:
                task = queue.popleft()
                running[pool.submit(fn, task)] = task
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in finished:
                task = running.pop(fut)
                queue.extend(settle(task, outcome(fut.result)))


def execute(specs: list[dict], run_dir: str | Path, *, workers: int = 1, desc: str = "sweep",
            echo=print, workers_per_device: int = 1, vectorise: bool = True) -> Outcome:
    """Run ``specs`` into ``run_dir`` (module docstring). ``vectorise``: the seeds of one configuration train as
    one vectorised group (``experiments.core.runner.run_group``), the default; False runs every spec on its own."""
    from tqdm.auto import tqdm

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_run_plan(run_dir, specs)  # a no-op for specs the command already planned
    done = ResultsTable(run_dir).keys()
    outcome = Outcome()
    pending, seen = [], set(done)
    for spec in specs:
        if spec["key"] not in seen:
            seen.add(spec["key"])
            pending.append(spec)
    outcome.skipped = [s["key"] for s in specs if s["key"] in done]
    if outcome.skipped:
        echo(f"{desc}: {len(outcome.skipped)} of {len(specs)} runs already in {run_dir / 'results.jsonl'}; "
             f"running the other {len(pending)}")
    if not pending:
        return outcome
    total = sum(estimated_cost(s) for s in pending)
    start = time.perf_counter()
    bar = tqdm(total=round(total), desc=desc, unit="u", dynamic_ncols=True, file=sys.stderr,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix} [{elapsed}<{remaining}]")
    bar.set_postfix_str(f"runs 0/{len(pending)}")

    def record(spec, ok, message):
        (outcome.finished if ok else outcome.failed).append(spec["key"])
        bar.update(round(estimated_cost(spec)))
        bar.set_postfix_str(f"runs {len(outcome.finished) + len(outcome.failed)}/{len(pending)}"
                            + (f", {len(outcome.failed)} failed" if outcome.failed else ""))
        bar.write(("  " if ok else "  FAILED ") + message, file=sys.stderr)

    # Dependency order (module docstring): a task is ready once the producer of each of its specs has its row;
    # `waiting` maps a pending producer's key to the tasks that wait for it.
    pending_keys = {s["key"] for s in pending}
    tasks: dict[int, list[dict]] = {}
    blocked: dict[int, set[str]] = {}
    waiting: dict[str, list[int]] = {}
    ready: deque[int] = deque()
    orphans = []
    for index, task in enumerate(tasks_of(pending, vectorise)):
        keep = []
        for spec in task:
            producer = producer_of(spec)
            if producer is not None and producer not in done and producer not in pending_keys:
                orphans.append((spec, f"{spec['key']}: not run: it starts from run {producer} (init_from), which "
                                      f"has no row in {run_dir / 'results.jsonl'} and is not among the runs to do"))
            else:
                keep.append(spec)
        if not keep:
            continue
        tasks[index] = keep
        blocked[index] = {p for p in map(producer_of, keep) if p is not None and p not in done}
        for producer in blocked[index]:
            waiting.setdefault(producer, []).append(index)
        if not blocked[index]:
            ready.append(index)
    producers = {p for p in waiting}
    ready = deque(sorted(ready, key=lambda i: not any(s["key"] in producers for s in tasks[i])))  # producers first

    def settle(spec, ok, message):
        record(spec, ok, message)
        for index in waiting.pop(spec["key"], []):
            if not ok:  # the task's runs that start from it cannot run; the rest of the task still can
                dependents = [s for s in tasks[index] if producer_of(s) == spec["key"]]
                tasks[index] = [s for s in tasks[index] if producer_of(s) != spec["key"]]
                for dependent in dependents:
                    why = (f"{dependent['key']}: not run: it starts from run {spec['key']} (init_from), which "
                           f"failed (see {run_dir / 'errors.jsonl'})")
                    ResultsTable(run_dir).add_error(dependent["key"], why)
                    settle(dependent, False, why)
            blocked[index].discard(spec["key"])
            if not blocked[index] and tasks[index]:
                ready.append(index)

    try:
        for spec, why in orphans:
            ResultsTable(run_dir).add_error(spec["key"], why)
            settle(spec, False, why)
        if workers <= 1:
            while ready:
                task = tasks[ready.popleft()]
                for (_, ok, message), spec in zip(run_task(task, str(run_dir)), task):
                    settle(spec, ok, message)
        else:
            import multiprocessing
            from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

            slots = worker_slots(workers, pending, workers_per_device)
            bar.write(f"{desc}: {len(slots)} workers, " + ", ".join(
                f"{'cuda:' + s.device if s.device is not None else 'cpu'}" for s in slots)
                + f"; {slots[0].threads} thread(s) each where a run leaves it open", file=sys.stderr)
            ctx = multiprocessing.get_context("spawn")
            queue = ctx.Queue()
            for slot in slots:
                queue.put(slot)
            with ProcessPoolExecutor(max_workers=len(slots), mp_context=ctx, initializer=_init_worker,
                                     initargs=(queue,)) as pool:
                running = {}
                while ready or running:
                    while ready:  # queued in order; a dependent is only submitted once its producers' rows are in
                        task = tasks[ready.popleft()]
                        running[pool.submit(run_task, task, str(run_dir))] = task
                    finished, _ = wait(running, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        task = running.pop(fut)
                        try:
                            results = fut.result()
                        except Exception as err:  # the worker process itself died
                            results = [(s["key"], False, f"worker died: {err}") for s in task]
                            for spec in task:
                                ResultsTable(run_dir).add_error(spec["key"], results[0][2])
                        for (_, ok, message), spec in zip(results, task):
                            settle(spec, ok, message)
    finally:
        bar.close()
    outcome.wall_s = time.perf_counter() - start
    return outcome
