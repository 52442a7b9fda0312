"""Plain readers for text corpora on disk: one sentence per line, line-aligned pairs, one file per label.

These know nothing about Lightning, tokenizers or vocabularies; they turn files into lists of strings and
refuse bad input with a ``DataError`` that names the file (and, where it helps, the 1-based line number), so a
user pointing the package at their own data learns what to fix without reading a traceback.

Conventions shared by every reader:

- gzip is detected from the file's magic bytes, so ``train.en.gz`` (or a gzipped file without the suffix) is
  read transparently.
- Lines are split on ``\\n``, ``\\r\\n`` and ``\\r`` only. ``str.splitlines`` is deliberately not used: it also
  splits on U+0085, which is what byte 0x85 becomes in Latin-1 (the MR corpus has it inside sentences).
- Surrounding whitespace is stripped from every line and a leading byte-order mark is dropped.
- Control characters (U+0000-U+001F and U+007F: NUL, escape, form feed, ...) are refused, tab excepted, with an
  error naming the file, line and column: they are never part of a sentence, and a tokenizer would otherwise
  glue them to a word (``'riding\\x00'``). ``control_chars="strip"`` (``data.control_chars``) deletes them
  instead and logs how many it deleted per file. C1 characters (U+0080-U+009F) pass: in Latin-1 corpora they are
  Windows-1252 punctuation (MR's byte 0x85, an ellipsis).
- Paths may start with ``$GVT_DATA_DIR`` (the corpora folder, ``data_dir()``: the environment variable
  ``GVT_DATA_DIR``, by default ``../shared/data`` next to the project the command runs in (the nearest parent of
  the working directory with a ``pyproject.toml``), else next to the installed package's project root); other
  ``$VARIABLES`` and ``~`` are expanded too.
- Blank lines: a single file skips them. Parallel files keep them while aligning, then drop every pair with a
  blank side, so one blank line never shifts all later pairs out of alignment. Blank lines at the very end of a
  file are not counted when the two files' lengths are compared (an editor's extra newline is not a mismatch).
"""

from __future__ import annotations

import codecs
import gzip
import io
import logging
import os
import re
import zlib
from pathlib import Path
from typing import Literal, Mapping, Union

from modules.data.errors import DataError

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
ControlChars = Literal["error", "strip"]

DATA_DIR_VARIABLE = "GVT_DATA_DIR"
# modules/data/corpora.py -> the project root of the package's own files (a source checkout or an editable install);
# only the fallback: an editable install of another folder's checkout must not decide where this project's data are
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]
_RELATIVE_DATA_DIR = Path("..") / "shared" / "data"
_DATA_DIR_REFERENCE = re.compile(r"\$(\{GVT_DATA_DIR\}|GVT_DATA_DIR\b)")

_GZIP_MAGIC = b"\x1f\x8b"
# C0 controls and DEL, tab excepted (line breaks never reach the check: lines are split on them first)
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f]")
_CONTROL_NAMES = {0x00: "NUL", 0x1B: "ESC", 0x0B: "vertical tab", 0x0C: "form feed", 0x7F: "DEL"}


def project_root(start: PathLike | None = None) -> Path:
    """The nearest folder at or above ``start`` (default: the working directory) holding a ``pyproject.toml``;
    ``start`` itself where none does."""
    here = Path(start if start is not None else os.getcwd()).resolve()
    return next((p for p in (here, *here.parents) if (p / "pyproject.toml").is_file()), here)


def data_dir_candidates() -> list[tuple[Path, str]]:
    """The places ``data_dir`` looks, in order, each with how it was found: ``$GVT_DATA_DIR`` alone when set, else
    ``../shared/data`` next to the working directory's project root, then next to the package's project root."""
    configured = os.environ.get(DATA_DIR_VARIABLE)
    if configured:
        return [(Path(os.path.expanduser(configured)), f"${DATA_DIR_VARIABLE}")]
    places = [((project_root() / _RELATIVE_DATA_DIR).resolve(), "../shared/data next to the working directory's "
               "project root"),
              ((_PACKAGE_ROOT / _RELATIVE_DATA_DIR).resolve(), "../shared/data next to the installed package's "
               "project root")]
    return [(p, how) for i, (p, how) in enumerate(places) if p not in [q for q, _ in places[:i]]]


