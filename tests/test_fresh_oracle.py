"""Fresh oracle samples every epoch (data.train_samples: fresh) and the sharpened oracle (data.sharpness)."""

import pytest
import torch

from experiments.core import baselines as B
from modules.data import OracleDataModule
from modules.data.errors import DataError

SMALL = dict(preset="small", vocab_size=20, seq_len=6, num_train=48, num_val=32, num_test=32, batch_size=16)


def fresh(tmp_path, **kw):
    dm = OracleDataModule(**{**SMALL, "train_samples": "fresh", **kw}, cache_dir=str(tmp_path))
    dm.setup("fit")
    return dm


def epoch_batches(dm, epoch: int) -> torch.Tensor:
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(epoch)
    return torch.cat([batch.tgt for batch in loader])  # (num_train, L + 1)


def test_fresh_samples_are_the_same_for_the_same_seed_and_epoch(tmp_path):
    a, b = fresh(tmp_path), fresh(tmp_path)
    for epoch in (0, 1, 5):
        assert torch.equal(epoch_batches(a, epoch), epoch_batches(b, epoch))


def test_every_epoch_and_every_data_seed_draws_new_sentences(tmp_path):
    dm = fresh(tmp_path)
    first, second = epoch_batches(dm, 0), epoch_batches(dm, 1)
    as_set = lambda t: {tuple(row) for row in t.tolist()}
    assert len(as_set(first) & as_set(second)) < len(first) // 4  # 48 draws of 20^6 sequences rarely repeat
    other_seed = epoch_batches(fresh(tmp_path, seed=1), 0)
    assert not torch.equal(first, other_seed)


def test_fresh_samples_do_not_depend_on_the_number_of_loader_workers(tmp_path):
    single = epoch_batches(fresh(tmp_path), 1)
    workers = epoch_batches(fresh(tmp_path, num_workers=2), 1)
    assert torch.equal(single, workers)


def test_fresh_training_data_keeps_validation_and_test_fixed(tmp_path):
    fixed = OracleDataModule(**SMALL, cache_dir=str(tmp_path))
    fixed.setup("fit")
    dm = fresh(tmp_path)
    for split in ("val", "test"):
        assert [ex.tgt for ex in dm.examples(split)] == [ex.tgt for ex in fixed.examples(split)]
    fixed_train = {tuple(ex.tgt) for ex in fixed.examples("train")}
    assert {tuple(ex.tgt) for ex in dm.fresh_examples(0, 0)} != fixed_train


def test_fresh_label_data_carries_its_labels(tmp_path):
    dm = fresh(tmp_path, condition="label", num_classes=3)
    labels = {ex.label for ex in dm.fresh_examples(0, 0)}
    assert labels <= {0, 1, 2} and len(labels) > 1


def test_counted_baselines_are_fitted_on_as_many_fresh_sentences_as_stated(tmp_path):
    dm = fresh(tmp_path, baseline_samples=100)
    words = dm.baseline_training_words()
    assert words.shape == (100, SMALL["seq_len"])
    first_epoch = torch.tensor([ex.tgt for ex in dm.fresh_examples(0, 0)]) - dm.vocab.num_reserved
    assert torch.equal(words[:48], first_epoch)  # the sentences the run of data seed 0 sees first
    assert int(words.min()) >= 0 and int(words.max()) < SMALL["vocab_size"]


@pytest.mark.parametrize("bad", [dict(train_samples="endless"), dict(baseline_samples=10),
                                 dict(train_samples="fresh", baseline_samples=0)])
def test_bad_fresh_settings_name_the_setting(tmp_path, bad):
    with pytest.raises(DataError, match=r"data\.(train_samples|baseline_samples)"):
        OracleDataModule(**{**SMALL, **bad}, cache_dir=str(tmp_path))


def test_a_sharper_oracle_has_lower_entropy_and_a_new_cache(tmp_path):
    plain = OracleDataModule(**SMALL, cache_dir=str(tmp_path))
    sharp = OracleDataModule(**SMALL, sharpness=2.0, cache_dir=str(tmp_path))
    assert plain.cache_key() != sharp.cache_key()
    h_plain, se_plain = plain.entropy_per_token(400)
    h_sharp, se_sharp = sharp.entropy_per_token(400)
    assert h_sharp < h_plain - 5 * (se_plain + se_sharp)


def test_the_bigram_fitted_on_more_fresh_sentences_is_no_worse(tmp_path):
    few = fresh(tmp_path, baseline_samples=48)
    many = fresh(tmp_path, baseline_samples=2000)
    j_few = B.counted_baselines(few, num_samples=200, entropy_samples=200)["bigram"]["j"]
    j_many = B.counted_baselines(many, num_samples=200, entropy_samples=200)["bigram"]["j"]
    assert j_many < j_few
