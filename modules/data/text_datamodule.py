"""Real text corpora (the user's own files) as a ``SequenceDataModule``.

Three layouts, one per conditioning mode of the design:

=========== =================================================== ============ ==========================
format      files                                               condition    ``Example.src``
=========== =================================================== ============ ==========================
lines       one sentence per line                               ``none``     ``[<null>]``
parallel    line-aligned source / target files                  ``source``   source token ids
labeled     one file per class                                  ``label``    ``[<label:NAME>]``
=========== =================================================== ============ ==========================

A LightningCLI YAML for Multi30k German -> English, with the validation split given and the test split carved
out of the training data::

    data:
      class_path: modules.data.text_datamodule.TextDataModule
      init_args:
        format: parallel
        root: $GVT_DATA_DIR/multi30k
        train: {src: train.de.gz, tgt: train.en.gz}
        val: {src: val.de.gz, tgt: val.en.gz}
        tokenizer: bpe
        max_len: 40

and for MR (Latin-1, one file per label)::

        format: labeled
        train: {pos: mr/rt-polarity.pos, neg: mr/rt-polarity.neg}
        encoding: latin-1
"""

from __future__ import annotations

import logging
import os
import random
from typing import Literal, Optional, Union

from modules.data.base import SPLITS, SequenceDataModule
from modules.data.batch import Example
from modules.data.corpora import expand_path, read_labeled, read_lines, read_parallel
from modules.data.errors import DataError
from modules.data.vocab import NULL_ID, SPECIAL_TOKENS, Vocab, make_tokenizer
from modules.errors import GvtError

log = logging.getLogger(__name__)

Format = Literal["lines", "parallel", "labeled"]
SplitFiles = Union[str, dict[str, str], None]

_CONDITION_OF_FORMAT = {"lines": "none", "parallel": "source", "labeled": "label"}
_HELD_OUT = ("val", "test")

# A record before tokenization: (condition, text) where the condition is None (lines), the source sentence
# (parallel) or the label name (labeled). After tokenization the text (and a source sentence) become token lists.
Record = tuple[Optional[str], str]