def data_dir() -> Path:
    """The folder of the real corpora: ``$GVT_DATA_DIR`` if set, else the first of ``data_dir_candidates`` that
    exists (the first where none does, so that an error names where the data were expected)."""
    places = data_dir_candidates()
    return next((p for p, _ in places if p.is_dir()), places[0][0])


def data_dir_tried() -> str:
    """The places ``data_dir`` looked, for an error message."""
    return "; ".join(f"{p} ({how}{'' if p.is_dir() else ', not there'})" for p, how in data_dir_candidates())


def expand_path(path: PathLike) -> str:
    """``$GVT_DATA_DIR`` (default: ``data_dir()``), other environment variables and ``~`` in a configured path."""
    text = _DATA_DIR_REFERENCE.sub(lambda _: str(data_dir()).replace("\\", "/"), str(path))
    return os.path.expanduser(os.path.expandvars(text))


def read_lines(path: PathLike, encoding: str = "utf-8", control_chars: ControlChars = "error") -> list[str]:
    """Non-blank lines of a text file (optionally gzipped), stripped, in file order."""
    lines = _read_all_lines(path, encoding, control_chars)
    kept = [line for line in lines if line]
    if len(kept) < len(lines):
        log.debug("%s: skipped %d blank lines", path, len(lines) - len(kept))
    _require_text(kept, lines, path)
    return kept


def read_parallel(src_path: PathLike, tgt_path: PathLike, encoding: str = "utf-8",
                  control_chars: ControlChars = "error") -> list[tuple[str, str]]:
    """Line-aligned (source, target) pairs: line i of one file is the counterpart of line i of the other."""
    src = _trim_trailing_blanks(_read_all_lines(src_path, encoding, control_chars))
    tgt = _trim_trailing_blanks(_read_all_lines(tgt_path, encoding, control_chars))
    _require_text([s for s in src if s], src, src_path)
    _require_text([t for t in tgt if t], tgt, tgt_path)
    if len(src) != len(tgt):
        raise DataError(
            f"parallel files are not line-aligned: {src_path} has {len(src)} lines but {tgt_path} has "
            f"{len(tgt)} lines; line i of the source file must correspond to line i of the target file"
        )
    pairs = [(s, t) for s, t in zip(src, tgt) if s and t]
    if not pairs:
        raise DataError(f"{src_path} and {tgt_path} have no line with text on both sides")
    if len(pairs) < len(src):
        log.info("%s / %s: dropped %d pairs with a blank side", src_path, tgt_path, len(src) - len(pairs))
    return pairs


def read_labeled(files: Mapping[str, PathLike], encoding: str = "utf-8",
                 control_chars: ControlChars = "error") -> list[tuple[str, str]]:
    """(label, sentence) pairs from one file per label, grouped by label in sorted label order.

    Sorted order makes the result independent of how the mapping was written (YAML key order, say).
    """
    if not files:
        raise DataError("labeled data need at least one label -> file entry; none was given")
    out: list[tuple[str, str]] = []
    for label in sorted(files, key=str):
        name = str(label)
        if not name.strip():
            raise DataError(f"a label name is empty (its file is {files[label]}); give every class a name")
        out.extend((name, line) for line in read_lines(files[label], encoding, control_chars))
    return out


# ---- internals -----------------------------------------------------------------------------------------------


def _read_all_lines(path: PathLike, encoding: str, control_chars: ControlChars = "error") -> list[str]:
    """Every line, stripped, blank ones kept as ``""`` so that callers can count and align physical lines."""
    if control_chars not in ("error", "strip"):
        raise DataError(f"data.control_chars must be 'error' or 'strip', got {control_chars!r}")
    path = _existing_file(path)
    _check_encoding(encoding)
    try:
        with _open_binary(path) as raw, io.TextIOWrapper(raw, encoding=encoding, newline=None) as text:
            lines = [line.rstrip("\n") for line in text]  # universal newlines: \r\n and \r arrive as \n
    except UnicodeDecodeError:
        # The streaming decoder reports offsets within its current chunk; locate the culprit in a second pass.
        raise _decode_error(path, encoding) from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: the gzip data are corrupt or truncated ({exc})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if not lines:
        raise DataError(f"{path}: the file is empty")
    lines = [line.strip() for line in _without_control_chars(lines, path, control_chars)]
    if lines[0].startswith("\ufeff"):
        lines[0] = lines[0][1:].strip()
    return lines


