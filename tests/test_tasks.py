"""The task data (modules/data/tasks.py): copy, reverse, sort; alignments; exact-match and token accuracy."""

import pytest
import torch
from torch import nn

from modules.data import TaskDataModule
from modules.data.errors import DataError
from modules.data.tasks import greedy_task_scores, score_predictions
from modules.data.vocab import BOS_ID, EOS_ID, PAD_ID

SPLITS = ("train", "val", "test")


def make_dm(task="copy", **kwargs) -> TaskDataModule:
    args = dict(num_words=10, min_len=3, max_len=7, num_train=300, num_val=40, num_test=60, batch_size=16)
    return TaskDataModule(task, **{**args, **kwargs})


def words(dm, ids):
    return dm.vocab.decode(ids)


EXPECTED = {
    "copy": lambda ws: list(ws),
    "reverse": lambda ws: ws[::-1],
    "sort": lambda ws: sorted(ws, key=lambda w: int(w[1:])),  # t2 < t10: word order is the index's
}


@pytest.mark.parametrize("task", EXPECTED)
@pytest.mark.parametrize("split", SPLITS)
def test_targets_are_the_task_applied_to_the_sources(task, split):
    dm = make_dm(task)
    for ex in dm.examples(split):
        src_words = words(dm, ex.src)
        assert all(w.startswith("t") for w in src_words)
        assert words(dm, ex.tgt) == EXPECTED[task](src_words)


@pytest.mark.parametrize("task", EXPECTED)
def test_batches_follow_the_shared_contract(task):
    dm = make_dm(task)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch.src.shape[0] == batch.tgt.shape[0] == 16 and batch.label is None
    assert (batch.tgt[:, 0] == BOS_ID).all()
    assert torch.equal(batch.src_pad_mask, batch.src.eq(PAD_ID))
    for src, tgt in zip(batch.src.tolist(), batch.tgt.tolist()):
        src = [t for t in src if t != PAD_ID]
        tgt = [t for t in tgt if t != PAD_ID]
        assert tgt[-1] == EOS_ID and len(tgt) == len(src) + 2  # BOS, the n output words, EOS
        assert words(dm, tgt[1:-1]) == EXPECTED[task](words(dm, src))


def test_lengths_follow_the_configured_ranges():
    dm = make_dm(min_len=2, max_len=4, test_min_len=6, test_max_len=8, num_words=12)
    for split, (lo, hi) in (("train", (2, 4)), ("val", (2, 4)), ("test", (6, 8))):
        lengths = {len(ex.src) for ex in dm.examples(split)}
        assert lengths <= set(range(lo, hi + 1))
        assert len(lengths) > 1  # drawn from the range, not one length
    assert dm.max_target_length == 8  # generation reaches the test split's longest target


def test_splits_are_seeded_and_disjoint():
    a, b = make_dm(task_seed=3), make_dm(task_seed=3, seed=99)  # the loader's seed does not change the data
    for split in SPLITS:
        assert a.examples(split) == b.examples(split)
    assert make_dm(task_seed=4).examples("train") != a.examples("train")
    sources = [tuple(ex.src) for split in SPLITS for ex in a.examples(split)]
    assert len(sources) == len(set(sources)) == 300 + 40 + 60


def test_vocabulary_is_the_task_words():
    dm = make_dm(num_words=10)
    assert dm.vocab.itos[dm.vocab.num_reserved:] == [f"t{k}" for k in range(10)]
    assert dm.vocab_size == 15


def test_true_alignments():
    copy, reverse = make_dm("copy"), make_dm("reverse")
    assert copy.true_alignment(3) == [0, 1, 2]
    assert reverse.true_alignment(3) == [2, 1, 0]
    assert reverse.true_alignment(1) == [0]
    for dm in (copy, reverse):
        for ex in dm.examples("test"):
            alignment = dm.true_alignment(len(ex.src))
            assert sorted(alignment) == list(range(len(ex.src)))
            assert [ex.src[j] for j in alignment] == ex.tgt  # output word t is the source word at alignment[t]
    with pytest.raises(ValueError, match="depends on the words"):
        make_dm("sort", distinct=True).true_alignment(3)


def test_sort_alignment_needs_distinct_words():
    with pytest.raises(ValueError, match="no unique true alignment unless data.distinct"):
        make_dm("sort").alignment([7, 5, 6])


def test_distinct_sources_never_repeat_a_word():
    for task in EXPECTED:
        dm = make_dm(task, distinct=True)
        for split in SPLITS:
            for ex in dm.examples(split):
                assert len(set(ex.src)) == len(ex.src)
    assert any(len(set(ex.src)) < len(ex.src) for ex in make_dm("copy").examples("train"))  # the default repeats


@pytest.mark.parametrize("task", EXPECTED)
def test_every_alignment_points_at_the_source_word_of_each_output_word(task):
    dm = make_dm(task, distinct=True)
    for ex in dm.examples("test"):
        alignment = dm.alignment(ex.src)
        assert sorted(alignment) == list(range(len(ex.src)))  # a permutation: each source word is read once
        assert [ex.src[j] for j in alignment] == ex.tgt


