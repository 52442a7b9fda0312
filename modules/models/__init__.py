"""The LightningModules: a thin layer over modules/nets, one per model family."""

from modules.models.base import GeneratorModule, mle_loss
from modules.models.rnn_seq2seq import RNNSeq2Seq
from modules.models.text_gan import TextGAN
from modules.models.transformer_seq2seq import TransformerSeq2Seq

__all__ = ["GeneratorModule", "RNNSeq2Seq", "TextGAN", "TransformerSeq2Seq", "mle_loss"]
