"""`gvt lecture`'s report: the parts' figures, DIR/report/report.md assembled from the sections of C1-C4
(each part's own), and the W&B log (the run: experiments/lecture.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from experiments.c1_parallel.verdict import c1_section
from experiments.c3_attention.claim import c3_heatmaps, c3_section, plot_alignment
from experiments.core import verdicts as V
from experiments.core.stats import finite
from experiments.lecture_settings import LectureSettings, PARTS
from modules.files import atomic_write_text


# ---- figures ----------------------------------------------------------------------------------------------------

def write_figures(settings: LectureSettings, out: Path, results: dict, folder: Path) -> dict[str, Path]:
    from experiments.c1_parallel.measure import plot

    figures: dict[str, Path] = {}
    if "c1" in results:
        figures["c1_step_time"] = plot(results["c1"]["record"], folder / "c1_step_time.png", "median")
    if "c3" in results:
        p = plot_alignment(results["c3"]["rows"], folder / "c3_alignment.png")
        if p:
            figures["c3_alignment"] = p
        heat = c3_heatmaps(out / "c3", results["c3"]["specs"], settings.c3, folder / "heatmaps")
        results["c3"]["heatmaps"] = heat
        figures.update(heat)
    for part in ("c2", "c4"):
        if part in results and results[part]["module"] is not None and not results[part].get("why"):
            lines, part_figures = results[part]["module"].report_section(results[part]["rows"], folder)
            results[part]["section"] = subsection(lines)
            figures.update({f"{part}_{name}": p for name, p in part_figures.items()})
    return figures


# ---- the report -------------------------------------------------------------------------------------------------

def subsection(lines: list[str]) -> list[str]:
    """A module's report section (written to stand alone, under its own "## " title) inside this report's section
    of the claim: every Markdown heading one level deeper, the section's own title as "### Tables and figures"."""
    out, titled = [], False
    for line in lines:
        if line.startswith("#"):
            level, _, title = line.partition(" ")
            if not titled and level == "##":
                titled, title = True, "Tables and figures"
            line = f"#{level} {title}"
        out.append(line)
    return out


def _busy(machine: dict) -> bool:
    load, cores = (machine.get("load_average_1_5_15") or [math.nan])[0], machine.get("cpu_count")
    return bool(cores) and finite(load) and load > cores


def _wall(state: dict, part: str) -> str:
    entry = state["parts"].get(part)
    if not entry:
        return "not run"
    times = entry["wall_s"]
    text = f"{sum(times):.0f} s"
    if len(times) > 1:
        text += f" over {len(times)} invocations ({' + '.join(f'{t:.0f}' for t in times)} s)"
    if entry.get("resumed"):
        text += "; finished in an earlier invocation, read back in the last"
    return text


