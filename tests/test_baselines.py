"""J's reference points: the oracle's own entropy and the counted unigram / bigram baselines."""

import itertools
import json
import math

import pytest
import torch

from experiments.core import baselines as B
from modules.data import OracleDataModule

TINY = dict(preset="small", vocab_size=3, seq_len=3, num_train=300, num_val=100, num_test=200)


def all_sequences(vocab: int, length: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product(range(vocab), repeat=length)))  # (V^L, L)


def test_oracle_entropy_matches_enumeration_and_is_cached(tmp_path):
    dm = OracleDataModule(**TINY, cache_dir=str(tmp_path))
    ys = all_sequences(3, 3)
    logp = dm.oracle.log_prob(ys).double()
    exact = -(logp.exp() * logp).sum().item() / 3
    value, se = dm.entropy_per_token(num_samples=4000)
    assert abs(value - exact) < 4 * se and 0 < se < 0.05
    (cache,) = tmp_path.glob("oracle-*-entropy-n4000-s0.json")
    assert json.loads(cache.read_text())["entropy_per_token"] == value
    again = OracleDataModule(**TINY, cache_dir=str(tmp_path))
    assert again.entropy_per_token(num_samples=4000) == (value, se)
    assert dm.entropy_per_token(num_samples=4000, seed=1)[0] != value  # another seed, another draw


def test_a_damaged_entropy_cache_is_recomputed(tmp_path, caplog):
    dm = OracleDataModule(**TINY, cache_dir=str(tmp_path))
    value = dm.entropy_per_token(num_samples=500)
    (cache,) = tmp_path.glob("oracle-*-entropy-*.json")
    cache.write_text("{not json")
    assert OracleDataModule(**TINY, cache_dir=str(tmp_path)).entropy_per_token(num_samples=500) == value
    assert "recomputing" in caplog.text


def test_counted_bigram_is_a_distribution_with_its_exact_entropy_and_oracle_nll(tmp_path):
    dm = OracleDataModule(**TINY, cache_dir=str(tmp_path))
    out = B.counted_baselines(dm, temperatures=[1.0, 0.5], num_samples=4000, entropy_samples=2000)
    train = B._word_ids(dm, "train")
    pairs = torch.zeros(4, 3, dtype=torch.float64)
    pairs.index_put_((B._with_start(train, 3).flatten(), train.flatten()), torch.ones(train.numel(),
                     dtype=torch.float64), accumulate=True)
    model = B._Bigram(pairs, out["bigram"]["k"])
    ys = all_sequences(3, 3)
    q = torch.tensor([math.exp(-3 * model.nll(y[None])) for y in ys], dtype=torch.float64)  # q(y) of each sequence
    assert q.sum().item() == pytest.approx(1.0, abs=1e-9)  # the start context and every row are normalised
    assert out["bigram"]["entropy_per_token"] == pytest.approx(-(q * q.log()).sum().item() / 3, abs=1e-9)
    src, _, _ = dm.conditions("test", len(ys))
    nll_oracle = -(q * dm.oracle_log_prob(ys + dm.vocab.num_reserved, src).double()).sum().item() / 3
    assert abs(out["bigram"]["nll_oracle_per_token"] - nll_oracle) < 4 * out["bigram"]["nll_oracle_se"]
    at_one, sharp = out["unigram_tempered"]
    assert at_one["nll_test_per_token"] == pytest.approx(out["unigram"]["nll_test_per_token"])
    assert at_one["entropy_per_token"] == pytest.approx(out["unigram"]["entropy_per_token"])
    assert sharp["entropy_per_token"] < at_one["entropy_per_token"] < math.log(3)
    for b in (out["unigram"], out["bigram"], *out["unigram_tempered"]):
        assert b["j"] == pytest.approx(b["kl_pq"] + b["kl_qp"]) and b["k"] in B.SMOOTHING_GRID


def test_small_oracle_baselines_match_the_numbers_measured_in_the_issue():
    """Issue 10: oracle entropy 3.30; unigram NLL_test / NLL_oracle 4.82 / 6.79, at T = 0.5 5.17 / 6.20; bigram
    4.37 / 5.45 (sampling noise of NLL_oracle: about 0.01)."""
    out = B.counted_baselines(OracleDataModule(preset="small"), temperatures=[0.5])
    assert out["oracle_entropy_per_token"] == pytest.approx(3.30, abs=0.02)
    uni, bi, (half,) = out["unigram"], out["bigram"], out["unigram_tempered"]
    assert uni["nll_test_per_token"] == pytest.approx(4.82, abs=0.02)
    assert uni["nll_oracle_per_token"] == pytest.approx(6.79, abs=0.05)
    assert half["nll_test_per_token"] == pytest.approx(5.17, abs=0.03)
    assert half["nll_oracle_per_token"] == pytest.approx(6.20, abs=0.05)
    assert bi["nll_test_per_token"] == pytest.approx(4.37, abs=0.02)
    assert bi["nll_oracle_per_token"] == pytest.approx(5.45, abs=0.05)
    assert bi["j"] < uni["j"] < half["j"]  # the bigram learned more; sharpening the unigram does not help J


def test_baselines_are_computed_once_per_data_config_and_attached_to_rows(tmp_path, monkeypatch):
    data = {"class_path": "modules.data.OracleDataModule", "init_args": {**TINY, "cache_dir": str(tmp_path / "c")}}
    calls = []
    real = B.counted_baselines
    monkeypatch.setattr(B, "counted_baselines", lambda *a, **k: calls.append(1) or real(*a, **k))
    rows = []
    for seed in (0, 1):
        folder = tmp_path / "runs" / f"r{seed}"
        folder.mkdir(parents=True)
        (folder / "run.json").write_text(json.dumps({"data": {**data, "init_args": {**data["init_args"],
                                                                                     "batch_size": 8}}}))
        rows.append({"key": f"r{seed}", "seed": seed, "paths": {"folder": f"runs/r{seed}"}})
    rows.append({"key": "no-folder", "seed": 2, "paths": {"folder": "runs/missing"}})
    out = B.attach_references(tmp_path, rows, temperatures=[0.5, 1.0])
    assert len(calls) == 1 and out[0]["reference"] is out[1]["reference"] and "reference" not in out[2]
    assert "reference" not in rows[0]  # the rows themselves are left as they were
    assert len(list((tmp_path / "baselines").glob("*.json"))) == 1
    B.attach_references(tmp_path, rows, temperatures=[0.5, 1.0])
    assert len(calls) == 1  # read back from the run folder
    assert B.references_of(out) == [out[0]["reference"]]
