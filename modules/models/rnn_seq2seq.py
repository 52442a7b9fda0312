"""The RNN family: an LSTM encoder-decoder trained like the Transformer, by maximum likelihood with one loss.

It is the lecture's step before the Transformer: the same data, the same loss, the same optimiser rule, the same
shared evaluation, with a recurrent net instead (``attention: none`` for the classic context-vector seq2seq,
``additive`` or ``dot`` for attention over every encoder state). So a comparison of the two MLE families isolates
the architecture.
"""

from __future__ import annotations

from typing import Literal

from modules.errors import ConfigError
from modules.models.base import GeneratorModule
from modules.models.configs import EvaluationConfig, config_dict
from modules.models.transformer_seq2seq import TransformerSeq2Seq, check_mle_settings
from modules.nets.rnn_seq2seq import ATTENTION_KINDS, LSTMSeq2Seq, RNNSeq2SeqConfig


class RNNSeq2Seq(GeneratorModule):
    """LSTM encoder-decoder, one loss: token cross-entropy with teacher forcing (padding ignored).

    Net: ``emb_dim``, ``hidden_dim``, ``num_layers`` (encoder and decoder), ``dropout``, ``attention``
    (``none`` | ``additive`` | ``dot``; see modules/nets/rnn_seq2seq.py).

    Training, logging and optimiser are the MLE family's own, shared with ``TransformerSeq2Seq`` method for method:
    ``train/loss`` (= ``train/mle_loss``, mean NLL per target token), ``train/grad_norm``, ``optimizer`` (adamw or
    adam) with ``lr``, ``betas``, ``weight_decay`` on matrices only, linear warmup then constant or cosine
    schedule, gradients clipped by norm at ``gradient_clip``; plus the shared evaluation of ``GeneratorModule``
    (its ``evaluation`` section).
    """

    family = "rnn"  # the checkpoint's family, whatever the attention (the experiments' names: rnn, rnn-attention)

    def __init__(
        self,
        vocab_size: int,
        emb_dim: int = 64,
        hidden_dim: int = 128,
        num_layers: int = 1,
        dropout: float = 0.1,
        attention: Literal["none", "additive", "dot"] = "none",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        warmup_steps: int = 0,
        schedule: Literal["constant", "cosine"] = "constant",
        label_smoothing: float = 0.0,
        gradient_clip: float = 1.0,
        optimizer: Literal["adam", "adamw"] = "adamw",
        evaluation: EvaluationConfig = EvaluationConfig(),
    ):
        super().__init__(vocab_size, evaluation)
        if attention not in ATTENTION_KINDS:
            raise ConfigError(f"model.attention must be one of {', '.join(ATTENTION_KINDS)}, got {attention!r}")
        for name, value in (("emb_dim", emb_dim), ("hidden_dim", hidden_dim), ("num_layers", num_layers)):
            if value < 1:
                raise ConfigError(f"model.{name} must be >= 1, got {value}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"model.dropout must lie in [0, 1), got {dropout}")
        check_mle_settings(lr, label_smoothing, warmup_steps, optimizer, weight_decay, gradient_clip)
        self.save_hyperparameters(ignore=["evaluation"])
        self.save_hyperparameters({"evaluation": config_dict(self.evaluation)})  # a plain dict, as every family's
        self.generator = LSTMSeq2Seq(
            RNNSeq2SeqConfig(vocab_size=vocab_size, emb_dim=emb_dim, hidden_dim=hidden_dim, num_layers=num_layers,
                             dropout=dropout, attention=attention)
        )

    # The MLE family's training is one piece of code: these are the Transformer family's very methods, so the
    # two families differ in their net alone (both read self.generator and self.hparams only).
    draw_noise = TransformerSeq2Seq.draw_noise
    training_loss = TransformerSeq2Seq.training_loss
    training_step = TransformerSeq2Seq.training_step
    on_before_optimizer_step = TransformerSeq2Seq.on_before_optimizer_step
    generator_optimizer_settings = TransformerSeq2Seq.generator_optimizer_settings
    configure_optimizers = TransformerSeq2Seq.configure_optimizers
