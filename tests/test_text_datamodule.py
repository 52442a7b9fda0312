"""TextDataModule: the user's own text files as batches for both model families."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import pytest
import torch

from modules.data.errors import DataError
from modules.data.text_datamodule import TextDataModule
from modules.data.vocab import BPETokenizer, NULL_ID, PAD_ID, UNK_ID

WORDS = "the a cat dog sat ran on under mat log big small red blue quickly slowly".split()


def write(path: Path, lines) -> str:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return str(path)


def sentences(n: int, seed: int = 0, min_len: int = 3, max_len: int = 8) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(min_len, max_len))) for _ in range(n)]


def texts(dm: TextDataModule, split: str) -> list[str]:
    return [" ".join(dm.vocab.decode(ex.tgt)) for ex in dm.examples(split)]


@pytest.fixture
def lines_file(tmp_path) -> str:
    return write(tmp_path / "train.txt", sentences(200))


# ---- the shared corpora through the data module ------------------------------------------------------------------


def test_coco_test_file_given_val_carved_from_train(shared_data):
    dm = TextDataModule(train="coco/train.txt", test="coco/test.txt", root=str(shared_data))
    dm.setup("fit")
    assert dm.condition == "none"
    assert {s: len(dm.examples(s)) for s in ("train", "val", "test")} == {"train": 9_000, "val": 1_000, "test": 10_000}
    assert all(ex.src == [NULL_ID] for ex in dm.examples("train"))


def test_multi30k_de_to_en_word_level(shared_data):
    d = shared_data / "multi30k"

    def pair(split):
        return {"src": str(d / f"{split}.de.gz"), "tgt": str(d / f"{split}.en.gz")}

    dm = TextDataModule(format="parallel", train=pair("train"), val=pair("val"), test=pair("test_2016_flickr"))
    assert {s: len(dm.examples(s)) for s in ("train", "val", "test")} == {"train": 29_000, "val": 1_014, "test": 1_000}
    assert dm.condition == "source"
    first = dm.examples("train")[0]
    assert dm.decode(first.src).startswith("Zwei junge weiße Männer")
    assert dm.decode(first.tgt).startswith("Two young, White males")


def test_mr_labeled_latin1_stratified_split(shared_data):
    d = shared_data / "mr"
    dm = TextDataModule(
        format="labeled", train={"pos": str(d / "rt-polarity.pos"), "neg": str(d / "rt-polarity.neg")}, encoding="latin-1"
    )
    assert dm.condition == "label" and dm.vocab.labels == ["neg", "pos"] and dm.num_classes == 2
    for split, per_class in (("train", 4_265), ("val", 533), ("test", 533)):
        labels = [ex.label for ex in dm.examples(split)]
        assert labels.count(0) == labels.count(1) == per_class, split


# ---- settings and bad input -----------------------------------------------------------------------------------------


def test_batch_size_zero(lines_file):
    with pytest.raises(DataError, match="data.batch_size must be an integer >= 1"):
        TextDataModule(train=lines_file, batch_size=0)


def test_batch_size_larger_than_data_with_drop_last_fails_at_setup(lines_file):
    dm = TextDataModule(train=lines_file, batch_size=1_000, drop_last=True)
    with pytest.raises(DataError, match="data.batch_size=1000 is larger than the training split"):
        dm.setup("fit")


def test_max_vocab_size_smaller_than_reserved_tokens(lines_file):
    with pytest.raises(DataError, match=r"data.max_vocab_size=5 is too small.*at least 6"):
        TextDataModule(train=lines_file, max_vocab_size=5).setup("fit")


def test_max_vocab_size_counts_label_tokens(tmp_path):
    files = {"a": write(tmp_path / "a", sentences(30, 1)), "b": write(tmp_path / "b", sentences(30, 2))}
    with pytest.raises(DataError, match=r"data.max_vocab_size=7 is too small.*2 label tokens.*at least 8"):
        TextDataModule(format="labeled", train=files, max_vocab_size=7).setup()
    assert len(TextDataModule(format="labeled", train=files, max_vocab_size=10).vocab) == 10


def test_missing_train_file_names_the_setting(tmp_path):
    with pytest.raises(DataError, match=r"data.train: .*missing\.txt: no such file"):
        TextDataModule(train=str(tmp_path / "missing.txt")).setup()


def test_directory_as_train_names_the_setting(tmp_path):
    with pytest.raises(DataError, match="data.train: .*is a directory"):
        TextDataModule(train=str(tmp_path)).setup()


def test_undecodable_train_file_names_setting_line_and_encoding(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes(b"ok\nna\xefve\n")
    with pytest.raises(DataError, match=r"data.train: .*line 2 is not valid utf-8.*data.encoding"):
        TextDataModule(train=str(path)).setup()
    dm = TextDataModule(train=str(path), val=str(path), test=str(path), encoding="latin-1")
    assert dm.decode(dm.examples("train")[1].tgt) == "naïve"


def test_nul_byte_in_a_train_file_names_setting_file_line_and_column(tmp_path):
    """A NUL byte used to load into a token 'riding\\x00'."""
    path = tmp_path / "t.txt"
    path.write_bytes(b"a man riding\x00 a horse\nok\n")
    with pytest.raises(DataError, match=r"data.train: .*t\.txt: line 1, column 13 holds U\+0000 \(NUL\)"):
        TextDataModule(train=str(path)).setup()


def test_control_chars_strip_setting_deletes_them_before_tokenizing(tmp_path):
    path = write(tmp_path / "t.txt", [s.replace(" ", "\x00 ", 1) for s in sentences(50)])
    dm = TextDataModule(train=path, control_chars="strip")
    assert not any("\x00" in token for token in dm.vocab.itos)
    assert texts(dm, "train")[0] in sentences(50)


def test_files_must_match_the_format(tmp_path, lines_file):
    with pytest.raises(DataError, match="format 'lines' takes one file path"):
        TextDataModule(train={"src": lines_file, "tgt": lines_file}).setup()
    with pytest.raises(DataError, match=r"format 'parallel' takes a mapping \{src: PATH, tgt: PATH\}"):
        TextDataModule(format="parallel", train=lines_file).setup()
    with pytest.raises(DataError, match="exactly the keys src and tgt"):
        TextDataModule(format="parallel", train={"source": lines_file, "tgt": lines_file}).setup()


def test_labeled_held_out_label_unknown_to_training(tmp_path):
    train = {"a": write(tmp_path / "a", sentences(20, 1)), "b": write(tmp_path / "b", sentences(20, 2))}
    test = {"c": write(tmp_path / "c", sentences(5, 3))}
    with pytest.raises(DataError, match=r"data.test has labels \['c'\]"):
        TextDataModule(format="labeled", train=train, test=test).setup()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(val_fraction=0.0), "data.val_fraction must be in"),
        (dict(val_fraction=0.6, test_fraction=0.5), "must be < 1"),
        (dict(max_len=0), "data.max_len must be >= 1"),
        (dict(min_freq=0), "data.min_freq must be >= 1"),
        (dict(tokenizer="chars"), "data.tokenizer"),
        (dict(control_chars="ignore"), "data.control_chars must be 'error' or 'strip'"),
    ],
)
def test_bad_settings(lines_file, kwargs, match):
    with pytest.raises(DataError, match=match):
        TextDataModule(train=lines_file, **kwargs)


def test_fraction_too_small_for_the_data(tmp_path):
    path = write(tmp_path / "t", sentences(4))
    with pytest.raises(DataError, match="data.val_fraction=0.1 of 4 training examples leaves the val split empty"):
        TextDataModule(train=path).setup()


# ---- splits, vocabulary, lengths ----------------------------------------------------------------------------------


def test_seeded_split_is_deterministic_and_depends_on_split_seed(lines_file):
    a = TextDataModule(train=lines_file, split_seed=1)
    b = TextDataModule(train=lines_file, split_seed=1)
    c = TextDataModule(train=lines_file, split_seed=2)
    assert texts(a, "val") == texts(b, "val") and texts(a, "test") == texts(b, "test")
    assert texts(a, "val") != texts(c, "val")
    assert len(a.examples("val")) == len(a.examples("test")) == 20 and len(a.examples("train")) == 160
    # Held-out examples are removed from training, not copied (the corpus has 200 distinct line positions).
    assert len(a.examples("train")) + len(a.examples("val")) + len(a.examples("test")) == 200


def test_batch_seed_does_not_change_the_split(lines_file):
    assert texts(TextDataModule(train=lines_file, seed=1), "val") == texts(TextDataModule(train=lines_file, seed=2), "val")


def test_vocabulary_is_built_from_the_training_split_only(tmp_path, lines_file):
    val = write(tmp_path / "val.txt", ["the cat sat"])
    test = write(tmp_path / "test.txt", ["the zebra sat"])
    dm = TextDataModule(train=lines_file, val=val, test=test)
    assert "zebra" not in dm.vocab.stoi
    (ex,) = dm.examples("test")
    assert ex.tgt == [dm.vocab.stoi["the"], UNK_ID, dm.vocab.stoi["sat"]]


def test_min_freq_maps_rare_training_words_to_unk(tmp_path):
    train = write(tmp_path / "t", ["a a b", "a c"] * 5 + ["rare a"])
    dm = TextDataModule(train=train, val=train, test=train, min_freq=2)
    assert "rare" not in dm.vocab.stoi and "a" in dm.vocab.stoi


def test_literal_reserved_tokens_in_text_become_unk(tmp_path):
    train = write(tmp_path / "t", ["the <unk> sat", "a <pad> and <eos> here"])
    dm = TextDataModule(train=train, val=train, test=train)
    assert dm.examples("train")[1].tgt[1] == UNK_ID and dm.examples("train")[1].tgt[3] == UNK_ID
    assert dm.examples("train")[0].tgt[1] == UNK_ID


def _lengths_corpus(tmp_path) -> dict:
    # Lengths 1..10 in every split: 5 of 10 sentences are longer than max_len=5.
    lines = [" ".join(["w"] * n) for n in range(1, 11)]
    return {split: write(tmp_path / f"{split}.txt", lines) for split in ("train", "val", "test")}


def test_max_len_drop_counts_per_split(tmp_path, caplog):
    files = _lengths_corpus(tmp_path)
    with caplog.at_level(logging.WARNING, logger="modules.data.text_datamodule"):
        dm = TextDataModule(**files, max_len=5, length_policy="drop")
        dm.setup()
    assert dm.dropped == {"train": 5, "val": 5, "test": 5} and dm.truncated == {"train": 0, "val": 0, "test": 0}
    assert all(len(dm.examples(s)) == 5 for s in ("train", "val", "test"))
    assert "dropped 5 of 10 train examples" in caplog.text


def test_max_len_truncate_keeps_every_example(tmp_path):
    dm = TextDataModule(**_lengths_corpus(tmp_path), max_len=5, length_policy="truncate")
    assert dm.truncated == {"train": 5, "val": 5, "test": 5} and dm.dropped == {"train": 0, "val": 0, "test": 0}
    assert len(dm.examples("train")) == 10 and dm.max_target_length == 5


def test_max_len_applies_to_the_source_too(tmp_path):
    src = write(tmp_path / "s", ["a b c d e f", "a b", "a"])
    tgt = write(tmp_path / "t", ["x", "x y", "x y z w v u"])
    files = {"src": src, "tgt": tgt}
    dm = TextDataModule(format="parallel", train=files, val=files, test=files, max_len=3)
    assert dm.dropped["train"] == 2 and [len(ex.src) for ex in dm.examples("train")] == [2]
    dm = TextDataModule(format="parallel", train=files, val=files, test=files, max_len=3, length_policy="truncate")
    assert [(len(ex.src), len(ex.tgt)) for ex in dm.examples("train")] == [(3, 1), (2, 2), (1, 3)]


def test_max_len_dropping_everything_is_an_error(tmp_path):
    files = _lengths_corpus(tmp_path)
    long = write(tmp_path / "long.txt", ["w w w w w w"])
    with pytest.raises(DataError, match="data.max_len=5 drops every test example"):
        TextDataModule(train=files["train"], val=files["val"], test=long, max_len=5).setup()


# ---- conditions and batches --------------------------------------------------------------------------------------


def test_parallel_swap_src_tgt(tmp_path):
    files = {"src": write(tmp_path / "de", ["eins zwei", "drei"]), "tgt": write(tmp_path / "en", ["one two", "three"])}
    dm = TextDataModule(format="parallel", train=files, val=files, test=files, swap_src_tgt=True)
    ex = dm.examples("train")[0]
    assert dm.decode(ex.src) == "one two" and dm.decode(ex.tgt) == "eins zwei"
    # One vocabulary for both sides, fitted on both sides of the training pairs.
    assert {"eins", "one"} <= set(dm.vocab.itos)


def test_labeled_batches_carry_labels_and_label_tokens(tmp_path):
    train = {"pos": write(tmp_path / "p", ["good film"] * 6), "neg": write(tmp_path / "n", ["bad film"] * 6)}
    dm = TextDataModule(format="labeled", train=train, batch_size=4, val_fraction=0.25, test_fraction=0.25)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch.label is not None and batch.src.shape == (4, 1)
    label_ids = torch.tensor(dm.vocab.label_ids)  # [<label:neg>, <label:pos>]: sorted label order
    assert torch.equal(batch.src[:, 0], label_ids[batch.label])
    pos = dm.vocab.stoi["good"]
    for row, label in zip(batch.tgt, batch.label):
        assert (pos in row.tolist()) == (label.item() == 1)
    # Stratified carving: each class appears in each held-out split.
    assert sorted({ex.label for ex in dm.examples("val")}) == [0, 1]


def test_unconditional_batches_have_a_null_source(lines_file):
    dm = TextDataModule(train=lines_file, batch_size=8)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch.label is None
    assert torch.equal(batch.src, torch.full((8, 1), NULL_ID))
    assert (batch.tgt[:, 0] == 1).all() and (batch.tgt == PAD_ID).any()


def _epoch(dm: TextDataModule) -> list[torch.Tensor]:
    dm.setup("fit")
    return [batch.tgt for batch in dm.train_dataloader()]


def test_same_seed_same_batches_different_seed_different_order(lines_file):
    a = _epoch(TextDataModule(train=lines_file, batch_size=16, seed=3))
    b = _epoch(TextDataModule(train=lines_file, batch_size=16, seed=3))
    c = _epoch(TextDataModule(train=lines_file, batch_size=16, seed=4))
    assert len(a) == len(b) == len(c) == 10
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(x.shape == y.shape and torch.equal(x, y) for x, y in zip(a, c))


# ---- BPE ------------------------------------------------------------------------------------------------------------

RAW = [
    "Two young, White males are outside near many bushes.",
    "Ein kleines Mädchen klettert in ein Spielhaus aus Holz.",
    "A man (in a red shirt) sells 3 ice-creams for $4.50!",
    "Der Hund läuft über die Straße — schnell.",
]


def test_bpe_round_trip_on_raw_sentences():
    corpus = [f"{s} {w}" for s in RAW for w in sentences(30, seed=len(s))]
    tok = BPETokenizer(vocab_size=400).fit(corpus)
    unseen = "Zwölf Boxkämpfer jagen Viktor quer über den Sylter Deich; why?"
    for text in [*RAW, unseen]:
        assert tok.detokenize(tok.tokenize(text)) == text


def test_bpe_data_module_decodes_training_lines_exactly(tmp_path):
    train = write(tmp_path / "train.txt", RAW * 10)
    dm = TextDataModule(train=train, tokenizer="bpe", bpe_vocab_size=300, val_fraction=0.2, test_fraction=0.2)
    assert sorted({dm.decode(ex.tgt) for ex in dm.examples("train")}) == sorted(RAW)
    assert dm.state_dict()["tokenizer"]["kind"] == "bpe"


# ---- configuration ---------------------------------------------------------------------------------------------------


def test_yaml_config_through_jsonargparse(tmp_path):
    from jsonargparse import ArgumentParser

    german = "eins zwei drei vier fünf sechs sieben acht neun zehn".split()
    english = "one two three four five six seven eight nine ten".split()
    write(tmp_path / "de", german)
    write(tmp_path / "en", english)
    parser = ArgumentParser()
    parser.add_class_arguments(TextDataModule, "data")
    cfg = parser.parse_string(
        f"""
data:
  format: parallel
  root: {tmp_path}
  train: {{src: de, tgt: en}}
  swap_src_tgt: true
  val_fraction: 0.2
  test_fraction: 0.2
  max_len: 4
  length_policy: truncate
  batch_size: 2
"""
    )
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes
    dm = instantiate(cfg).data
    assert isinstance(dm, TextDataModule) and dm.condition == "source" and dm.batch_size == 2
    assert len(dm.examples("train")) == 6
    translation = dict(zip(english, german))
    for ex in dm.examples("train"):  # swapped: English source, German target
        assert translation[dm.decode(ex.src)] == dm.decode(ex.tgt)
