"""The one batch type every data module yields and every model family consumes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Optional, Sequence

import torch

from modules.data.vocab import BOS_ID, EOS_ID, PAD_ID


class Example(NamedTuple):
    """One item of a dataset, before padding.

    ``src``: condition ids (a source sentence, a single label token, or ``[NULL_ID]``);
    ``tgt``: target word ids without BOS/EOS (collate adds them); ``label``: class index or -1.
    """

    src: list[int]
    tgt: list[int]
    label: int = -1


@dataclass
class Batch:
    src: torch.Tensor  # (B, S) condition ids, PAD-padded
    tgt: torch.Tensor  # (B, T) BOS ... EOS, PAD-padded
    src_pad_mask: torch.Tensor  # (B, S) True at padding
    tgt_pad_mask: torch.Tensor  # (B, T) True at padding
    label: Optional[torch.Tensor] = None  # (B,) class index, present when the data have labels

    def __len__(self) -> int:
        return self.tgt.size(0)

    @property
    def tgt_in(self) -> torch.Tensor:
        return self.tgt[:, :-1]  # (B, T-1) decoder input (teacher forcing)

    @property
    def tgt_out(self) -> torch.Tensor:
        return self.tgt[:, 1:]  # (B, T-1) next-token targets

    @property
    def num_target_tokens(self) -> torch.Tensor:
        """(B,) scored tokens per sentence: the words plus EOS (BOS is given, not predicted)."""
        return (~self.tgt_pad_mask[:, 1:]).sum(dim=1)

    def to(self, device) -> "Batch":
        return Batch(
            *(t.to(device) for t in (self.src, self.tgt, self.src_pad_mask, self.tgt_pad_mask)),
            label=None if self.label is None else self.label.to(device),
        )


def pad_sequences(seqs: Sequence[Sequence[int]], pad_id: int = PAD_ID) -> torch.Tensor:
    width = max(len(s) for s in seqs)
    out = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
    return out


def collate(examples: Sequence[Example]) -> Batch:
    src = pad_sequences([ex.src for ex in examples])
    tgt = pad_sequences([[BOS_ID, *ex.tgt, EOS_ID] for ex in examples])
    labels = [ex.label for ex in examples]
    has_labels = all(lab >= 0 for lab in labels)
    return Batch(
        src=src,
        tgt=tgt,
        src_pad_mask=src.eq(PAD_ID),
        tgt_pad_mask=tgt.eq(PAD_ID),
        label=torch.tensor(labels, dtype=torch.long) if has_labels else None,
    )
