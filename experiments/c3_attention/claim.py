"""C3 of ``gvt lecture``: attention shows alignments; an RNN gives none. Settings, runs, scores, rule, verdict,
report section and figure (``experiments.lecture`` calls them; ``experiments.c3_attention.attention`` measures).

``rnn-attention`` (additive attention) and ``transformer`` are trained on copy, reverse and sort
(``modules.data.TaskDataModule``, distinct words per source so every alignment is unique) for every seed through
the experiment runner; each trained model is scored on the test split (``score_task_run``, cached beside the run
as ``c3_scores.json``):

- greedy token accuracy and exact match (the gate: the family solved the task);
- alignment accuracy, the share of output words whose argmax cross-attention falls on the true source position,
  beside two baselines: chance (1 / source length) and the positional baseline (the best fixed source position per
  source length and output position, fitted on the training split: what a model could do without reading the
  words). On copy and reverse the positional baseline is the diagonal / anti-diagonal and scores 1, so no
  attention can beat it there: those tasks show the maps, they cannot show content alignment. On sort the true
  position of each output word depends on the words and the positional baseline is about chance;
- the masking test (``experiments.c3_attention.attention.masking_test``): the share of output words whose prediction changes when
  the attended source token is masked, against masking a random other source token.

**Rule (pre-registered, ``lecture.preregistration``).** Primary cell ``alignment_above_baseline``: per seed, the
primary family's alignment accuracy minus max(chance, positional baseline), averaged over the primary tasks
(``C3Settings.primary_tasks``, the content tasks: sort). Per task, not over all tasks, because on the positional
tasks the quantity is at most 0 by construction and an average would only dilute the one task that can answer.
SESOI ``C3_SESOI``. Gate: the family solved every task of the preset in every seed (token accuracy at least
``MIN_TASK_ACCURACY``). An alignment above chance but not above the positional baseline is no evidence of content
alignment: such a result is "not supported" when its interval excludes the SESOI, else inconclusive, and the
details say which baseline explains it. The faithfulness difference (attended - random flip rate) and every
family's and task's cells are reported beside it, not decided.
"""

from __future__ import annotations

import copy
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from experiments.core import verdicts as V
from experiments.core.stats import finite, t_interval
from experiments.core.plots import save_figure
from modules.data.tasks import CONTENT_TASKS, POSITIONAL_TASKS, TASKS
from modules.errors import ConfigError
from modules.files import atomic_write_text

C3_CLAIM = "RNNs give no way to see which inputs an output depended on; attention weights show the alignment."
# C3's SESOI, in alignment-accuracy units above max(chance, positional baseline). Both are about 0.1 to 0.25 on sort
# at the lecture's lengths (4 to 10 distinct words); an argmax that lands on the true source position 20 points
# more often than the best a guess or a fixed positional pattern could is the least a reader of a heatmap would
# see as an alignment; below it the map is mostly noise or position.
C3_SESOI = 0.2
# C3's gate: a model must have solved the task (greedy test token accuracy; chance is about 1 / num_words, < 0.1
# here) before where it looks can mean "the alignment": a model that cannot reproduce the words has none to show.
MIN_TASK_ACCURACY = 0.8
C3_PRIMARY = "alignment_above_baseline"
TASK_DATA = "modules.data.TaskDataModule"
# the fields a cached c3_scores.json must hold (an older cache without the baselines is scored again)
SCORE_KEYS = ("token_accuracy", "alignment_accuracy", "alignment_chance", "alignment_positional",
              "mask_flip_attended", "mask_flip_random")


