"""The LightningModules: a thin layer over modules/nets, one per model family."""

from modules.models.base import GeneratorModule, mle_loss
from modules.models.transformer_seq2seq import TransformerSeq2Seq

__all__ = ["GeneratorModule", "TransformerSeq2Seq", "mle_loss"]
