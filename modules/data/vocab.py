"""Tokenizers and the vocabulary shared by every model family in a run.

One ``Vocab`` maps token strings to ids for both the GAN and the Transformer, so that both see the same ids.
It is built from the training split only and travels inside every checkpoint (``state_dict``).

Id layout (fixed, so nets and the sampler can rely on it)::

    0 <pad>   1 <bos>   2 <eos>   3 <unk>   4 <null>   5.. label tokens <label:NAME>   then words

``<null>`` is the condition of an unconditional model: its ``src`` is the single token ``<null>``.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable, Sequence

from modules.errors import CheckpointError, ConfigError, DataError

PAD, BOS, EOS, UNK, NULL = "<pad>", "<bos>", "<eos>", "<unk>", "<null>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK, NULL)
PAD_ID, BOS_ID, EOS_ID, UNK_ID, NULL_ID = range(5)


def label_token(label: str) -> str:
    return f"<label:{label}>"


class Vocab:
    """Token <-> id mapping with the fixed special-token layout described in the module docstring."""

    def __init__(self, words: Sequence[str], labels: Sequence[str] = ()):
        self.labels = list(labels)
        self.itos = list(SPECIAL_TOKENS) + [label_token(lab) for lab in self.labels]
        self.num_reserved = len(self.itos)
        reserved = set(self.itos)
        for word in words:
            if word in reserved:
                raise DataError(f"word {word!r} collides with a reserved token of the vocabulary")
            self.itos.append(word)
        self.stoi = {tok: i for i, tok in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise ValueError("vocabulary words must be unique")

    @classmethod
    def build(
        cls,
        sentences: Iterable[Sequence[str]],
        *,
        labels: Sequence[str] = (),
        min_freq: int = 1,
        max_size: int | None = None,
    ) -> "Vocab":
        """Count words over (training) sentences; keep those seen ``min_freq`` times, most frequent first.

        ``max_size`` counts every entry, special and label tokens included, so it is the size of the
        embedding table the models get.
        """
        if min_freq < 1:
            raise ConfigError(f"min_freq must be >= 1, got {min_freq}")
        num_reserved = len(SPECIAL_TOKENS) + len(labels)
        if max_size is not None and max_size <= num_reserved:
            raise ConfigError(
                f"max_vocab_size={max_size} leaves no room for words: the {len(SPECIAL_TOKENS)} special tokens "
                f"and {len(labels)} label tokens already take {num_reserved} entries"
            )
        reserved = set(SPECIAL_TOKENS) | {label_token(lab) for lab in labels}
        # A literal "<unk>" in a corpus (PTB style) is text, not a control token: it is never a word here.
        counts = Counter(tok for sent in sentences for tok in sent if tok not in reserved)
        # Ties broken alphabetically so the vocabulary does not depend on file order.
        ranked = sorted((w for w, c in counts.items() if c >= min_freq), key=lambda w: (-counts[w], w))
        if max_size is not None:
            ranked = ranked[: max_size - num_reserved]
        return cls(ranked, labels=labels)

    def __len__(self) -> int:
        return len(self.itos)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self.itos == other.itos and self.labels == other.labels

    @property
    def num_words(self) -> int:
        return len(self.itos) - self.num_reserved

    @property
    def label_ids(self) -> list[int]:
        return list(range(len(SPECIAL_TOKENS), self.num_reserved))

    @property
    def non_output_ids(self) -> list[int]:
        """Ids a generator must never emit (everything reserved except EOS)."""
        return [i for i in range(self.num_reserved) if i != EOS_ID]

    def label_id(self, label: str) -> int:
        try:
            return self.stoi[label_token(label)]
        except KeyError:
            raise KeyError(f"unknown label {label!r}; this vocabulary knows {self.labels}") from None

    def encode(self, tokens: Sequence[str]) -> list[int]:
        """Words to ids; unknown words and literal reserved strings in text (e.g. "<pad>") become UNK."""
        first_word = self.num_reserved
        return [i if (i := self.stoi.get(tok, UNK_ID)) >= first_word else UNK_ID for tok in tokens]

    def decode(self, ids: Iterable[int], *, strip_special: bool = True) -> list[str]:
        """Ids to tokens; stops at the first EOS and drops PAD/BOS when ``strip_special``."""
        out = []
        for i in ids:
            i = int(i)
            if strip_special:
                if i == EOS_ID:
                    break
                if i in (PAD_ID, BOS_ID):
                    continue
            out.append(self.itos[i] if 0 <= i < len(self.itos) else UNK)
        return out

    def state_dict(self) -> dict:
        return {"words": self.itos[self.num_reserved :], "labels": list(self.labels)}

    @classmethod
    def from_state_dict(cls, state: dict) -> "Vocab":
        return cls(state["words"], labels=state["labels"])

    def fingerprint(self) -> str:
        import hashlib

        return hashlib.sha256("\n".join(self.itos).encode("utf-8")).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"Vocab(size={len(self)}, labels={self.labels}, words={self.num_words})"


class WordTokenizer:
    """Whitespace tokenizer with optional lowercasing (the text-GAN literature's preprocessing)."""

    kind = "word"

    def __init__(self, lowercase: bool = False):
        self.lowercase = lowercase

    def tokenize(self, text: str) -> list[str]:
        return (text.lower() if self.lowercase else text).split()

    def detokenize(self, tokens: Sequence[str]) -> str:
        return " ".join(tokens)

    def fit(self, texts: Iterable[str]) -> "WordTokenizer":
        return self

    def state_dict(self) -> dict:
        return {"kind": self.kind, "lowercase": self.lowercase}


class BPETokenizer:
    """Byte-level BPE (HuggingFace ``tokenizers``) trained on the training split, for raw text.

    Token strings are the BPE pieces; ids still come from ``Vocab`` so both families share one id space.
    """

    kind = "bpe"

    def __init__(self, lowercase: bool = False, vocab_size: int = 8000, tokenizer_json: str | None = None):
        self.lowercase = lowercase
        self.vocab_size = vocab_size
        self._tok = None
        if tokenizer_json is not None:
            from tokenizers import Tokenizer

            self._tok = Tokenizer.from_str(tokenizer_json)

    def fit(self, texts: Iterable[str]) -> "BPETokenizer":
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=self.vocab_size,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
            special_tokens=[],
        )
        prepared = (t.lower() if self.lowercase else t for t in texts)
        tok.train_from_iterator(prepared, trainer=trainer)
        self._tok = tok
        return self

    def _require_fit(self):
        if self._tok is None:
            raise RuntimeError("BPETokenizer used before fit(): train it on the training split first")
        return self._tok

    def tokenize(self, text: str) -> list[str]:
        return self._require_fit().encode(text.lower() if self.lowercase else text).tokens

    def detokenize(self, tokens: Sequence[str]) -> str:
        tok = self._require_fit()
        ids = [tok.token_to_id(t) for t in tokens]
        return tok.decode([i for i in ids if i is not None]).strip()

    def state_dict(self) -> dict:
        return {
            "kind": self.kind,
            "lowercase": self.lowercase,
            "vocab_size": self.vocab_size,
            "tokenizer_json": self._require_fit().to_str(),
        }


def make_tokenizer(kind: str = "word", *, lowercase: bool = False, bpe_vocab_size: int = 8000):
    if kind == "word":
        return WordTokenizer(lowercase=lowercase)
    if kind == "bpe":
        return BPETokenizer(lowercase=lowercase, vocab_size=bpe_vocab_size)
    raise ConfigError(f"unknown tokenizer {kind!r}: choose 'word' or 'bpe'")


def tokenizer_from_state_dict(state: dict):
    kind = state.get("kind")
    if kind == "word":
        return WordTokenizer(lowercase=state["lowercase"])
    if kind == "bpe":
        return BPETokenizer(state["lowercase"], state["vocab_size"], tokenizer_json=state["tokenizer_json"])
    raise CheckpointError(f"checkpoint holds an unknown tokenizer kind {kind!r}")