@dataclass
class C3Settings:
    """C3's training runs and scoring."""

    tasks: list[str] = field(default_factory=lambda: ["copy", "reverse", "sort"])
    # the tasks the primary cell averages over (pre-registered): content tasks, where position cannot explain it
    primary_tasks: list[str] = field(default_factory=lambda: ["sort"])
    families: list[str] = field(default_factory=lambda: ["rnn-attention", "transformer"])
    primary_family: str = "rnn-attention"
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    # TaskDataModule arguments (the task is set per run); distinct words make every task's alignment unique
    task_data: dict = field(default_factory=lambda: {"distinct": True})
    models: dict[str, dict] = field(default_factory=dict)  # family -> model arguments
    batch_size: int = 64
    updates: int = 600
    max_test_examples: Optional[int] = None  # scored test examples (None: the whole test split)
    heatmap_examples: int = 2  # task examples drawn per task (seed 0's models)
    # translation data for heatmaps of held-out pairs (a run spec's data: class_path + init_args); None: none
    translation_data: Optional[dict] = None
    translation_updates: int = 800
    translation_pairs: int = 3
    translation_max_src_len: int = 12  # the held-out pairs drawn are the first test pairs at most this long
    curve_points: int = 20
    trainer: dict = field(default_factory=lambda: dict(accelerator="cpu", devices=1))
    threads: Optional[int] = 1
    save_checkpoints: bool = True  # the scoring reads each run's final checkpoint
    budget: str = "steps"

    @property
    def budget_value(self) -> int:
        return self.updates

    def __post_init__(self):
        for task in self.tasks:
            if task not in TASKS:
                raise ConfigError(f"c3.tasks: unknown task {task!r}; choose among {', '.join(TASKS)}")
            if task in CONTENT_TASKS and not self.task_data.get("distinct"):
                raise ConfigError(f"c3.tasks: {task!r} has no unique true alignment unless c3.task_data.distinct "
                                  "is true (equal words could be read from either position)")
        if not self.primary_tasks:
            raise ConfigError("c3.primary_tasks must name at least one task")
        outside = [t for t in self.primary_tasks if t not in self.tasks]
        if outside:
            raise ConfigError(f"c3.primary_tasks {outside} are not among c3.tasks {self.tasks}")
        if self.primary_family not in self.families:
            raise ConfigError(f"c3.primary_family {self.primary_family!r} must be one of c3.families {self.families}")
        missing = [f for f in self.families if f not in self.models]
        if missing:
            raise ConfigError(f"c3.models has no model arguments for {missing}")
        if self.updates < 1 or self.batch_size < 1:
            raise ConfigError(f"c3.updates and c3.batch_size must be >= 1, got {self.updates}, {self.batch_size}")


# ---- runs and scores ----------------------------------------------------------------------------------------------

def c3_specs(c3: C3Settings, tracking: dict) -> list[dict]:
    """One run spec per (task, family, seed), plus one per family on the translation data (seed 0)."""
    from experiments.core.scaling import model_args
    from experiments.core.specs import make_spec

    specs = []
    for task in c3.tasks:
        data = {"class_path": TASK_DATA, "init_args": {**c3.task_data, "task": task}}
        for seed in c3.seeds:
            for family in c3.families:
                model, _ = model_args(family, c3.models, c3.batch_size, c3.batch_size, "none", c3.updates)
                specs.append(make_spec("lecture-c3", c3, family=family, batch_size=c3.batch_size, seed=seed,
                                       data=data, model=model, updates=c3.updates, lr_factor=1.0, measure={},
                                       tracking=tracking, task=task))
    if c3.translation_data is not None:
        budget = {"kind": "steps", "value": c3.translation_updates, "updates": c3.translation_updates}
        for family in c3.families:
            model, _ = model_args(family, c3.models, c3.batch_size, c3.batch_size, "none", c3.translation_updates)
            specs.append(make_spec("lecture-c3-translation", c3, family=family, batch_size=c3.batch_size,
                                   seed=c3.seeds[0], data=copy.deepcopy(c3.translation_data), model=model,
                                   updates=c3.translation_updates, lr_factor=1.0, measure={}, tracking=tracking,
                                   budget=budget, task="translation"))
    return specs


def _load_run(run_dir: Path, spec: dict):
    """(trained model, its data module) of a finished run (its final checkpoint)."""
    from experiments.core.datamodules import build_datamodule
    from modules.checkpoints import load_model

    model = load_model(str(run_dir / "runs" / spec["key"] / "final.ckpt"))
    dm = build_datamodule(spec["data"], spec["batch_size"], spec["seed"])
    dm.prepare()
    return model, dm


def score_task_run(run_dir: Path, spec: dict, max_examples: Optional[int] = None) -> dict:
    """Greedy task scores, alignment accuracy with its baselines and the masking test of one finished task run on
    the test split (cached beside it)."""
    from experiments.c3_attention.attention import alignment_accuracy, masking_test
    from modules.data.tasks import greedy_task_scores

    cache = run_dir / "runs" / spec["key"] / "c3_scores.json"
    if cache.is_file():
        row = json.loads(cache.read_text())
        if all(k in row for k in SCORE_KEYS):
            return row
    model, dm = _load_run(run_dir, spec)
    scores = greedy_task_scores(model, dm, "test", max_examples=max_examples)
    alignment = alignment_accuracy(model, dm, "test", max_examples=max_examples)
    masking = masking_test(model, dm, "test", max_examples=max_examples, seed=spec["seed"])
    row = {"key": spec["key"], "family": spec["family"], "task": spec["task"], "seed": spec["seed"],
           "token_accuracy": float(scores.token_accuracy.mean()), "exact_match": float(scores.exact_match.mean()),
           **alignment.summary(), **masking.summary(), "chance_token_accuracy": 1.0 / dm.num_words}
    atomic_write_text(cache, json.dumps(row, indent=1) + "\n")
    return row