class TextDataModule(SequenceDataModule):
    """Sentences from text files, tokenized and numbered with a vocabulary fitted on the training split only.

    Args:
        train: the training files. ``lines``: a path. ``parallel``: ``{src: PATH, tgt: PATH}``.
            ``labeled``: ``{LABEL: PATH, ...}``, one file per class.
        format: ``lines`` (unconditional), ``parallel`` (source -> target) or ``labeled`` (label -> sentence).
        val, test: files of the held-out splits, in the same form as ``train``. A split left out is carved from
            the training data with ``split_seed`` (stratified by class for ``labeled``), so it never overlaps
            the training examples.
        root: directory that relative paths are resolved against (default: the working directory). Paths and
            ``root`` may start with ``$GVT_DATA_DIR``, the corpora folder (default ``../shared/data`` next to the
            project root), as the configs in configs/ do.
        swap_src_tgt: for ``parallel``, use the ``tgt`` files as the source and the ``src`` files as the
            target, so one preset serves both translation directions.
        encoding: text encoding of every file (``latin-1`` for MR). gzip is detected automatically.
        control_chars: a control character in a line (NUL, escape, form feed, ...; tab is allowed) is an
            ``error`` naming the file, line and column (the default), or ``strip``: deleted, with the count per
            file logged as a warning.
        val_fraction, test_fraction: share of the training data held out for a split not given as files.
        split_seed: seed of that held-out split; independent of ``seed``, which only orders training batches.
        tokenizer: ``word`` (whitespace; for pre-tokenized corpora) or ``bpe`` (byte-level BPE for raw text).
        lowercase: lowercase before tokenizing.
        bpe_vocab_size: number of BPE pieces to learn.
        min_freq: keep tokens seen at least this often in the training split; rarer ones become ``<unk>``.
        max_vocab_size: cap on the vocabulary, special and label tokens included (the embedding table size).
        max_len: longest allowed target, and source, in tokens (words or BPE pieces); ``None``: no limit.
        length_policy: what happens to a longer sentence: ``drop`` the example (the default: a truncated
            target would teach a generator to stop mid-sentence) or ``truncate`` it. The counts per split are
            logged and kept in ``self.dropped`` / ``self.truncated``.
        batch_size, eval_batch_size, seed, drop_last, num_workers: see ``SequenceDataModule``.
    """

    def __init__(
        self,
        train: Union[str, dict[str, str]],
        format: Format = "lines",
        val: SplitFiles = None,
        test: SplitFiles = None,
        root: Optional[str] = None,
        swap_src_tgt: bool = False,
        encoding: str = "utf-8",
        control_chars: Literal["error", "strip"] = "error",
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        split_seed: int = 0,
        tokenizer: Literal["word", "bpe"] = "word",
        lowercase: bool = False,
        bpe_vocab_size: int = 8000,
        min_freq: int = 1,
        max_vocab_size: Optional[int] = None,
        max_len: Optional[int] = None,
        length_policy: Literal["truncate", "drop"] = "drop",
        batch_size: int = 64,
        eval_batch_size: Optional[int] = None,
        seed: int = 0,
        drop_last: bool = False,
        num_workers: int = 0,
    ):
        super().__init__(batch_size, eval_batch_size, seed, drop_last, num_workers)
        if format not in _CONDITION_OF_FORMAT:
            raise DataError(f"data.format must be one of {sorted(_CONDITION_OF_FORMAT)}, got {format!r}")
        self.format = format
        self.condition = _CONDITION_OF_FORMAT[format]
        self.files = {"train": train, "val": val, "test": test}
        if train is None:
            raise DataError("data.train is required: the training file(s) to read")
        self.root = root
        self.swap_src_tgt = swap_src_tgt
        self.encoding = encoding
        self.control_chars = control_chars
        self.fractions = {"val": val_fraction, "test": test_fraction}
        self.split_seed = split_seed
        self.min_freq = min_freq
        self.max_vocab_size = max_vocab_size
        self.max_len = max_len
        self.length_policy = length_policy
        self._check_settings()
        try:
            self.tokenizer = make_tokenizer(tokenizer, lowercase=lowercase, bpe_vocab_size=bpe_vocab_size)
        except GvtError as exc:  # the setting at fault; a bug keeps its traceback
            raise DataError(f"data.tokenizer: {exc}") from None
        self._dropped = {split: 0 for split in SPLITS}
        self._truncated = {split: 0 for split in SPLITS}

    def _check_settings(self) -> None:
        carved = [s for s in _HELD_OUT if self.files[s] is None]
        for split in carved:
            fraction = self.fractions[split]
            if not 0 < fraction < 1:
                raise DataError(
                    f"data.{split}_fraction must be in (0, 1) when data.{split} is not given, got {fraction}"
                )
        if sum(self.fractions[s] for s in carved) >= 1:
            raise DataError(
                f"data.val_fraction + data.test_fraction must be < 1 to leave training data, got "
                f"{self.fractions['val']} + {self.fractions['test']}"
            )
        if self.min_freq < 1:
            raise DataError(f"data.min_freq must be >= 1, got {self.min_freq}")
        if self.max_vocab_size is not None and self.max_vocab_size < 1:
            raise DataError(f"data.max_vocab_size must be >= 1 or null, got {self.max_vocab_size}")
        if self.max_len is not None and self.max_len < 1:
            raise DataError(f"data.max_len must be >= 1 or null, got {self.max_len}")
        if self.control_chars not in ("error", "strip"):
            raise DataError(f"data.control_chars must be 'error' or 'strip', got {self.control_chars!r}")
        if self.length_policy not in ("truncate", "drop"):
            raise DataError(f"data.length_policy must be 'truncate' or 'drop', got {self.length_policy!r}")

    @property
    def dropped(self) -> dict[str, int]:
        """Examples removed per split by ``max_len`` with ``length_policy=drop`` (reads the data if needed)."""
        self.prepare()
        return dict(self._dropped)

    @property
    def truncated(self) -> dict[str, int]:
        """Examples shortened per split by ``max_len`` with ``length_policy=truncate``."""
        self.prepare()
        return dict(self._truncated)

    # ---- build -------------------------------------------------------------------------------------------------
    def build(self) -> tuple[dict[str, list[Example]], Vocab]:
        records = self._read_splits()
        labels = sorted({cond for cond, _ in records["train"]}) if self.format == "labeled" else []

        # The tokenizer, like the vocabulary, sees the training split only: nothing of val/test leaks into it.
        train_texts = [text for _, text in records["train"]]
        if self.format == "parallel":
            train_texts += [src for src, _ in records["train"]]
        self.tokenizer.fit(train_texts)

        tokenized = {split: self._limit_length(split, self._tokenize(recs)) for split, recs in records.items()}
        vocab = self._build_vocab(tokenized["train"], labels)
        splits = {split: self._encode(items, vocab) for split, items in tokenized.items()}
        log.info(
            "TextDataModule (%s): %s examples, vocabulary of %d tokens",
            self.format,
            " / ".join(f"{split} {len(splits[split])}" for split in SPLITS),
            len(vocab),
        )
        return splits, vocab

    def _read_splits(self) -> dict[str, list[Record]]:
        records = {split: self._read(split) for split in SPLITS if self.files[split] is not None}
        carved = [split for split in _HELD_OUT if split not in records]
        if carved:
            records.update(self._carve(records["train"], carved))
        if self.format == "labeled":
            known = {cond for cond, _ in records["train"]}
            for split in _HELD_OUT:
                unknown = sorted({cond for cond, _ in records[split]} - known)
                if unknown:
                    raise DataError(
                        f"data.{split} has labels {unknown} that the training data do not have "
                        f"(data.train labels: {sorted(known)})"
                    )
        return records

    def _read(self, split: str) -> list[Record]:
        spec = self.files[split]
        setting = f"data.{split}"
        try:
            if self.format == "lines":
                if not isinstance(spec, (str, os.PathLike)):
                    raise DataError(f"format 'lines' takes one file path, got {spec!r}")
                return [(None, line) for line in read_lines(self._path(spec), self.encoding, self.control_chars)]
            if not isinstance(spec, dict):
                expected = "{src: PATH, tgt: PATH}" if self.format == "parallel" else "{LABEL: PATH, ...}"
                raise DataError(f"format {self.format!r} takes a mapping {expected}, got {spec!r}")
            if self.format == "parallel":
                if set(spec) != {"src", "tgt"}:
                    raise DataError(f"format 'parallel' takes exactly the keys src and tgt, got {sorted(spec)}")
                src, tgt = self._path(spec["src"]), self._path(spec["tgt"])
                if self.swap_src_tgt:
                    src, tgt = tgt, src
                return list(read_parallel(src, tgt, self.encoding, self.control_chars))
            return list(read_labeled({label: self._path(p) for label, p in spec.items()}, self.encoding,
                                     self.control_chars))
        except DataError as exc:
            raise DataError(f"{setting}: {exc}") from None

    def _path(self, path) -> str:
        path = expand_path(path)
        if self.root is not None:
            path = os.path.join(expand_path(self.root), path)
        return path

    def _carve(self, train: list[Record], carved: list[str]) -> dict[str, list[Record]]:
        """Hold out ``carved`` splits from ``train`` (which is replaced by the rest), deterministically."""
        rng = random.Random(self.split_seed)
        # Stratify labeled data by class so a small class is not left out of a held-out split by chance.
        groups: dict[Optional[str], list[int]] = {}
        for i, (cond, _) in enumerate(train):
            groups.setdefault(cond if self.format == "labeled" else None, []).append(i)
        held: dict[str, list[int]] = {split: [] for split in carved}
        for key in sorted(groups, key=str):
            idx = groups[key]
            rng.shuffle(idx)
            start = 0
            for split in carved:
                take = round(len(idx) * self.fractions[split])
                held[split].extend(idx[start : start + take])
                start += take
        taken = {i for idx in held.values() for i in idx}
        out: dict[str, list[Record]] = {}
        for split in carved:
            if not held[split]:
                raise DataError(
                    f"data.{split}_fraction={self.fractions[split]} of {len(train)} training examples leaves the "
                    f"{split} split empty; raise it or give data.{split} files"
                )
            out[split] = [train[i] for i in sorted(held[split])]  # file order, for readable references
        out["train"] = [rec for i, rec in enumerate(train) if i not in taken]
        if not out["train"]:
            raise DataError(f"holding out {carved} leaves no training data; lower data.val_fraction/test_fraction")
        return out

    def _tokenize(self, records: list[Record]) -> list[tuple]:
        tok = self.tokenizer.tokenize
        if self.format == "parallel":
            return [(tok(src), tok(text)) for src, text in records]
        return [(cond, tok(text)) for cond, text in records]

    def _limit_length(self, split: str, items: list[tuple]) -> list[tuple]:
        if self.max_len is None:
            return items
        n = self.max_len
        kept, over = [], 0
        for cond, tgt in items:
            src_over = self.format == "parallel" and len(cond) > n
            if len(tgt) <= n and not src_over:
                kept.append((cond, tgt))
                continue
            over += 1
            if self.length_policy == "truncate":
                kept.append((cond[:n] if self.format == "parallel" else cond, tgt[:n]))
        if self.length_policy == "drop":
            self._dropped[split] = over
            if over:
                log.warning(
                    "data.max_len=%d: dropped %d of %d %s examples longer than that (length_policy=drop)",
                    n, over, len(items), split,
                )
            if not kept:
                raise DataError(f"data.max_len={n} drops every {split} example; raise it or use length_policy=truncate")
        else:
            self._truncated[split] = over
            if over:
                log.info("data.max_len=%d: truncated %d of %d %s examples", n, over, len(items), split)
        return kept

    def _build_vocab(self, train_items: list[tuple], labels: list[str]) -> Vocab:
        reserved = len(SPECIAL_TOKENS) + len(labels)
        if self.max_vocab_size is not None and self.max_vocab_size <= reserved:
            raise DataError(
                f"data.max_vocab_size={self.max_vocab_size} is too small: the {len(SPECIAL_TOKENS)} special tokens "
                f"and {len(labels)} label tokens take {reserved} entries; it must be at least {reserved + 1}"
            )
        def sentences():
            for cond, tgt in train_items:
                yield tgt
                if self.format == "parallel":
                    yield cond

        try:
            return Vocab.build(sentences(), labels=labels, min_freq=self.min_freq, max_size=self.max_vocab_size)
        except GvtError as exc:  # bad words or settings; a bug keeps its traceback
            raise DataError(f"cannot build the vocabulary from data.train: {exc}") from None

    def _encode(self, items: list[tuple], vocab: Vocab) -> list[Example]:
        ids = vocab.encode  # literal "<pad>"/"<unk>" strings in text become UNK there

        if self.format == "lines":
            return [Example([NULL_ID], ids(tgt)) for _, tgt in items]
        if self.format == "parallel":
            return [Example(ids(src), ids(tgt)) for src, tgt in items]
        index = {label: k for k, label in enumerate(vocab.labels)}
        return [Example([vocab.label_id(label)], ids(tgt), index[label]) for label, tgt in items]

    # ---- checkpoints -------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        # The fitted tokenizer rides along so text can be decoded from a checkpoint without the training files.
        return {**super().state_dict(), "tokenizer": self.tokenizer.state_dict()}


__all__ = ["TextDataModule"]
