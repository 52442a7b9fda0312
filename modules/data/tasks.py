"""Sequence tasks with known answers: copy, reverse and sort of random token sequences.

Every source is a random sequence of task words ``t0 .. t{num_words-1}`` (uniform, with repetition, or with
``distinct=True`` without: no word twice in a source), of a length drawn uniformly from a range; the target is the
source copied, reversed or sorted (by word index). The batch contract is the shared one: ``src`` = the input
sequence, ``tgt`` = BOS output EOS.

The true alignment (which source position each output word comes from) is known, so attention can be scored against
it (``alignment``). Copy and reverse are *positional* tasks: their alignment is a function of the position alone
(the diagonal, the anti-diagonal), the same for every source of a length, so a model could follow it without
reading the words. Sort is a *content* task: where the t-th smallest word sits depends on the words, and with
distinct words the source order is a random permutation, so no fixed position beats chance. Its alignment is
unique only with distinct words (two equal words could be read from either position), so it is refused without.

The task itself is scored by greedy decoding through the shared sampler (``greedy_task_scores``: exact match and
token accuracy per example).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Optional, Sequence

import torch

from modules.data.base import SequenceDataModule
from modules.data.batch import Example, pad_sequences
from modules.data.errors import DataError
from modules.data.vocab import PAD_ID, Vocab
from modules.errors import ConfigError

TASKS = ("copy", "reverse", "sort")
POSITIONAL_TASKS = ("copy", "reverse")  # alignment fixed by position alone (module docstring)
CONTENT_TASKS = ("sort",)  # alignment fixed by the words


def task_target(task: str, source: Sequence[int]) -> list[int]:
    """The answer to ``task`` for ``source`` (ids whose order is the word order t0 < t1 < ...)."""
    if task == "copy":
        return list(source)
    if task == "reverse":
        return list(reversed(source))
    if task == "sort":
        return sorted(source)
    raise ConfigError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")


def task_alignment(task: str, source: Sequence[int], distinct: bool) -> list[int]:
    """For each output word position t, the source position it is a copy of: copy t, reverse L-1-t, sort the
    position of the t-th smallest word (refused unless the words of a source are ``distinct``)."""
    if task == "copy":
        return list(range(len(source)))
    if task == "reverse":
        return list(range(len(source) - 1, -1, -1))
    if task == "sort":
        if not distinct:
            raise ConfigError("the 'sort' task has no unique true alignment unless data.distinct is true (equal "
                              "words may be swapped)")
        return sorted(range(len(source)), key=lambda j: source[j])
    raise ConfigError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")


class TaskDataModule(SequenceDataModule):
    """Copy, reverse or sort random token sequences (condition ``source``).

    Args:
        task: ``copy``, ``reverse`` or ``sort``.
        num_words: the task's vocabulary, words ``t0 .. t{num_words-1}`` (the model vocabulary adds the 5
            special tokens).
        min_len, max_len: source lengths, drawn uniformly from [min_len, max_len] for the training and
            validation splits.
        test_min_len, test_max_len: the test split's length range (default: the training range); a longer range
            tests length generalisation.
        distinct: no word twice within a source (drawn without replacement), so each output word comes from one
            source position and every task's alignment is unique (sort needs it for one). Lengths must then be at
            most ``num_words``.
        num_train, num_val, num_test: examples per split. No source occurs twice in the whole data set, so every
            validation and test example is unseen in training; too small a sequence space is refused.
        task_seed: seed of the generated splits (the data; ``seed`` is the training loader's shuffling).
    """

    condition = "source"

    def __init__(
        self,
        task: Literal["copy", "reverse", "sort"] = "copy",
        num_words: int = 20,
        min_len: int = 4,
        max_len: int = 12,
        test_min_len: Optional[int] = None,
        test_max_len: Optional[int] = None,
        num_train: int = 5000,
        num_val: int = 500,
        num_test: int = 1000,
        task_seed: int = 0,
        distinct: bool = False,
        batch_size: int = 64,
        eval_batch_size: Optional[int] = None,
        seed: int = 0,
        drop_last: bool = False,
        num_workers: int = 0,
    ):
        super().__init__(batch_size, eval_batch_size, seed, drop_last, num_workers)
        if task not in TASKS:
            raise DataError(f"data.task must be one of {', '.join(TASKS)}, got {task!r}")
        if num_words < 2:
            raise DataError(f"data.num_words must be >= 2, got {num_words}")
        test_min_len = min_len if test_min_len is None else test_min_len
        test_max_len = max_len if test_max_len is None else test_max_len
        for lo_name, lo, hi_name, hi in (("min_len", min_len, "max_len", max_len),
                                         ("test_min_len", test_min_len, "test_max_len", test_max_len)):
            if lo < 1:
                raise DataError(f"data.{lo_name} must be >= 1, got {lo}")
            if hi < lo:
                raise DataError(f"data.{hi_name} ({hi}) must be >= data.{lo_name} ({lo})")
        for name, value in (("num_train", num_train), ("num_val", num_val), ("num_test", num_test)):
            if value < 1:
                raise DataError(f"data.{name} must be >= 1, got {value}")
        self.task = task
        self.num_words = num_words
        self.length_range = (min_len, max_len)
        self.test_length_range = (test_min_len, test_max_len)
        self.num_train, self.num_val, self.num_test = num_train, num_val, num_test
        self.task_seed = task_seed
        self.distinct = bool(distinct)
        if self.distinct and max(max_len, test_max_len) > num_words:
            raise DataError(f"data.distinct needs sources of at most data.num_words={num_words} words, but the "
                            f"lengths reach {max(max_len, test_max_len)}")
        self._check_space()

    def _check_space(self) -> None:
        """Unique sources are drawn by rejection: refuse settings that leave too few distinct sequences."""
        def space(lo: int, hi: int) -> int:
            if self.distinct:
                return sum(math.perm(self.num_words, n) for n in range(lo, hi + 1))
            return sum(self.num_words ** n for n in range(lo, hi + 1))

        train_val = self.num_train + self.num_val
        if train_val > space(*self.length_range) // 2 or self.num_test > space(*self.test_length_range) // 2:
            raise DataError(
                f"data.num_words={self.num_words} with lengths {self.length_range} (test {self.test_length_range}) "
                f"has too few distinct sequences for {self.num_train}+{self.num_val}+{self.num_test} unique examples; "
                "raise num_words or the lengths, or lower the split sizes")

    @property
    def max_target_length(self) -> int:
        """The longest target any split may hold (the configured ranges): generation must reach the test's."""
        return max(self.length_range[1], self.test_length_range[1])

    def _make_vocab(self) -> Vocab:
        return Vocab([f"t{k}" for k in range(self.num_words)])

    def build(self):
        vocab = self._make_vocab()
        offset = vocab.num_reserved  # word t{k} has id offset + k, so sorting ids sorts words
        gen = torch.Generator().manual_seed(self.task_seed)
        seen: set[tuple[int, ...]] = set()
        splits = {}
        for split, n, (lo, hi) in (("train", self.num_train, self.length_range),
                                   ("val", self.num_val, self.length_range),
                                   ("test", self.num_test, self.test_length_range)):
            examples = []
            while len(examples) < n:
                length = int(torch.randint(lo, hi + 1, (1,), generator=gen))
                if self.distinct:
                    words = torch.randperm(self.num_words, generator=gen)[:length]
                else:
                    words = torch.randint(self.num_words, (length,), generator=gen)
                source = tuple((words + offset).tolist())
                if source in seen:
                    continue
                seen.add(source)
                examples.append(Example(list(source), task_target(self.task, source)))
            splits[split] = examples
        return splits, vocab

    def alignment(self, source: Sequence[int]) -> list[int]:
        """For each output word position t of ``source``'s target, the source position it is a copy of (copy: t;
        reverse: L-1-t; sort: where the t-th smallest word is, which needs ``distinct``)."""
        return task_alignment(self.task, source, self.distinct)

    def true_alignment(self, src_len: int) -> list[int]:
        """The alignment of a positional task (copy, reverse) from the source length alone; sort's depends on the
        words (``alignment(source)``)."""
        if self.task not in POSITIONAL_TASKS:
            raise ConfigError(f"the {self.task!r} task's alignment depends on the words, not the length alone: use "
                              "alignment(source)")
        return task_alignment(self.task, [0] * src_len, self.distinct)


# ---- scoring a model on a task --------------------------------------------------------------------------------

@dataclass
class TaskScores:
    """Per-example scores (so seed intervals and length buckets can be built from them)."""
    exact_match: torch.Tensor  # (N,) 1.0 where the greedy output equals the target exactly, else 0.0
    token_accuracy: torch.Tensor  # (N,) fraction of the target's positions (words + EOS) predicted right
    src_len: torch.Tensor  # (N,) source length of each example


def score_predictions(predictions: Sequence[Sequence[int]], ended: Sequence[bool],
                      targets: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact match and token accuracy (N,) of predicted word ids against target word ids (both without BOS/EOS).

    ``ended[i]``: prediction i stopped with an EOS. Token accuracy counts the n target words and the EOS: word t
    is right when the prediction has the target's word at position t, and the EOS is right when the prediction
    stopped exactly after n words. Exact match: the prediction stopped and equals the target.
    """
    exact, accuracy = [], []
    for pred, stopped, target in zip(predictions, ended, targets, strict=True):
        pred, target = list(pred), list(target)
        words_right = sum(p == t for p, t in zip(pred, target))
        eos_right = bool(stopped) and len(pred) == len(target)
        accuracy.append((words_right + eos_right) / (len(target) + 1))
        exact.append(float(eos_right and pred == target))
    return torch.tensor(exact), torch.tensor(accuracy)


@torch.no_grad()
def greedy_task_scores(model, dm: TaskDataModule, split: str = "test", batch_size: int = 256,
                       max_examples: Optional[int] = None) -> TaskScores:
    """Greedy decoding of ``split``'s sources through the shared sampler, scored against the targets.

    ``model``: a LightningModule with a ``generator`` net, or such a net itself. Each output may run one word
    past the longest target of its batch, so an output that fails to stop is scored as such."""
    from modules.sampling import generate

    net = getattr(model, "generator", model)
    device = next(net.parameters()).device
    examples = dm.examples(split)[:max_examples]
    was_training = net.training
    net.eval()
    predictions, ended = [], []
    try:
        for start in range(0, len(examples), batch_size):
            chunk = examples[start:start + batch_size]
            src = pad_sequences([ex.src for ex in chunk]).to(device)
            out = generate(net, src, src.eq(PAD_ID), max_new_tokens=max(len(ex.tgt) for ex in chunk) + 1,
                           greedy=True, banned_ids=dm.vocab.non_output_ids)
            predictions += [row[:n] for row, n in zip(out.tokens.tolist(), out.lengths.tolist())]
            ended += out.ended.tolist()
    finally:
        net.train(was_training)
    exact, accuracy = score_predictions(predictions, ended, [ex.tgt for ex in examples])
    return TaskScores(exact, accuracy, torch.tensor([len(ex.src) for ex in examples]))