def run_c3(settings, folder: Path, workers: int, wandb_mode: str, echo) -> dict:
    """Train and score C3's runs (``settings``: the lecture's, with ``settings.c3``) into ``folder``."""
    from experiments.core.execute import execute
    from experiments.core.results import ResultsTable

    c3 = settings.c3
    specs = c3_specs(c3, {"wandb_mode": wandb_mode, "group": f"lecture-{folder.parent.name}",
                          "tags": ["lecture", "c3"]})
    outcome = execute(specs, folder, workers=workers, desc="C3", echo=echo)
    finished = {s["key"] for s in specs if (folder / "runs" / s["key"] / "final.ckpt").is_file()}
    done = ResultsTable(folder).keys()
    rows = []
    for spec in specs:
        if spec["task"] == "translation" or spec["key"] not in done or spec["key"] not in finished:
            continue
        rows.append(score_task_run(folder, spec, c3.max_test_examples))
    translation = [r for r in ResultsTable(folder).rows() if r["key"] in {s["key"] for s in specs
                                                                          if s["task"] == "translation"}]
    return {"specs": specs, "rows": rows, "failed": outcome.failed, "translation": translation}


# ---- the rule ---------------------------------------------------------------------------------------------------

C3_RULE = (f"Per seed: the alignment accuracy of the primary family (argmax of its cross-attention, teacher-forced, "
           f"on the true source position, test split) minus max(chance, positional baseline), averaged over the "
           f"primary tasks (the content tasks, sort of distinct words). Chance = 1 / source length; the positional "
           f"baseline = the accuracy of the best fixed source position per (source length, output position), fitted "
           f"on the training split, which an attention-free model could follow. On copy and reverse it is the "
           f"diagonal / anti-diagonal and scores 1, so they are reported, not decided. SESOI {C3_SESOI}. An "
           f"alignment above chance but not above the positional baseline is not evidence of content alignment "
           f"(not supported, or inconclusive when the interval reaches the SESOI). Gate: the family solved every "
           f"task in every seed (greedy test token accuracy >= {MIN_TASK_ACCURACY}; chance is about 1 / num_words). "
           f"The Transformer's alignment (mean over every decoder layer and head) and the masking test (prediction "
           f"changes when the attended vs a random other source token is masked) are reported beside it; plain "
           f"`rnn` has no attention weights.")


def baseline_of(row: dict) -> float:
    """max(chance, positional baseline) of a scored row (NaN where the positional baseline is missing)."""
    positional = row.get("alignment_positional")
    return max(row["alignment_chance"], positional) if finite(positional) else math.nan


