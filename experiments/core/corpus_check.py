"""Which corpora a lecture part needs, and the "not run" line where one is absent.

The corpora (``$GVT_DATA_DIR``: coco/, multi30k/, mr/) are inputs, not part of the package, so ``gvt lecture``
checks a part's files before running it: a part whose verdict needs a missing corpus is not run, and its section
and verdict say ``not run: corpus X not found at PATH (set GVT_DATA_DIR)``; a corpus that only a descriptive part
needs (C2's Multi30k buckets, C3's translation heatmaps) leaves that part out, named in the section, and the rest
runs. Every other part still runs and the report is written.

A part module (C2, C4) declares its corpora through the optional contract function ``corpora(settings)`` ->
``{name: {"files": [configured paths], "needed": bool}}`` (``needed``: the verdict rests on it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from modules.data.corpora import DATA_DIR_VARIABLE, expand_path


def not_found(name: str, path: Path) -> str:
    return f"corpus {name} not found at {path} (set {DATA_DIR_VARIABLE})"


def first_missing(files: list[str]) -> Optional[Path]:
    """The first of ``files`` (configured paths, ``$GVT_DATA_DIR`` expanded) that is not a file."""
    for f in files:
        path = Path(expand_path(f))
        if not path.is_file():
            return path
    return None


def check(corpora: dict[str, dict]) -> tuple[Optional[str], list[str]]:
    """(the not-run reason where a needed corpus is missing, else None; the lines naming each missing optional
    corpus) for a ``corpora()`` declaration."""
    why, notes = None, []
    for name, spec in corpora.items():
        missing = first_missing(list(spec.get("files", [])))
        if missing is None:
            continue
        if spec.get("needed", True):
            why = why or f"not run: {not_found(name, missing)}"
        else:
            notes.append(f"{spec.get('part', name)} not run: {not_found(name, missing)}; the rest of the part ran.")
    return why, notes


def text_data_files(data: dict) -> list[str]:
    """Every file a ``modules.data.TextDataModule`` run spec (class_path + init_args) reads, under its root."""
    args = data.get("init_args", {})
    root = args.get("root")
    files = []
    for split in ("train", "val", "test"):
        value = args.get(split)
        names = [value] if isinstance(value, str) else list(value.values()) if isinstance(value, dict) else []
        files += [f"{root}/{n}" if root and not str(n).startswith(("/", "$")) else str(n) for n in names]
    return files
