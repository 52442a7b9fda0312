"""The LightningModules: a thin layer over modules/nets, one per model family."""

from modules.models.base import GeneratorModule, mle_loss
from modules.models.text_gan import TextGAN
from modules.models.transformer_seq2seq import TransformerSeq2Seq

__all__ = ["GeneratorModule", "TextGAN", "TransformerSeq2Seq", "mle_loss"]