def c3_verdict(rows: list[dict], *, primary_family: str = "rnn-attention",
               tasks: tuple[str, ...] = ("copy", "reverse", "sort"), primary_tasks: tuple[str, ...] = ("sort",),
               margin: float = C3_SESOI, min_task_accuracy: float = MIN_TASK_ACCURACY, alpha: float = 0.05,
               min_seeds: int = 3, why_not_run: str = "not run") -> V.Verdict:
    """Verdict C3 from the scored task rows (``score_task_run``: family, task, seed, token_accuracy,
    alignment_accuracy, alignment_chance, alignment_positional, mask_flip_attended, mask_flip_random)."""
    settings = V.VerdictSettings(alpha=alpha, min_seeds=min_seeds)
    primary = C3_PRIMARY
    what = f"{primary_family} alignment accuracy - max(chance, positional) (mean over {', '.join(primary_tasks)})"
    rows = [r for r in rows if r.get("task") in tasks]
    mine = [r for r in rows if r["family"] == primary_family]
    if not mine:
        why = why_not_run if not rows else f"not run: no {primary_family} runs on {', '.join(tasks)}"
        cells = {primary: V._not_run(what, why, margin)}
        return V._standard("C3", C3_CLAIM, C3_RULE, margin, primary, cells, why, [], settings)
    present = sorted({r["task"] for r in mine})
    scored = [t for t in primary_tasks if t in present]
    per_task = {t: {r["seed"]: r["alignment_accuracy"] - baseline_of(r) for r in mine if r["task"] == t}
                for t in scored}
    seeds = sorted(set.intersection(*(set(v) for v in per_task.values()))) if per_task else []
    values = [sum(per_task[t][s] for t in scored) / len(scored) for s in seeds]
    failed = sorted((r["task"], r["seed"], r["token_accuracy"]) for r in mine
                    if not (finite(r.get("token_accuracy")) and r["token_accuracy"] >= min_task_accuracy))
    no_baseline = sorted({r["task"] for r in mine if r["task"] in scored and not finite(baseline_of(r))})
    gate = None
    if failed:
        gate = (f"{primary_family} did not solve the task: " + "; ".join(
            f"{task} seed {seed} token accuracy {acc:.2f}" for task, seed, acc in failed)
            + f" (< {min_task_accuracy})")
    elif set(present) != set(tasks):
        gate = f"not run: {primary_family} has no runs on {', '.join(sorted(set(tasks) - set(present)))}"
    elif not scored:
        gate = f"not run: {primary_family} has no runs on the primary tasks {', '.join(primary_tasks)}"
    elif no_baseline:
        gate = f"the positional baseline is missing for {', '.join(no_baseline)} (score the runs again)"
    cells = {primary: V.Cell(what, values, margin, not failed,
                             gate or f"{primary_family} solved every task in every seed")}
    details = []
    for family in V.families_of(rows):
        for task in tasks:
            rs = sorted((r for r in rows if r["family"] == family and r["task"] == task), key=lambda r: r["seed"])
            if not rs:
                continue
            details += _task_cells(cells, family, task, rs, margin)
    return V._standard("C3", C3_CLAIM, C3_RULE, margin, primary, cells, gate, details, settings)


def _task_cells(cells: dict, family: str, task: str, rs: list[dict], margin: float) -> list[str]:
    """The reported (not decided) cells of one family and task, and their lines for the details."""
    name = f"{family}_{task}"
    above_chance = [r["alignment_accuracy"] - r["alignment_chance"] for r in rs]
    above_baseline = [r["alignment_accuracy"] - baseline_of(r) for r in rs]
    cells[f"alignment_{name}"] = V.Cell(f"{family} alignment accuracy - chance on {task}", above_chance)
    cells[f"alignment_above_baseline_{name}"] = V.Cell(
        f"{family} alignment accuracy - max(chance, positional) on {task}", above_baseline)
    cells[f"token_accuracy_{name}"] = V.Cell(f"{family} greedy token accuracy on {task}",
                                             [r["token_accuracy"] for r in rs])
    iv = lambda xs: t_interval(xs).fmt(3)  # noqa: E731
    lines = [f"- {family}, {task}: alignment accuracy {iv([r['alignment_accuracy'] for r in rs])} vs chance "
             f"{iv([r['alignment_chance'] for r in rs])} and positional baseline "
             f"{iv([r.get('alignment_positional') for r in rs])}; token accuracy "
             f"{iv([r['token_accuracy'] for r in rs])}; exact match {iv([r.get('exact_match') for r in rs])}"]
    chance_iv, baseline_iv = t_interval(above_chance), t_interval(above_baseline)
    if chance_iv.defined and baseline_iv.defined and chance_iv.mean >= margin > baseline_iv.mean:
        lines.append(f"  - above chance ({chance_iv.fmt(3)}) but not above the positional baseline "
                     f"({baseline_iv.fmt(3)}): a fixed positional pattern explains this alignment"
                     + (f" ({task} is a positional task)" if task in POSITIONAL_TASKS else ""))
    flips = [(r.get("mask_flip_attended"), r.get("mask_flip_random")) for r in rs]
    if all(finite(a) and finite(b) for a, b in flips):
        diff = [a - b for a, b in flips]
        cells[f"masking_{name}"] = V.Cell(f"{family} prediction changes, attended - random token masked, on {task}",
                                          diff)
        d = t_interval(diff)
        # all seeds equal (a deterministic model) has no interval: its one value is then the whole evidence
        low, high = (d.low, d.high) if d.defined else (d.mean, d.mean) if d.n and d.std == 0 else (None, None)
        reading = ("the masking test does not separate the two" if low is None or low <= 0 < high else
                   "masking the attended token changes the output more often than a random one" if low > 0 else
                   "masking the attended token does not change the output more often than a random one: the "
                   "argmax attention is not shown to be what the output depends on")
        lines.append(f"  - masking test ({family}, {task}): prediction changes with the attended source token "
                     f"masked {iv([a for a, _ in flips])} vs a random other one {iv([b for _, b in flips])} "
                     f"(difference {d.fmt(3)}): {reading}")
    return lines


