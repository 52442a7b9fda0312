import math

import pytest
import torch
import torch.nn.functional as F

from modules.data.batch import Batch
from modules.data.errors import DataError
from modules.data.oracle_datamodule import OracleDataModule
from modules.nets.oracle import LSTMOracle, OracleConfig

TINY = OracleConfig(vocab_size=7, seq_len=4, emb_dim=5, hidden_dim=6, seed=3)


def stepwise_log_prob(oracle: LSTMOracle, seq: list[int], cond_vec=None) -> float:
    """Direct computation: run the LSTM cell by hand one token at a time from the start token."""
    lstm = oracle.lstm
    H = oracle.config.hidden_dim
    h, c = torch.zeros(H), torch.zeros(H)
    x = oracle.start_embedding.clone()
    total = 0.0
    for tok in seq:
        if cond_vec is not None:
            x = x + cond_vec
        gates = lstm.weight_ih_l0 @ x + lstm.bias_ih_l0 + lstm.weight_hh_l0 @ h + lstm.bias_hh_l0
        i, f, g, o = gates.chunk(4)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        logits = oracle.out_weight @ h + oracle.out_bias
        total += F.log_softmax(logits, dim=0)[tok].item()
        x = oracle.embedding[tok]
    return total


def test_log_prob_equals_stepwise_computation():
    oracle = LSTMOracle(TINY)
    seqs = torch.tensor([[0, 1, 2, 3], [6, 6, 5, 0], [3, 1, 4, 1]])
    got = oracle.log_prob(seqs)
    for row, value in zip(seqs.tolist(), got.tolist()):
        assert value == pytest.approx(stepwise_log_prob(oracle, row), abs=1e-4)


def test_label_conditional_log_prob_equals_stepwise_computation():
    cfg = OracleConfig(**{**TINY.__dict__, "num_classes": 3, "condition_strength": 0.7})
    oracle = LSTMOracle(cfg)
    seq, label = [2, 0, 6, 1], 2
    got = oracle.log_prob(torch.tensor([seq]), torch.tensor([label])).item()
    want = stepwise_log_prob(oracle, seq, cond_vec=0.7 * oracle.class_embedding[label])
    assert got == pytest.approx(want, abs=1e-4)


def test_probabilities_sum_to_one_over_all_sequences():
    cfg = OracleConfig(vocab_size=3, seq_len=3, emb_dim=4, hidden_dim=4, seed=1)
    oracle = LSTMOracle(cfg)
    all_seqs = torch.cartesian_prod(*[torch.arange(3)] * 3)
    assert oracle.log_prob(all_seqs).exp().sum().item() == pytest.approx(1.0, abs=1e-5)


def test_weights_are_standard_normal_and_seeded():
    a, b, c = LSTMOracle(OracleConfig(seed=0)), LSTMOracle(OracleConfig(seed=0)), LSTMOracle(OracleConfig(seed=1))
    assert torch.equal(a.embedding, b.embedding) and not torch.equal(a.embedding, c.embedding)
    w = torch.cat([p.flatten() for p in a.parameters()])
    assert abs(w.mean().item()) < 0.05 and w.std().item() == pytest.approx(1.0, abs=0.05)


def test_samples_score_better_under_their_oracle_than_uniform():
    dm = OracleDataModule(preset="small")
    test = torch.tensor(dm.reference_ids("test"))
    nll_per_token = -dm.oracle_log_prob(test).sum().item() / test.numel()
    assert nll_per_token < math.log(dm.oracle_config.vocab_size) - 0.5


@pytest.mark.parametrize("condition", ["label", "source"])
def test_mutual_information_is_zero_without_conditioning_strength(condition):
    dm = OracleDataModule(preset="small", condition=condition, condition_strength=0.0)
    mi, se = dm.true_mutual_information(num_samples=300, num_contrast=8)
    assert abs(mi) < 1e-4 and se < 1e-4


@pytest.mark.parametrize("condition", ["label", "source"])
def test_mutual_information_is_positive_with_conditioning(condition):
    dm = OracleDataModule(preset="small", condition=condition, condition_strength=0.3)
    mi, se = dm.true_mutual_information(num_samples=300, num_contrast=8)
    assert mi > 0.2 and mi > 5 * se


def test_label_mi_cannot_exceed_log_k():
    dm = OracleDataModule(preset="small", condition="label", num_classes=3, condition_strength=2.0)
    mi, _ = dm.true_mutual_information(num_samples=300)
    assert 0.5 < mi <= math.log(3) + 1e-6