def _without_control_chars(lines: list[str], path: Path, control_chars: ControlChars) -> list[str]:
    """The lines unchanged, or an error at the first control character; with ``strip``, the lines without them."""
    removed = changed = 0
    out = []
    for number, line in enumerate(lines, start=1):
        found = _CONTROL.search(line)
        if found is None:
            out.append(line)
            continue
        if control_chars == "error":
            char = found.group()
            name = _CONTROL_NAMES.get(ord(char), "a control character")
            raise DataError(
                f"{path}: line {number}, column {found.start() + 1} holds U+{ord(char):04X} ({name}); a text file may "
                f"hold no control characters except tab. Remove it, or set data.control_chars=strip to delete them"
            )
        cleaned, count = _CONTROL.subn("", line)
        removed, changed = removed + count, changed + 1
        out.append(cleaned)
    if removed:
        log.warning("%s: deleted %d control characters on %d lines (data.control_chars=strip)", path, removed, changed)
    return out


def _existing_file(path: PathLike) -> Path:
    given = str(path)
    path = Path(expand_path(given))
    if path.is_dir():
        raise DataError(f"{path} is a directory; give the path of a text file inside it")
    if not path.exists():
        hint = ""
        if _DATA_DIR_REFERENCE.search(given) or str(path).startswith(str(data_dir())):
            hint = (f"; the corpora folder is {data_dir()} ({DATA_DIR_VARIABLE}"
                    f"{' is not set' if DATA_DIR_VARIABLE not in os.environ else ''}; tried: {data_dir_tried()}): set "
                    f"{DATA_DIR_VARIABLE} to the folder that holds coco/, multi30k/ and mr/ (README, Data)")
        raise DataError(f"{path}: no such file (resolved to {path.resolve()}){hint}")
    return path


def _check_encoding(encoding: str) -> None:
    try:
        codecs.lookup(encoding)
    except (LookupError, TypeError):
        raise DataError(
            f"unknown text encoding {encoding!r}; set data.encoding to a Python codec name such as utf-8 or latin-1"
        ) from None


def _open_binary(path: Path):
    with open(path, "rb") as probe:
        magic = probe.read(2)
    if magic == _GZIP_MAGIC:
        return gzip.open(path, "rb")
    if path.suffix == ".gz":
        raise DataError(f"{path}: named .gz but is not gzip-compressed; rename it or compress it")
    return open(path, "rb")


def _decode_error(path: Path, encoding: str) -> DataError:
    with _open_binary(path) as raw:
        data = raw.read()
    try:
        data.decode(encoding)
    except UnicodeDecodeError as exc:
        # Counting b"\n" gives the line for every ASCII-compatible encoding, the only ones where a line-based
        # format is meaningful byte-wise; files with bare \r endings fall back to counting those.
        newline = b"\n" if b"\n" in data else b"\r"
        line = data.count(newline, 0, exc.start) + 1
        column = exc.start - (data.rfind(newline, 0, exc.start) + 1) + 1
        bad = data[exc.start : max(exc.end, exc.start + 1)].hex(" ")
        where = "of the decompressed data" if _is_gzip(path) else "of the file"
        return DataError(
            f"{path}: line {line} is not valid {encoding} (byte {bad} at column {column}, byte offset {exc.start} "
            f"{where}: {exc.reason}); if the file uses another encoding, set data.encoding (e.g. latin-1 or cp1252)"
        )
    return DataError(f"{path}: is not valid {encoding}; set data.encoding (e.g. latin-1) to the file's encoding")


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as probe:
        return probe.read(2) == _GZIP_MAGIC


def _require_text(non_blank: list[str], all_lines: list[str], path: PathLike) -> None:
    if not non_blank:
        raise DataError(f"{path}: contains only blank lines ({len(all_lines)} of them), no text")


def _trim_trailing_blanks(lines: list[str]) -> list[str]:
    end = len(lines)
    while end > 0 and not lines[end - 1]:
        end -= 1
    return lines[:end]


__all__ = ["DATA_DIR_VARIABLE", "data_dir", "data_dir_candidates", "data_dir_tried", "expand_path", "project_root",
           "read_labeled", "read_lines", "read_parallel"]
