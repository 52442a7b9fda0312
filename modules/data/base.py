"""The base LightningDataModule every data source derives from.

A subclass only builds its splits (lists of ``Example``), its tokenizer and its vocabulary; batching, seeding
and the checks on batch settings live here once, so a GAN run and a Transformer run on the same config see the
same batches in the same order for the same seed.
"""

from __future__ import annotations

from typing import Callable, Literal, Optional, Sequence

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from modules.data.batch import Batch, Example, collate, pad_sequences
from modules.data.errors import DataError, VocabularyMismatchError
from modules.data.vocab import NULL_ID, PAD_ID, Vocab, WordTokenizer

Condition = Literal["none", "label", "source"]
SPLITS = ("train", "val", "test")


class ExampleDataset(Dataset):
    def __init__(self, examples: Sequence[Example]):
        self.examples = list(examples)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> Example:
        return self.examples[i]


class SequenceDataModule(pl.LightningDataModule):
    """Shared batching for all data sources.

    Args:
        batch_size: training batch size (>= 1; 1 is allowed: the batch-size sweep goes down to one sample).
        eval_batch_size: batch size for validation/test (defaults to ``max(batch_size, 64)``).
        seed: fixes the shuffling order of the training loader (independent of the global RNG, so the model
            family and its initialisation do not change the order of batches).
        drop_last: drop the last incomplete training batch.
        num_workers: DataLoader workers.
    """

    condition: Condition = "none"

    def __init__(
        self,
        batch_size: int = 64,
        eval_batch_size: Optional[int] = None,
        seed: int = 0,
        drop_last: bool = False,
        num_workers: int = 0,
    ):
        super().__init__()
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise DataError(f"data.batch_size must be an integer >= 1, got {batch_size!r}")
        if eval_batch_size is not None and eval_batch_size < 1:
            raise DataError(f"data.eval_batch_size must be >= 1, got {eval_batch_size!r}")
        if num_workers < 0:
            raise DataError(f"data.num_workers must be >= 0, got {num_workers}")
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or max(batch_size, 64)
        self.seed = seed
        self.drop_last = drop_last
        self.num_workers = num_workers
        self._splits: Optional[dict[str, list[Example]]] = None
        self._vocab: Optional[Vocab] = None
        self.tokenizer = WordTokenizer()

    # ---- what a subclass provides -------------------------------------------------------------------------
    def build(self) -> tuple[dict[str, list[Example]], Vocab]:
        """Return the three splits and the vocabulary (built from the training split only)."""
        raise NotImplementedError

    # ---- lazy construction ----------------------------------------------------------------------------------
    def prepare(self) -> None:
        if self._splits is None:
            splits, vocab = self.build()
            for name in SPLITS:
                if not splits.get(name):
                    raise DataError(f"{type(self).__name__}: the {name} split is empty")
            self._splits, self._vocab = splits, vocab

    @property
    def vocab(self) -> Vocab:
        self.prepare()
        return self._vocab

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def num_classes(self) -> int:
        return len(self.vocab.labels)

    def examples(self, split: str) -> list[Example]:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
        self.prepare()
        return self._splits[split]

    @property
    def max_target_length(self) -> int:
        """Longest target (in words) in the training split: the default generation length."""
        return max(len(ex.tgt) for ex in self.examples("train"))

    # ---- Lightning hooks -----------------------------------------------------------------------------------
    def setup(self, stage: Optional[str] = None) -> None:
        self.prepare()
        n_train = len(self._splits["train"])
        if self.drop_last and self.batch_size > n_train:
            raise DataError(
                f"data.batch_size={self.batch_size} is larger than the training split ({n_train} examples) "
                "with drop_last=True: every batch would be dropped"
            )

    def train_dataset(self) -> Dataset:
        """The training examples a loader draws from (a subclass with unlimited data gives an ``EpochDataset``)."""
        return ExampleDataset(self.examples("train"))

    def _loader(self, split: str, batch_size: int, shuffle: bool, drop_last: bool) -> DataLoader:
        dataset = self.train_dataset() if split == "train" else ExampleDataset(self.examples(split))
        sampler = distributed_sampler(dataset, shuffle=shuffle, seed=self.seed, drop_last=drop_last)
        if sampler is None:
            sampler = EpochSampler(len(dataset), seed=self.seed, shuffle=shuffle)
        if isinstance(dataset, EpochDataset):
            sampler = EpochTagged(sampler)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            drop_last=drop_last,
            collate_fn=collate,
            # Its own generator: creating a loader iterator then never draws from the global RNG, so an extra
            # validation pass (e.g. the sanity check of a resumed run) does not shift the training noise.
            generator=torch.Generator().manual_seed(self.seed),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        loader = self._loader("train", self.batch_size, shuffle=True, drop_last=self.drop_last)
        sampler = getattr(loader.sampler, "inner", loader.sampler)
        if isinstance(sampler, EpochSampler):
            sampler.resume_offset = lambda: self._resume_offset(len(loader))
        return loader

    def _resume_offset(self, batches_in_loader: int) -> int:
        """Examples to skip when a run resumed from a mid-epoch checkpoint starts iterating, so it continues with
        the very batch it would have seen next. Asked when iteration starts (the loader may be built before
        the checkpoint is restored, e.g. to count the steps of a schedule)."""
        trainer = getattr(self, "trainer", None)
        if trainer is None or not trainer.fit_loop.restarting:
            return 0
        # training steps of this epoch that ran before the checkpoint was written
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        per_epoch = batches_in_loader
        limit = trainer.limit_train_batches
        if isinstance(limit, int):
            per_epoch = min(per_epoch, limit)
        elif limit is not None and limit < 1.0:
            per_epoch = int(per_epoch * limit)
        return done * self.batch_size if 0 < done < per_epoch else 0  # at an epoch boundary: from the start

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.eval_batch_size, shuffle=False, drop_last=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size, shuffle=False, drop_last=False)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()

    def state_dict(self) -> dict:
        return {"vocab": self.vocab.state_dict()}

    def load_state_dict(self, state_dict: dict) -> None:
        check_same_vocab(Vocab.from_state_dict(state_dict["vocab"]), self.vocab, where="data module state")

    # ---- helpers for evaluation and sampling --------------------------------------------------------------
    def decode(self, ids) -> str:
        return self.tokenizer.detokenize(self.vocab.decode(ids))

    def reference_ids(self, split: str = "test") -> list[list[int]]:
        return [list(ex.tgt) for ex in self.examples(split)]

    def conditions(self, split: str, num: int, *, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """``num`` conditions (src, src_pad_mask, label) to generate from, taken cyclically from ``split``.

        Unconditional data give ``<null>`` conditions; label and source data give the split's own conditions,
        so generated samples can be compared with that split's references.
        """
        exs = self.examples(split)
        picked = [exs[(offset + i) % len(exs)] for i in range(num)]
        src = pad_sequences([ex.src for ex in picked])
        labels = torch.tensor([ex.label for ex in picked]) if all(ex.label >= 0 for ex in picked) else None
        return src, src.eq(PAD_ID), labels


class EpochSampler(Sampler[int]):
    """Shuffles with (seed, epoch) rather than a running generator, so the order of any epoch can be rebuilt,
    and can skip the first examples of its next pass (a run resumed mid-epoch). Lightning calls set_epoch."""

    def __init__(self, num_examples: int, seed: int, shuffle: bool = True):
        self.num_examples, self.seed, self.shuffle = num_examples, seed, shuffle
        self.epoch = 0
        self.resume_offset: Optional[Callable[[], int]] = None  # examples to skip at the start of a pass

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.num_examples, generator=gen).tolist()
        else:
            order = list(range(self.num_examples))
        skip = self.resume_offset() if self.resume_offset is not None else 0
        return iter(order[skip:])

    def __len__(self) -> int:
        return self.num_examples


