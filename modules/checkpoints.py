"""Checkpoints of either family: read safely, load as a model, load into a built model.

Reading refuses a missing, truncated or foreign file with a ``CheckpointError`` that names it; the model classes are
looked up by the family recorded in the checkpoint.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import torch

from modules.errors import CheckpointError
from modules.models import RNNSeq2Seq, TextGAN, TransformerSeq2Seq
from modules.models.base import CHECKPOINT_KEY

__all__ = ["CheckpointError", "family_classes", "load_model", "load_weights", "read_checkpoint"]


def family_classes() -> dict:
    """The model class of each family name a checkpoint records."""
    return {"transformer": TransformerSeq2Seq, "rnn": RNNSeq2Seq, "gan": TextGAN}


def read_checkpoint(path: str) -> dict:
    """Load a checkpoint dict as safely as torch allows: ``weights_only=True`` (no arbitrary pickled code)."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist" if not p.exists() else f"checkpoint {path} is not a file")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as err:
        raise CheckpointError(f"checkpoint {path} is unreadable (truncated or not a torch checkpoint): {err}") from None
    except Exception as err:  # weights_only refused a pickled object: not one of ours
        raise CheckpointError(f"checkpoint {path} holds objects that cannot be loaded safely: {err}") from None


def load_model(path: str, map_location: str = "cpu"):
    """Any checkpoint of either family, with its vocabulary and tokenizer restored."""
    ckpt = read_checkpoint(path)
    info = ckpt.get(CHECKPOINT_KEY)
    if info is None or "state_dict" not in ckpt:
        raise CheckpointError(f"checkpoint {path} was not written by gan-vs-transformer (no vocabulary in it)")
    classes = family_classes()
    family = info.get("family")
    if family not in classes:
        raise CheckpointError(f"checkpoint {path} is of unknown family {family!r}; known: {sorted(classes)}")
    model = classes[family].load_from_checkpoint(path, map_location=map_location, weights_only=True)
    model.eval()
    return model


def load_weights(model, path: str) -> None:
    """Weights, vocabulary and tokenizer of a checkpoint into a built ``model`` of the same family and shape (the
    checkpoint's family and vocabulary are checked by the model's ``on_load_checkpoint``)."""
    ckpt = read_checkpoint(path)
    if "state_dict" not in ckpt:
        raise CheckpointError(f"checkpoint {path} holds no model weights (no state_dict)")
    model.on_load_checkpoint(ckpt)
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as err:
        raise CheckpointError(f"checkpoint {path} does not fit this model's settings: {err}") from None
