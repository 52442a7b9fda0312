import pytest

from modules.data.vocab import (
    BOS_ID, EOS_ID, NULL_ID, PAD_ID, UNK_ID, BPETokenizer, Vocab, WordTokenizer, make_tokenizer, tokenizer_from_state_dict,
)


def test_special_ids_are_fixed():
    v = Vocab(["a", "b"], labels=["pos", "neg"])
    assert [v.stoi[t] for t in ("<pad>", "<bos>", "<eos>", "<unk>", "<null>")] == [PAD_ID, BOS_ID, EOS_ID, UNK_ID, NULL_ID]
    assert v.label_ids == [5, 6] and v.label_id("neg") == 6
    assert v.stoi["a"] == 7 and len(v) == 9


def test_build_counts_min_freq_and_max_size():
    sents = [["a", "b", "a"], ["c", "a", "b"], ["d"]]
    v = Vocab.build(sents, min_freq=2)
    assert v.itos[v.num_reserved:] == ["a", "b"]
    v = Vocab.build(sents, max_size=5 + 3)
    assert v.itos[v.num_reserved:] == ["a", "b", "c"]  # ties broken alphabetically: c before d


def test_unknown_words_and_literal_reserved_strings_encode_as_unk():
    v = Vocab.build([["<unk>", "cat", "<pad>"]])
    assert "<pad>" not in v.itos[v.num_reserved:]
    assert v.encode(["cat", "dog", "<pad>", "<eos>"]) == [v.stoi["cat"], UNK_ID, UNK_ID, UNK_ID]


def test_decode_stops_at_eos_and_strips_padding():
    v = Vocab(["x", "y"])
    x, y = v.stoi["x"], v.stoi["y"]
    assert v.decode([BOS_ID, x, y, EOS_ID, x, PAD_ID]) == ["x", "y"]


@pytest.mark.parametrize("max_size", [0, 5, 7])
def test_vocabulary_smaller_than_the_special_tokens_is_refused(max_size):
    with pytest.raises(ValueError, match="special tokens"):
        Vocab.build([["a"]], labels=["p", "n"], max_size=max_size)


def test_vocab_round_trips_through_state_dict():
    v = Vocab.build([["b", "a", "a"]], labels=["p"])
    assert Vocab.from_state_dict(v.state_dict()) == v
    assert Vocab.from_state_dict(v.state_dict()).fingerprint() == v.fingerprint()


def test_word_tokenizer_lowercases_on_request():
    assert WordTokenizer(lowercase=True).tokenize("A Dog  runs") == ["a", "dog", "runs"]
    assert WordTokenizer().tokenize("A Dog") == ["A", "Dog"]


def test_bpe_tokenizer_round_trips_and_restores_from_state():
    texts = ["A man rides a horse.", "Two dogs play in the snow.", "A woman is reading a book."] * 20
    tok = make_tokenizer("bpe", bpe_vocab_size=300).fit(texts)
    pieces = tok.tokenize("A dog rides in the snow.")
    assert len(pieces) > 1
    assert tok.detokenize(pieces) == "A dog rides in the snow."
    restored = tokenizer_from_state_dict(tok.state_dict())
    assert isinstance(restored, BPETokenizer) and restored.tokenize("A dog") == tok.tokenize("A dog")


def test_unknown_tokenizer_kind_is_refused():
    with pytest.raises(ValueError, match="unknown tokenizer"):
        make_tokenizer("chars")
