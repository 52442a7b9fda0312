"""C4's data: MR and the general corpus tokenised once into one prepared file, the balanced label subsets, and the
data module the runs read (experiments.c4_transfer.transfer)."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Optional, Sequence

from experiments.c4_transfer.settings import DATA_FILE, TransferSettings
from experiments.core.specs import config_hash
from modules.data.base import SequenceDataModule
from modules.errors import ConfigError, GvtError
from modules.files import atomic_open


# ---- data ----------------------------------------------------------------------------------------------------


def _data_hash(settings: TransferSettings) -> str:
    return config_hash({"data": settings.data})


def prepare_data(settings: TransferSettings, out: Path, echo=print) -> Path:
    """Tokenizer, vocabulary and token ids of every corpus, once per data setting, cached as
    ``OUT/data/<hash>/prepared.pt``; returns that path."""
    import torch

    from modules.data.corpora import read_lines
    from modules.data.text_datamodule import TextDataModule
    from modules.data.vocab import Vocab, make_tokenizer

    path = Path(out) / "data" / _data_hash(settings) / DATA_FILE
    if path.exists():
        return path
    d = settings.data
    start = time.perf_counter()
    try:
        general = [line for p in d["general"] for line in read_lines(p, d["general_encoding"])]
    except GvtError as err:
        raise ConfigError(f"transfer.data.general: {err}") from None
    general = general[: d["max_general"]]
    if not 0 <= d["general_val"] < len(general):
        raise ConfigError(f"transfer.data.general_val={d['general_val']} must lie in [0, {len(general)}) (the general "
                          "sentences read)")
    # pretraining's validation sentences: a seeded draw, so both corpora are in it, never trained on
    held = set(random.Random(d["split_seed"]).sample(range(len(general)), d["general_val"]))
    general_val = [text for i, text in enumerate(general) if i in held]
    general = [text for i, text in enumerate(general) if i not in held]
    # MR's fixed split: TextDataModule's stratified carving (split_seed), the package's one held-out rule
    mr_module = TextDataModule(train=dict(d["mr"]), format="labeled", encoding=d["mr_encoding"],
                               val_fraction=d["val_fraction"], test_fraction=d["test_fraction"],
                               split_seed=d["split_seed"])
    try:
        mr = mr_module._read_splits()  # {split: [(label, sentence)]}, before any tokenizer sees them
    except GvtError as err:
        raise ConfigError(f"transfer.data.mr: {err}") from None
    mr["train"] = _interleaved_prefix(mr["train"], d["max_mr_train"])
    mr["test"] = _interleaved_prefix(mr["test"], d["max_mr_test"])
    labels = sorted({label for label, _ in mr["train"]})
    if len(labels) < 2:
        raise ConfigError(f"transfer.data.mr: the training split has only the labels {labels}; two are needed")

    tokenizer = make_tokenizer(d["tokenizer"], lowercase=d["lowercase"], bpe_vocab_size=d["bpe_vocab_size"])
    # one tokenizer and vocabulary for the language model and the classifiers, from training text only
    tokenizer.fit(general + [text for _, text in mr["train"]])
    n = d["max_len"]
    tok = lambda text: tokenizer.tokenize(text)[:n]  # noqa: E731
    general_tokens = [tok(text) for text in general]
    general_val_tokens = [tok(text) for text in general_val]
    mr_tokens = {split: [(label, tok(text)) for label, text in recs] for split, recs in mr.items()}
    vocab = Vocab.build(general_tokens + [t for _, t in mr_tokens["train"]], labels=labels, min_freq=d["min_freq"])
    index = {label: k for k, label in enumerate(vocab.labels)}
    prepared = {
        "vocab": vocab.state_dict(),
        "tokenizer": tokenizer.state_dict(),
        "general": [vocab.encode(t) for t in general_tokens if t],
        "general_val": [vocab.encode(t) for t in general_val_tokens if t],
        "mr": {split: [(index[label], vocab.encode(t)) for label, t in items if t] for split, items in mr_tokens.items()},
    }
    with atomic_open(path, "wb") as f:
        torch.save(prepared, f)
    sizes = ", ".join(f"{split} {len(v)}" for split, v in prepared["mr"].items())
    echo(f"transfer: data prepared in {time.perf_counter() - start:.1f}s: {len(prepared['general'])} general "
         f"sentences (+ {len(prepared['general_val'])} held out), MR {sizes}, vocabulary {len(vocab)} ({d['tokenizer']}) -> {path}")
    return path


def _interleaved_prefix(records: list, n: Optional[int]) -> list:
    """The first n records taken in turn from each label (records come grouped by label), in their file order;
    all of them for None. Caps a split without leaving a class out."""
    if n is None or n >= len(records):
        return list(records)
    by_label: dict = {}
    for i, (label, _) in enumerate(records):
        by_label.setdefault(label, []).append(i)
    turns = sorted((rank, label, i) for label, idx in by_label.items() for rank, i in enumerate(idx))
    return [records[i] for i in sorted(i for _, _, i in turns[:n])]


_PREPARED: dict[str, dict] = {}


def load_prepared(path: Path) -> dict:
    import torch

    key = str(path)
    if key not in _PREPARED:  # once per worker process
        _PREPARED[key] = torch.load(path, weights_only=True)
    return _PREPARED[key]


def balanced_subset(train: list[tuple[int, list[int]]], n: Optional[int], seed: int) -> list[tuple[int, list[int]]]:
    """n examples of the training split, n/2 per class, seeded by ``seed`` and nested (the subset of n is the
    start of the subset of any larger n for the same seed); None: the whole split."""
    if n is None:
        return list(train)
    by_class: dict[int, list[int]] = {}
    for i, (label, _) in enumerate(train):
        by_class.setdefault(label, []).append(i)
    per_class = n // len(by_class)
    picked = []
    for label in sorted(by_class):
        idx = by_class[label]
        if per_class > len(idx):
            raise ConfigError(f"transfer.label_sizes: {n} labelled examples need {per_class} of class {label}, but "
                              f"the MR training split has {len(idx)}")
        order = list(idx)
        random.Random(seed * 1009 + label).shuffle(order)
        picked += order[:per_class]
    return [train[i] for i in sorted(picked)]


class PreparedData(SequenceDataModule):
    """Splits already encoded with the ablation's one vocabulary; batching and seeding are the package's."""

    def __init__(self, splits: dict, vocab, batch_size: int, seed: int, eval_batch_size: int):
        super().__init__(batch_size=batch_size, eval_batch_size=eval_batch_size, seed=seed)
        self._given = (splits, vocab)

    def build(self):
        return self._given


def _lm_examples(sentences: Sequence[list[int]]):
    from modules.data.batch import Example
    from modules.data.vocab import NULL_ID

    return [Example([NULL_ID], ids) for ids in sentences]


def _labelled_examples(items: Sequence[tuple[int, list[int]]]):
    from modules.data.batch import Example
    from modules.data.vocab import NULL_ID

    # src stays <null>: the classifier reads only tgt, and no label token may sit anywhere in its batch
    return [Example([NULL_ID], ids, label) for label, ids in items]