# ---- the plain RNN, heatmaps ------------------------------------------------------------------------------------

def no_attention_message(c3: C3Settings) -> str:
    """What the attention code says of the plain ``rnn`` family (no attention): its own error, quoted."""
    import torch

    from experiments.c3_attention.attention import attention_maps
    from experiments.core.families import get_family

    args = {k: v for k, v in c3.models.get("rnn", {}).items() if k != "evaluation"}
    model = get_family("rnn").load_class()(vocab_size=10, **args)
    src = torch.tensor([[5, 6, 7]])
    try:
        attention_maps(model, src, src.eq(0), torch.tensor([[1, 5, 6]]))
    except ValueError as err:
        return str(err)
    return "(unexpectedly, the plain rnn returned attention weights)"


def c3_heatmaps(run_dir: Path, specs: list[dict], c3: C3Settings, figures: Path) -> dict[str, Path]:
    """Heatmap PNGs into ``figures``: task examples of seed 0's models, held-out translation pairs."""
    from experiments.c3_attention.attention import write_heatmaps

    out = {}
    done = {s["key"] for s in specs if (run_dir / "runs" / s["key"] / "final.ckpt").is_file()}
    first_seed = c3.seeds[0]
    for spec in specs:
        if spec["key"] not in done or spec["seed"] != first_seed:
            continue
        model, dm = _load_run(run_dir, spec)
        if spec["task"] == "translation":
            pairs = [ex for ex in dm.examples("test") if len(ex.src) <= c3.translation_max_src_len]
            pairs = pairs[:c3.translation_pairs]
        else:
            pairs = dm.examples("test")[:c3.heatmap_examples]
        if pairs:
            out.update(write_heatmaps(model, pairs, figures, prefix=f"c3_{spec['task']}_{spec['family']}",
                                      vocab=dm.vocab))
    return out


