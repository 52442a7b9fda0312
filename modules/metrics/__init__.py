"""torchmetrics Metrics shared by both model families, all exact under DDP.

Text samples are lists of token ids with BOS/EOS/PAD removed by the caller.

- BLEU, SelfBLEU: the text-GAN literature's (Texygen / NLTK method1) BLEU-n and Self-BLEU-n, fast.
- DistinctN: distinct-n, average length, fraction of unique samples.
- SequenceNLL: NLL_oracle / NLL_test, per token and per sentence.
"""

from modules.metrics.bleu import (
    BLEU,
    ReferenceIndex,
    SelfBLEU,
    TokenSequenceMetric,
    corpus_avg_bleu,
    flatten_sequences,
    self_bleu,
    self_bleu_scores,
    unflatten_sequences,
)
from modules.metrics.diversity import DistinctN, distinct_ngram_counts
from modules.metrics.nll import SequenceNLL

__all__ = [
    "BLEU",
    "SelfBLEU",
    "DistinctN",
    "SequenceNLL",
    "ReferenceIndex",
    "TokenSequenceMetric",
    "corpus_avg_bleu",
    "self_bleu",
    "self_bleu_scores",
    "distinct_ngram_counts",
    "flatten_sequences",
    "unflatten_sequences",
]
