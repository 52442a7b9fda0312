"""DistinctN and SequenceNLL on hand-computed numbers, and their DDP reduction."""

import copy

import pytest
import torch
from ddp_sim import simulate_ddp_sync, values

from modules.metrics import DistinctN, SequenceNLL

# ----------------------------------------------------------------------------- distinct-n

SAMPLES = [[1, 2, 1, 2], [3, 1, 2], [3, 1, 2]]
# Counted by hand (n-grams never cross samples, so the boundary bigram (2, 3) does not exist):
#   1-grams: 10 in all, distinct {1, 2, 3}                          -> 3/10
#   2-grams: 12 21 12 | 31 12 | 31 12 = 7, distinct {12, 21, 31}    -> 3/7
#   3-grams: 121 212 | 312 | 312 = 4, distinct 3                    -> 3/4
#   4-grams: 1212 = 1, distinct 1                                   -> 1
#   5-grams: none                                                   -> 0 by convention
HAND = {"distinct1": 3 / 10, "distinct2": 3 / 7, "distinct3": 3 / 4, "distinct4": 1.0, "distinct5": 0.0,
        "avg_length": 10 / 3, "unique_fraction": 2 / 3}


def test_distinct_n_hand_computed():
    metric = DistinctN(n_values=(1, 2, 3, 4, 5))
    metric.update(SAMPLES[:1])
    metric.update(SAMPLES[1:])
    assert values(metric.compute()) == pytest.approx(HAND, abs=1e-12)


def test_distinct_n_split_over_ranks():
    ranks = [DistinctN(n_values=(1, 2, 3, 4, 5)) for _ in range(2)]
    ranks[0].update([SAMPLES[1]])  # each rank alone sees no repeated sample; together they do
    ranks[1].update([SAMPLES[0], SAMPLES[2]])
    merged = copy.deepcopy(ranks[0])
    merged.merge_state(ranks[1])
    assert values(merged.compute()) == pytest.approx(HAND, abs=1e-12)
    simulate_ddp_sync(ranks)
    assert values(ranks[0].compute()) == pytest.approx(HAND, abs=1e-12)


@pytest.mark.filterwarnings("ignore:.*compute.*before.*update.*")
def test_distinct_n_errors():
    with pytest.raises(ValueError):
        DistinctN(n_values=(0, 1))
    with pytest.raises(ValueError):
        DistinctN(n_values=())
    metric = DistinctN()
    metric.update([])
    with pytest.raises(ValueError, match="update"):
        metric.compute()


# ----------------------------------------------------------------------------- NLL


def test_sequence_nll_per_token_and_per_sentence():
    metric = SequenceNLL()
    # sentence 1: log p = -2 over 2 tokens; sentence 2: -4 over 3 tokens
    metric.update(torch.tensor([-2.0, -4.0]), torch.tensor([2, 3]))
    assert values(metric.compute()) == pytest.approx({"per_token": 6 / 5, "per_sentence": 6 / 2})
    # an int num_tokens means every sentence of the batch has that many tokens
    metric.update(torch.tensor([-3.0, -1.0]), 4)
    assert values(metric.compute()) == pytest.approx({"per_token": 10 / 13, "per_sentence": 10 / 4})


def test_sequence_nll_split_over_ranks():
    single = SequenceNLL()
    single.update(torch.tensor([-2.0, -4.0, -3.0]), torch.tensor([2, 3, 4]))
    ranks = [SequenceNLL(), SequenceNLL()]
    ranks[0].update(torch.tensor([-2.0]), torch.tensor([2]))
    ranks[1].update(torch.tensor([-4.0, -3.0]), torch.tensor([3, 4]))
    simulate_ddp_sync(ranks)
    for rank in ranks:
        assert values(rank.compute()) == pytest.approx(values(single.compute()), abs=1e-12)


@pytest.mark.filterwarnings("ignore:.*compute.*before.*update.*")
def test_sequence_nll_errors():
    with pytest.raises(ValueError, match="update"):
        SequenceNLL().compute()
    metric = SequenceNLL()
    with pytest.raises(ValueError, match="shape"):
        metric.update(torch.zeros(2, 3), 3)
    with pytest.raises(ValueError, match="num_tokens"):
        metric.update(torch.zeros(2), torch.tensor([1, 2, 3]))
    metric.update(torch.zeros(0), 0)  # an empty batch adds nothing
    with pytest.raises(ValueError, match="update"):
        metric.compute()