class EpochDataset(Dataset):
    """A training split that is drawn anew every epoch (data without a fixed size, such as an oracle's): item
    (epoch, i) is example i of that epoch's draw. ``draw(epoch)`` must give the same examples for the same epoch in
    any process (seed it by the epoch), so that loader workers, a resumed run and vectorised seeds all see what one
    uninterrupted run sees. The loader's sampler is wrapped in ``EpochTagged``, which adds the epoch to each index."""

    def __init__(self, size: int, draw: Callable[[int], Sequence[Example]]):
        self.size, self.draw = size, draw
        self._epoch: Optional[int] = None
        self._examples: Sequence[Example] = ()

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, item: tuple[int, int]) -> Example:
        epoch, i = item
        if epoch != self._epoch:  # each process draws an epoch once, when it first reads from it
            self._examples, self._epoch = self.draw(epoch), epoch
        return self._examples[i]


class EpochTagged(Sampler):
    """Yields (epoch, index) for the indices of ``inner``, the epoch being the one Lightning last set."""

    def __init__(self, inner: Sampler):
        self.inner, self.epoch = inner, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if callable(getattr(self.inner, "set_epoch", None)):
            self.inner.set_epoch(epoch)

    def __iter__(self):
        epoch = self.epoch
        return ((epoch, i) for i in self.inner)

    def __len__(self) -> int:
        return len(self.inner)


def distributed_sampler(dataset: Dataset, *, shuffle: bool, seed: int, drop_last: bool):
    """Under DDP: the training split shuffled with the data seed (not the global seed Lightning would use), and
    evaluation splits cut into disjoint shards with no sample repeated to even them out (Lightning's default
    pads shards with repeats, which would count those samples twice in NLL_test). None outside DDP."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    if shuffle:
        return DistributedSampler(dataset, shuffle=True, seed=seed, drop_last=drop_last)
    from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler

    return UnrepeatedDistributedSampler(dataset, shuffle=False)


def null_condition(batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    src = torch.full((batch_size, 1), NULL_ID, dtype=torch.long)
    return src, torch.zeros_like(src, dtype=torch.bool)


def check_same_vocab(saved: Vocab, current: Vocab, where: str) -> None:
    if saved != current:
        only_saved = len(set(saved.itos) - set(current.itos))
        only_current = len(set(current.itos) - set(saved.itos))
        raise VocabularyMismatchError(
            f"the vocabulary in the {where} differs from the data's: {len(saved)} vs {len(current)} tokens "
            f"({only_saved} only in the checkpoint, {only_current} only in the data; fingerprints "
            f"{saved.fingerprint()} vs {current.fingerprint()}). Use the data settings the checkpoint was trained with."
        )


__all__ = ["Batch", "Condition", "ExampleDataset", "SequenceDataModule", "check_same_vocab", "null_condition"]