def plot_alignment(rows: list[dict], path: Path) -> Optional[Path]:
    """Alignment accuracy per family and task (mean and 95% t-interval over seeds) against chance and the
    positional baseline."""
    if not rows:
        return None
    from matplotlib.figure import Figure

    groups = [(f, t) for f in V.families_of(rows) for t in sorted({r["task"] for r in rows})
              if any(r["family"] == f and r["task"] == t for r in rows)]
    fig = Figure(figsize=(1.6 + 1.3 * len(groups), 3.6))
    ax = fig.add_subplot()
    for i, (family, task) in enumerate(groups):
        rs = [r for r in rows if r["family"] == family and r["task"] == task]
        acc, chance = t_interval([r["alignment_accuracy"] for r in rs]), t_interval([r["alignment_chance"] for r in rs])
        err = [[acc.mean - acc.low], [acc.high - acc.mean]] if acc.defined else None
        ax.bar(i, acc.mean, yerr=err, capsize=4, color="tab:blue" if family == "rnn-attention" else "tab:orange")
        ax.hlines(chance.mean, i - 0.4, i + 0.4, colors="black", linestyles="dashed",
                  label="chance (1 / source length)" if i == 0 else None)
        positional = [r.get("alignment_positional") for r in rs]
        if all(finite(p) for p in positional):
            ax.hlines(t_interval(positional).mean, i - 0.4, i + 0.4, colors="tab:red", linestyles="dotted",
                      linewidth=2, label="positional baseline" if i == 0 else None)
    ax.set_xticks(range(len(groups)), labels=[f"{f}\n{t}" for f, t in groups], fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("alignment accuracy (argmax attention\non the true source position)")
    ax.legend(fontsize=8, loc="lower right")
    return save_figure(fig, path, dpi=100)


# ---- the report section -----------------------------------------------------------------------------------------

PATTERN = {"copy": "the diagonal", "reverse": "the anti-diagonal",
           "sort": "where each next-smallest word is: a different permutation in every example"}


def c3_section(settings, c3: dict, figures: dict[str, Path], folder: Path) -> list[str]:
    """C3's part of the lecture report (``settings``: the lecture's, with ``settings.c3``)."""
    s = settings.c3
    rows = c3["rows"]
    L = [f"Families {', '.join(s.families)} trained on {', '.join(s.tasks)} (`TaskDataModule`: "
         f"{json.dumps(s.task_data)}) for {s.updates} updates at batch size {s.batch_size}, seeds "
         f"{', '.join(map(str, s.seeds))}; each scored on the test split (unseen sources): greedy token accuracy and "
         "exact match, and alignment accuracy = the share of output words whose argmax cross-attention "
         "(teacher-forced; the Transformer's averaged over every decoder layer and head) falls on the true source "
         "position. Two baselines: chance = 1 / source length, and the positional baseline = the best fixed source "
         "position per (source length, output position), fitted on the training split (a model that never reads "
         "the words could follow it). Copy and reverse are positional: their baseline is 1, so they show the maps "
         f"but cannot show content alignment; the verdict is decided on {', '.join(s.primary_tasks)}, where the "
         "true position depends on the words. Masking test: the share of output words whose (teacher-forced) "
         "prediction changes when the attended source token is replaced by `<unk>`, against a random other "
         "source token. Mean [95% t-interval over seeds] (seeds).", "",
         "| family | task | token accuracy | exact match | alignment accuracy | chance | positional baseline | "
         "alignment - max(chance, positional) | changed: attended masked | changed: random masked |",
         "|---|---|---|---|---|---|---|---|---|---|"]
    for family in V.families_of(rows):
        for task in s.tasks:
            rs = [r for r in rows if r["family"] == family and r["task"] == task]
            if rs:
                iv = lambda k: t_interval([r.get(k) for r in rs]).fmt(3)  # noqa: E731
                L.append(f"| {family} | {task}{' (primary)' if task in s.primary_tasks else ''} | "
                         f"{iv('token_accuracy')} | {iv('exact_match')} | {iv('alignment_accuracy')} | "
                         f"{iv('alignment_chance')} | {iv('alignment_positional')} | "
                         f"{t_interval([r['alignment_accuracy'] - baseline_of(r) for r in rs]).fmt(3)} | "
                         f"{iv('mask_flip_attended')} | {iv('mask_flip_random')} |")
    L += ["", f"Plain `rnn` (the context-vector seq2seq, attention none) is not trained here: it has no attention "
          f"weights to score or draw. Asked for them, the attention code answers: \"{no_attention_message(s)}\". "
          "That is the lecture's point: nothing in its computation says which input an output came from.", ""]
    if c3.get("failed"):
        L += [f"Failed runs (see `c3/errors.jsonl`): {', '.join(c3['failed'])}", ""]
    if "c3_alignment" in figures:
        figure = os.path.relpath(figures["c3_alignment"], folder)
        L += [f"![C3: alignment accuracy against chance and the positional baseline]({figure})",
              ""]
    heat = c3.get("heatmaps", {})
    for task in [*s.tasks, "translation"]:
        names = sorted(n for n in heat if n.startswith(f"c3_{task}_"))
        if not names:
            continue
        if task == "translation":
            trained = {r["family"]: r for r in c3.get("translation", [])}
            nll = "; ".join(f"{f}: NLL_test {get_final(r, 'nll_test_per_token')} per token (untrained "
                            f"{get_init(r, 'nll_test_per_token')})" for f, r in trained.items())
            L += [f"**Held-out translation pairs** (test split, never trained on; source at most "
                  f"{s.translation_max_src_len} tokens): each family trained briefly ({s.translation_updates} updates, "
                  f"seed {s.seeds[0]}) on {s.translation_data['init_args'].get('root', 'the data')} "
                  f"({nll}). Small models trained for minutes: the maps show where they look, not translation "
                  "quality.", ""]
        else:
            L += [f"**{task}** (seed {s.seeds[0]}'s models, test examples): the true alignment is "
                  f"{PATTERN.get(task, 'known')}. `_heads`: every decoder layer's heads.", ""]
        L += [f"![{n}]({os.path.relpath(heat[n], folder)})" for n in names] + [""]
    if s.translation_data is None:
        L += ["No translation heatmaps: this preset names no translation data.", ""]
    return L


def get_final(row: dict, key: str) -> str:
    v = (row.get("final") or {}).get(key)
    return f"{v:.3f}" if finite(v) else "-"


def get_init(row: dict, key: str) -> str:
    v = (row.get("init") or {}).get(key)
    return f"{v:.3f}" if finite(v) else "-"