def write_report(path: Path, settings: LectureSettings, state: dict, results: dict, vs: list[V.Verdict],
                 figures: dict[str, Path], prereg: dict, out: Path) -> None:
    from experiments.core.report import cells_table, verdict_table_text

    folder = path.parent
    last = state.get("last_invocation", {})
    m0, m1 = last.get("machine_before", {}), last.get("machine_after", {})
    L = ["# The lecture's road to the Transformer: claims C1-C4", "",
         f"Preset `{settings.name}`, run folder `{out}`. Each claim is decided by the rule of the Q1-Q4 report "
         f"(`experiments.core.verdicts`): one primary cell of per-seed (C1: per-round) values, a SESOI, three outcomes, "
         f"a gate where a precondition fails, and Holm's correction across C1-C4 at family-wise "
         f"{1 - settings.alpha:.0%}. Pre-registration hash {prereg['hash']} (the preset, SESOIs and gates).", "",
         "```", verdict_table_text(vs, prereg["hash"], settings.alpha), "```", "",
         "| claim | verdict | evidence |", "|---|---|---|"]
    L += [f"| {v.question}: {v.claim} | **{v.verdict}** | {v.evidence} |" for v in vs]
    not_run = [f"- {v.question}: {v.reason}" for v in vs if v.reason.startswith("not run")]
    not_run += [f"- {part.upper()}: {line}" for part in PARTS if part in results
                for line in results[part].get("notes", [])]
    if not_run:
        L += ["", "**What did not run** (every other part ran and is reported below):", "", *not_run]
    L += ["", "## Time and machine", "",
          "| part | wall time |", "|---|---|"]
    L += [f"| {p.upper()} | {_wall(state, p)} |" for p in PARTS]
    total = sum(sum(e["wall_s"]) for e in state["parts"].values())
    L += [f"| all parts | {total:.0f} s (the last invocation, parts {', '.join(last.get('only', []))}: "
          f"{last.get('wall_s', math.nan):.0f} s before the report) |", "",
          f"Machine: {m0.get('cpu_count')} cores ({m0.get('processor')}), torch {m0.get('torch')}, "
          f"{last.get('workers')} worker process(es) with {last.get('torch_threads_of_runs')} torch thread(s) each "
          f"for the training runs (C1 sets its own thread counts: {settings.c1.threads}); load average (1, 5, 15 "
          f"min) {m0.get('load_average_1_5_15')} at the start, {m1.get('load_average_1_5_15')} at the end"
          + (" (above the core count: other work shared the machine, and the wall times are longer than on an idle "
             "one)." if _busy(m0) or _busy(m1) else "."), ""]
    sections = {"C1": ("C1: is an RNN sequential where a Transformer is not?", "c1"),
                "C2": ("C2: the context vector as the bottleneck", "c2"),
                "C3": ("C3: do attention weights show the alignment?", "c3"),
                "C4": ("C4: transfer learning and labelled examples", "c4")}
    for v in vs:
        title, part = sections[v.question]
        L += [f"## {title}", "", f"**Claim.** {v.claim}", "", f"**Verdict: {v.verdict}.** {v.reason}", "",
              f"**Rule.** {v.rule}", ""]
        L += cells_table(v) + [""]
        for d in v.details:  # list items stay one list; every other detail is its own paragraph
            L += [d] if d.startswith("- ") else [d, ""]
        L += [""] if v.details else []
        if part not in results:
            L += ["Not run: left out by `--only` in this invocation.", ""]
        elif part == "c1":
            L += c1_section(results["c1"]["record"], settings.primary_threads, figures.get("c1_step_time"), folder)
        elif part == "c3":
            L += c3_section(settings, results["c3"], figures, folder)
        elif results[part]["module"] is None:
            L += [f"{results[part]['why']} (on this branch); its verdict stays inconclusive.", ""]
        elif results[part].get("why"):
            L += [f"{results[part]['why']}; its verdict stays inconclusive.", ""]
        else:
            L += list(results[part].get("section", [])) + [""]
        if part in results and part != "c1":
            L += [f"{line}" for line in results[part].get("notes", [])] + ([""] if results[part].get("notes") else [])
    L += ["## Settings of the preset", "", "```json", json.dumps(settings.to_dict(), indent=1, default=str), "```",
          "", "## Files", "",
          "- `c1/parallel.json`: every timed step (threads, family, length, round, seconds), parameter counts, "
          "machine.",
          "- `c3/results.jsonl`, `c3/runs/<key>/`: the training runs (curves, checkpoints); "
          "`c3/runs/<key>/c3_scores.json`: their task and alignment scores.",
          "- `c2/`, `c4/`: the runs of experiments.c2_bottleneck.bottleneck and experiments.c4_transfer.transfer.",
          "- `report/verdicts.json`: the verdicts, machine-readable (the Q1-Q4 report's schema); "
          "`lecture.json`: wall times and machine per invocation.", ""]
    atomic_write_text(path, "\n".join(L))


def log_to_wandb(settings: LectureSettings, out: Path, figures: dict[str, Path], vs: list[V.Verdict], mode: str,
                 echo) -> bool:
    """The figures and heatmaps as W&B images, the verdicts as a table (one run, job type lecture-report)."""
    from modules.tracking import resolve_wandb_mode

    mode = resolve_wandb_mode(mode)
    if mode == "disabled" or not figures:
        return False
    try:
        import wandb

        (out / "report").mkdir(parents=True, exist_ok=True)
        run = wandb.init(project="gan-vs-transformer", group=f"lecture-{out.name}", job_type="lecture-report",
                         name=f"lecture-report-{out.name}", dir=str(out / "report"), mode=mode, reinit=True,
                         config={"preset": settings.name},
                         settings=wandb.Settings(silent=True, console="off", x_disable_stats=True))
        run.log({f"lecture/{name}": wandb.Image(str(p)) for name, p in figures.items()})
        run.log({"lecture/verdicts": wandb.Table(columns=["claim", "verdict", "evidence"],
                                                 data=[[v.question, v.verdict, v.evidence] for v in vs])})
        run.summary.update({f"verdict/{v.question}": v.verdict for v in vs})
        run.finish()
        return True
    except Exception as err:  # the report is on disk; tracking must not take it down
        echo(f"lecture: W&B logging skipped ({type(err).__name__}: {err})")
        return False