def first_batches(dm: OracleDataModule, n: int = 3) -> list[Batch]:
    dm.setup("fit")
    it = iter(dm.train_dataloader())
    return [next(it) for _ in range(n)]


def test_same_seed_gives_identical_batches_and_another_seed_another_order():
    a = first_batches(OracleDataModule(preset="small", batch_size=16, seed=5))
    b = first_batches(OracleDataModule(preset="small", batch_size=16, seed=5))
    c = first_batches(OracleDataModule(preset="small", batch_size=16, seed=6))
    assert all(torch.equal(x.tgt, y.tgt) for x, y in zip(a, b))
    assert not all(torch.equal(x.tgt, y.tgt) for x, y in zip(a, c))


def test_global_rng_does_not_change_batch_order():
    torch.manual_seed(1)
    a = first_batches(OracleDataModule(preset="small", batch_size=8, seed=0))
    torch.manual_seed(2)
    torch.randn(100)  # as a different model's initialisation would
    b = first_batches(OracleDataModule(preset="small", batch_size=8, seed=0))
    assert all(torch.equal(x.tgt, y.tgt) for x, y in zip(a, b))


def test_batch_contract_unconditional():
    (batch,) = first_batches(OracleDataModule(preset="small", batch_size=4), 1)
    L = 12
    assert batch.src.shape == (4, 1) and (batch.src == 4).all()  # <null>
    assert batch.tgt.shape == (4, L + 2) and (batch.tgt[:, 0] == 1).all() and (batch.tgt[:, -1] == 2).all()
    assert not batch.tgt_pad_mask.any() and batch.label is None


def test_batch_contract_label_conditional():
    dm = OracleDataModule(preset="small", condition="label", num_classes=3, batch_size=32)
    (batch,) = first_batches(dm, 1)
    assert batch.label.shape == (32,)
    assert torch.equal(batch.src[:, 0], torch.tensor(dm.vocab.label_ids)[batch.label])
    assert set(batch.label.tolist()) == {0, 1, 2}


def test_batch_contract_source_conditional():
    dm = OracleDataModule(preset="small", condition="source", source_len=5, batch_size=8)
    (batch,) = first_batches(dm, 1)
    assert batch.src.shape == (8, 5) and (batch.src >= dm.vocab.num_reserved).all()


def test_cache_is_written_and_regenerated_identically(tmp_path):
    dm = OracleDataModule(preset="small", cache_dir=str(tmp_path))
    first = dm.reference_ids("train")
    files = list(tmp_path.glob("oracle-*.pt"))
    assert len(files) == 1
    files[0].unlink()
    assert OracleDataModule(preset="small", cache_dir=str(tmp_path)).reference_ids("train") == first
    assert OracleDataModule(preset="small", cache_dir=str(tmp_path)).reference_ids("train") == first  # from cache


def test_truncated_cache_is_regenerated(tmp_path):
    first = OracleDataModule(preset="small", cache_dir=str(tmp_path)).reference_ids("test")
    (path,) = tmp_path.glob("oracle-*.pt")
    path.write_bytes(path.read_bytes()[:100])
    assert OracleDataModule(preset="small", cache_dir=str(tmp_path)).reference_ids("test") == first


def test_different_oracle_seed_gives_different_data(tmp_path):
    a = OracleDataModule(preset="small", oracle_seed=0, cache_dir=str(tmp_path)).reference_ids("train")[:5]
    b = OracleDataModule(preset="small", oracle_seed=1, cache_dir=str(tmp_path)).reference_ids("train")[:5]
    assert a != b


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(batch_size=0), "batch_size"),
        (dict(batch_size=-3), "batch_size"),
        (dict(preset="huge"), "preset"),
        (dict(condition="image"), "condition"),
        (dict(condition="label", num_classes=1), "num_classes"),
        (dict(vocab_size=0), "vocab_size"),
        (dict(num_train=0), "num_train"),
    ],
)
def test_bad_settings_name_the_setting(kwargs, match):
    with pytest.raises(DataError, match=match):
        OracleDataModule(**kwargs)


def test_batch_larger_than_data_with_drop_last_is_refused():
    dm = OracleDataModule(preset="small", num_train=10, batch_size=11, drop_last=True)
    with pytest.raises(DataError, match="larger than the training split"):
        dm.setup("fit")


def test_oracle_scoring_refuses_special_tokens_and_wrong_length():
    dm = OracleDataModule(preset="small")
    with pytest.raises(ValueError, match="exactly 12"):
        dm.oracle_log_prob(torch.full((2, 5), 10))
    with pytest.raises(ValueError, match="non-word"):
        dm.oracle_log_prob(torch.full((2, 12), 2))