def test_sort_alignment_by_hand():
    dm = make_dm("sort", distinct=True)
    # t3 t0 t2 -> t0 t2 t3: the smallest word is at position 1, then 2, then 0
    ids = [dm.vocab.stoi[w] for w in ("t3", "t0", "t2")]
    assert dm.alignment(ids) == [1, 2, 0]
    assert make_dm("reverse", distinct=True).alignment(ids) == [2, 1, 0]
    assert make_dm("copy", distinct=True).alignment(ids) == [0, 1, 2]
    # the sort alignment depends on the words: the same length, another order
    assert dm.alignment([dm.vocab.stoi[w] for w in ("t0", "t3", "t2")]) == [0, 2, 1]


@pytest.mark.parametrize("kwargs,match", [
    ({"task": "rotate"}, "data.task"),
    ({"num_words": 1}, "data.num_words"),
    ({"min_len": 0}, "data.min_len"),
    ({"min_len": 5, "max_len": 4}, "data.max_len"),
    ({"test_min_len": 5, "test_max_len": 2}, "data.test_max_len"),
    ({"num_test": 0}, "data.num_test"),
    ({"num_words": 2, "min_len": 2, "max_len": 3}, "too few distinct sequences"),
    ({"num_words": 6, "min_len": 3, "max_len": 7, "distinct": True}, "data.distinct needs sources of at most"),
    ({"num_words": 6, "min_len": 3, "max_len": 4, "test_max_len": 7, "distinct": True}, "data.distinct"),
    # 60 + 120 + 120 sequences of 3-5 distinct words of 5: too few for 300 + 40 unique examples (with repetition,
    # 5**3 + 5**4 + 5**5 are plenty: test_distinct_words_shrink_the_sequence_space)
    ({"num_words": 5, "min_len": 3, "max_len": 5, "distinct": True}, "too few distinct sequences"),
])
def test_bad_settings_name_the_setting(kwargs, match):
    args = dict(num_words=10, min_len=3, max_len=7, num_train=300, num_val=40, num_test=60)
    with pytest.raises(DataError, match=match):
        TaskDataModule(**{**args, **kwargs})


def test_distinct_words_shrink_the_sequence_space():
    TaskDataModule(num_words=5, min_len=3, max_len=5, num_train=300, num_val=40, num_test=60)  # with repetition


def test_score_predictions_counts_words_and_the_end():
    targets = [[5, 6, 7], [5, 6, 7], [5, 6, 7], [5, 6, 7], [8]]
    predictions = [[5, 6, 7], [5, 9, 7], [5, 6], [5, 6, 7, 8], [8]]
    ended = [True, True, True, True, False]
    exact, accuracy = score_predictions(predictions, ended, targets)
    assert exact.tolist() == [1.0, 0.0, 0.0, 0.0, 0.0]
    # 3 words + EOS each; an output that never stopped gets no credit for the EOS
    assert accuracy.tolist() == pytest.approx([4 / 4, 3 / 4, 2 / 4, 3 / 4, 1 / 2])


class PlantedNet(nn.Module):
    """A net with the step protocol that emits a chosen answer for each source, then EOS."""

    def __init__(self, vocab_size, answer):
        super().__init__()
        self.vocab_size, self.answer = vocab_size, answer
        self.dummy = nn.Parameter(torch.zeros(1))  # gives the scorer a device

    def init_state(self, src, src_pad_mask, z=None):
        rows = [self.answer([t for t, pad in zip(s, m) if not pad])
                for s, m in zip(src.tolist(), src_pad_mask.tolist())]
        return rows, 0

    def step(self, prev, state):
        rows, t = state
        logits = torch.zeros(len(rows), self.vocab_size)
        for b, row in enumerate(rows):
            logits[b, row[t] if t < len(row) else EOS_ID] = 1.0
        return logits, (rows, t + 1)


@pytest.mark.parametrize("task", EXPECTED)
def test_greedy_scores_of_planted_nets(task):
    dm = make_dm(task)
    right = {"copy": list, "reverse": lambda s: s[::-1], "sort": sorted}[task]
    scores = greedy_task_scores(PlantedNet(dm.vocab_size, right), dm, "test", batch_size=16)
    assert scores.exact_match.tolist() == [1.0] * 60
    assert scores.token_accuracy.tolist() == [1.0] * 60
    assert scores.src_len.tolist() == [len(ex.src) for ex in dm.examples("test")]

    silent = greedy_task_scores(PlantedNet(dm.vocab_size, lambda s: []), dm, "test")  # stops at once
    assert silent.exact_match.sum() == 0 and silent.token_accuracy.sum() == 0

    first = dm.vocab.num_reserved
    one_off = greedy_task_scores(  # the right answer with its first word changed
        PlantedNet(dm.vocab_size, lambda s: [first + (right(s)[0] - first + 1) % 10, *right(s)[1:]]), dm, "test")
    assert one_off.exact_match.sum() == 0
    expected = torch.tensor([len(ex.tgt) / (len(ex.tgt) + 1) for ex in dm.examples("test")])  # n words + EOS
    torch.testing.assert_close(one_off.token_accuracy, expected)
