"""Every likelihood a model reports is computed under the distribution it samples from (issue 9, items 5 and 6):
banned ids masked and renormalised for NLL_test, the temperature curves, the probes, the model's entropy and the
MLE loss; for a GAN with z the NLL is the Monte-Carlo marginal over K z draws."""

import math
import random
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

import modules.sampling as sampling
from experiments.core.families import merge_args
from modules.data import OracleDataModule
from modules.data.batch import Example, collate
from modules.data.text_datamodule import TextDataModule
from modules.data.vocab import BOS_ID, EOS_ID, NULL_ID, PAD_ID, UNK_ID, Vocab
from modules.models import TextGAN, TransformerSeq2Seq
from modules.models.base import GeneratorModule, mle_loss
from modules.models.configs import EvaluationConfig, nest_flat_args
from modules.nets.lstm_generator import LSTMGenerator
from modules.sampling import generate, position_banned_mask, sampling_log_probs

SPECIALS = [PAD_ID, BOS_ID, UNK_ID, NULL_ID]  # banned everywhere (EOS only before the minimum length)


class TableNet(nn.Module):
    """A generator whose logits depend only on the position, and, with a second table, on the sign of z
    (z_dim = 1): its p(y | z) and p(y) are known in closed form. Step protocol and teacher forcing."""

    def __init__(self, table: torch.Tensor, table_neg: torch.Tensor | None = None):
        super().__init__()
        self.z_dim = 0 if table_neg is None else 1
        self.register_buffer("table", table.float())  # (max positions, V)
        self.register_buffer("table_neg", (table if table_neg is None else table_neg).float())

    def _logits(self, t: int, B: int, z) -> torch.Tensor:  # (B, V)
        if self.z_dim == 0:
            assert z is None
            return self.table[t].expand(B, -1)
        return torch.where(z[:, :1] > 0, self.table[t], self.table_neg[t])

    def forward(self, src, src_pad_mask, tgt_in, z=None):
        return torch.stack([self._logits(t, tgt_in.size(0), z) for t in range(tgt_in.size(1))], dim=1)

    def init_state(self, src, src_pad_mask, z=None):
        return 0, z, src.size(0)

    def step(self, prev_tokens, state):
        t, z, B = state
        return self._logits(t, B, z), (t + 1, z, B)


def attach(model: GeneratorModule, vocab: Vocab, fixed_length=None, max_length=8) -> GeneratorModule:
    """What `setup` copies from a data module, without a Trainer."""
    model.vocab = vocab
    model._data_info = {"condition": "none", "fixed_length": fixed_length, "max_length": max_length,
                        "num_classes": 0}
    return model


def mle_model(vocab_size: int, **kw) -> TransformerSeq2Seq:
    torch.manual_seed(0)
    evaluation = {k: kw.pop(k) for k in list(kw) if k in EvaluationConfig.__dataclass_fields__}
    return TransformerSeq2Seq(vocab_size, d_model=16, n_heads=2, n_encoder_layers=1, n_decoder_layers=1, d_ff=32,
                              dropout=0.0, max_len=32, warmup_steps=0, schedule="constant", evaluation=evaluation,
                              **kw)


def gan_model(vocab_size: int, **kw) -> TextGAN:
    torch.manual_seed(0)
    args = dict(generator=dict(arch="lstm", emb_dim=8, hidden_dim=8, max_len=32),
                discriminator=dict(emb_dim=8, hidden_dim=8, filter_sizes=(2,), num_filters=4),
                evaluation=dict(num_eval_samples=0))
    # overrides by their former flat names (modules.models.configs.FLAT_TO_NESTED)
    return TextGAN(vocab_size, **merge_args(args, nest_flat_args(kw)))


def with_net(model: GeneratorModule, net: nn.Module) -> GeneratorModule:
    model.generator = net
    return model


def heavy_on_banned(table: torch.Tensor, vocab: Vocab, min_length: int) -> torch.Tensor:
    """The same table with a lot of extra mass on every id the sampler bans."""
    out = table.clone()
    out[:, vocab.non_output_ids] += 6.0
    out[:min_length, EOS_ID] += 6.0
    return out


def full_softmax_nll(net, batch, scored) -> torch.Tensor:
    """What NLL_test was before: the full softmax, nothing banned."""
    logp = F.log_softmax(net(batch.src, batch.src_pad_mask, batch.tgt_in).float(), -1)
    return -(logp.gather(-1, batch.tgt_out.unsqueeze(-1)).squeeze(-1) * scored).sum()


VOCAB = Vocab(["a", "b", "c", "d", "e"], labels=["pos", "neg"])  # ids 0-4 special, 5-6 labels, 7-11 words
A, B_, C, D, E = range(7, 12)
BANNED = [PAD_ID, BOS_ID, UNK_ID, NULL_ID, 5, 6]  # written out by hand: the specials but EOS, and the labels


def oracle_batch(rows=((A, B_, C), (C, C, D), (E, A, A))):
    return collate([Example([5], list(r)) for r in rows])


def text_batch():
    # variable lengths; UNK in the middle of a target: no model can produce it, so no model is scored on it
    return collate([Example([6], [A, B_]), Example([5], [C, UNK_ID, D, E]), Example([6], [E])])


def hand_masked_nll(logits, batch, fixed_length, temperature=1.0):
    """-log p of the scored targets, summed per row, with the ban written out by hand. -> (B,)"""
    T = batch.tgt_out.size(1)
    ban = torch.zeros(T, logits.size(-1), dtype=torch.bool)
    ban[:, BANNED] = True
    if fixed_length:
        ban[:fixed_length, EOS_ID] = True
    logp = F.log_softmax((logits.float() / temperature).masked_fill(ban, -math.inf), -1)
    scored = batch.tgt_out.ne(PAD_ID) & batch.tgt_out.ne(UNK_ID)
    if fixed_length:
        scored &= batch.tgt_out.ne(EOS_ID)
    token = logp.gather(-1, batch.tgt_out.clamp(min=EOS_ID).unsqueeze(-1)).squeeze(-1)
    return -(token.masked_fill(~scored, 0.0)).sum(1), scored


# ---------------------------------------------------------------------------------------------------------
# the shared rule is the sampler's


@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("min_new_tokens", [0, 4])
def test_sampling_log_probs_are_what_generate_draws_from(monkeypatch, temperature, min_new_tokens):
    torch.manual_seed(0)
    net = LSTMGenerator(12, 8, 8)
    with torch.no_grad():
        net.head.bias[BANNED + [EOS_ID]] += 3.0  # the net itself likes the banned ids
    drawn_from = []
    real_draw = sampling.sample_from_probs
    monkeypatch.setattr(sampling, "sample_from_probs", lambda p, g=None: drawn_from.append(p) or real_draw(p, g))
    src, mask = torch.full((6, 1), NULL_ID), torch.zeros(6, 1, dtype=torch.bool)
    out = generate(net, src, mask, max_new_tokens=4, min_new_tokens=min_new_tokens, temperature=temperature,
                   banned_ids=BANNED, generator=torch.Generator().manual_seed(1))
    L = out.tokens.size(1)
    tgt_in = torch.cat([torch.full((6, 1), BOS_ID), out.tokens[:, :-1]], 1)
    banned = position_banned_mask(12, L, min_new_tokens, BANNED)
    probs = sampling_log_probs(net(src, mask, tgt_in), banned, temperature).exp()  # (6, L, V)
    live = ~torch.cat([torch.zeros(6, 1, dtype=torch.bool), out.tokens[:, :-1].eq(EOS_ID).cummax(1).values], 1)
    for t in range(L):  # rows that already ended feed PAD; their draws are discarded by generate
        torch.testing.assert_close(probs[live[:, t], t], drawn_from[t][live[:, t]], atol=1e-5, rtol=1e-4)
    assert probs[..., BANNED].max() == 0
    if min_new_tokens:
        assert probs[:, :min_new_tokens, EOS_ID].max() == 0


@pytest.mark.parametrize("fixed_length", [3, None], ids=["oracle", "text"])
def test_mass_on_banned_ids_does_not_change_the_nll(fixed_length):
    torch.manual_seed(0)
    table = torch.randn(8, len(VOCAB))
    batch = oracle_batch() if fixed_length else text_batch()
    clean = attach(with_net(mle_model(len(VOCAB)), TableNet(table)), VOCAB, fixed_length)
    heavy_net = TableNet(heavy_on_banned(table, VOCAB, fixed_length or 0))
    heavy = attach(with_net(mle_model(len(VOCAB)), heavy_net), VOCAB, fixed_length)
    lp_clean, n_clean = clean.score_batch(batch)
    lp_heavy, n_heavy = heavy.score_batch(batch)
    torch.testing.assert_close(lp_heavy, lp_clean)
    assert torch.equal(n_heavy, n_clean)
    # the full softmax (the old NLL_test) would have charged the heavy model for the mass it puts on banned ids
    _, scored = hand_masked_nll(heavy_net(batch.src, batch.src_pad_mask, batch.tgt_in), batch, fixed_length)
    assert full_softmax_nll(heavy_net, batch, scored) > -lp_heavy.sum() + 1.0


@pytest.mark.parametrize("fixed_length", [3, None], ids=["oracle", "text"])
@pytest.mark.parametrize("family", ["transformer", "gan"])
def test_nll_test_equals_the_hand_computed_masked_value(fixed_length, family):
    model = mle_model(len(VOCAB)) if family == "transformer" else gan_model(len(VOCAB))
    model = attach(model, VOCAB, fixed_length).eval()
    batch = oracle_batch() if fixed_length else text_batch()
    lp, counts = model.score_batch(batch)
    want, scored = hand_masked_nll(model.generator(batch.src, batch.src_pad_mask, batch.tgt_in), batch, fixed_length)
    torch.testing.assert_close(-lp, want)
    assert counts.tolist() == scored.sum(1).tolist()
    if fixed_length:
        assert counts.tolist() == [3, 3, 3]  # the L words; the end token after them is never sampled
    else:
        assert counts.tolist() == [3, 4, 2]  # words + end token, UNK left out


def test_mle_loss_is_the_mean_masked_nll_and_leaves_banned_ids_alone():
    model = attach(mle_model(len(VOCAB)), VOCAB, None)
    batch = text_batch()
    logits = model.generator(batch.src, batch.src_pad_mask, batch.tgt_in).detach().requires_grad_(True)
    loss = model.teacher_forced_loss(logits, batch)
    want, scored = hand_masked_nll(logits.detach(), batch, None)
    torch.testing.assert_close(loss, want.sum() / scored.sum())
    loss.backward()
    assert torch.isfinite(logits.grad).all()
    assert logits.grad[..., BANNED].abs().max() == 0  # no capacity goes into pushing down what is never sampled
    assert logits.grad[..., A:].abs().sum() > 0


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_label_smoothing_is_pytorchs_rule_over_the_allowed_ids(smoothing):
    torch.manual_seed(0)
    batch = text_batch()
    T, V = batch.tgt_out.size(1), len(VOCAB)
    logits = torch.randn(len(batch), T, V)
    nothing_banned = torch.zeros(T, V, dtype=torch.bool)
    loss = mle_loss(logits, batch.tgt_out, banned=nothing_banned, scored=batch.tgt_out.ne(PAD_ID),
                    label_smoothing=smoothing)
    want = F.cross_entropy(logits.reshape(-1, V), batch.tgt_out.reshape(-1), ignore_index=PAD_ID,
                           label_smoothing=smoothing)
    torch.testing.assert_close(loss, want)
    # with a ban: eps spread evenly over the allowed ids only
    banned = nothing_banned.clone()
    banned[:, BANNED] = True
    scored = batch.tgt_out.ne(PAD_ID) & batch.tgt_out.ne(UNK_ID)
    loss = mle_loss(logits, batch.tgt_out, banned=banned, scored=scored, label_smoothing=smoothing)
    logp = F.log_softmax(logits.masked_fill(banned, -math.inf), -1)
    allowed = [i for i in range(V) if i not in BANNED]
    per_token = (-(1 - smoothing) * logp.gather(-1, batch.tgt_out.clamp(min=EOS_ID).unsqueeze(-1)).squeeze(-1)
                 - smoothing * logp[..., allowed].mean(-1))
    torch.testing.assert_close(loss, per_token[scored].mean())


# ---------------------------------------------------------------------------------------------------------
# every caller goes through the one rule


def tiny_oracle(**kw):
    args = dict(preset="small", vocab_size=25, seq_len=6, num_train=32, num_val=16, num_test=24, batch_size=8)
    return OracleDataModule(**{**args, **kw})


def test_training_losses_of_both_families_are_the_masked_loss(monkeypatch):
    calls = []
    real = GeneratorModule.teacher_forced_loss

    def spy(self, logits, batch, label_smoothing=0.0):
        calls.append(self.family)
        return real(self, logits, batch, label_smoothing)

    monkeypatch.setattr(GeneratorModule, "teacher_forced_loss", spy)
    dm = tiny_oracle()
    for model in (mle_model(dm.vocab_size, num_eval_samples=0), gan_model(dm.vocab_size, pretrain_epochs=1)):
        pl.Trainer(accelerator="cpu", devices=1, max_epochs=1, limit_train_batches=1, limit_val_batches=0,
                   logger=False, enable_checkpointing=False, enable_progress_bar=False,
                   enable_model_summary=False).fit(model, dm)
    assert calls == ["transformer", "gan"]  # MLE training and the GAN's MLE pretraining


def test_probe_likelihoods_are_the_masked_ones(monkeypatch):
    import experiments.q3_conditioning.probes as probes
    from experiments.q3_conditioning.probes import _model_scores

    calls = []
    real = probes.target_log_probs  # the shared function of modules.sampling
    monkeypatch.setattr(probes, "target_log_probs", lambda *a, **k: calls.append(1) or real(*a, **k))
    torch.manual_seed(0)
    table = torch.randn(8, len(VOCAB))
    y = torch.tensor([[A, B_, C], [E, E, D]])
    candidates = [(torch.full((2, 1), label), torch.zeros(2, 1, dtype=torch.bool)) for label in (5, 6)]
    dm = SimpleNamespace(seq_len=3, vocab=VOCAB)
    scores = {}
    for name, t in [("clean", table), ("heavy", heavy_on_banned(table, VOCAB, 3))]:
        model = attach(with_net(mle_model(len(VOCAB)), TableNet(t)), VOCAB, fixed_length=3)
        scores[name] = _model_scores(model, dm, y, candidates, None)
    assert len(calls) == 4  # 2 models x 2 candidate conditions, each through the shared rule
    torch.testing.assert_close(scores["heavy"], scores["clean"])
    ban = torch.zeros(len(VOCAB), dtype=torch.bool)
    ban[BANNED + [EOS_ID]] = True
    logp = F.log_softmax(table[:3].masked_fill(ban, -math.inf), -1)  # (3, V)
    want = logp.gather(-1, y.T).sum(0)  # the table ignores the condition: both columns alike
    torch.testing.assert_close(scores["clean"], torch.stack([want, want], 1))


@pytest.mark.parametrize("temperature", [0.6, 1.0, 1.5])
def test_temperature_curve_nll_is_the_masked_tempered_nll(temperature):
    from experiments.q4_temperature.temperature import nll_test_at

    dm = tiny_oracle()
    dm.prepare()
    torch.manual_seed(0)
    table = torch.randn(16, dm.vocab_size)
    model = attach(with_net(mle_model(dm.vocab_size), TableNet(heavy_on_banned(table, dm.vocab, dm.seq_len))),
                   dm.vocab, fixed_length=dm.seq_len)
    got = nll_test_at(model, dm, temperature)
    ban = position_banned_mask(dm.vocab_size, 16, dm.seq_len, dm.vocab.non_output_ids)
    logp = F.log_softmax((table / temperature).masked_fill(ban, -math.inf), -1)  # (16, V): the clean model
    total = sum(float(logp[torch.arange(dm.seq_len), torch.tensor(ex.tgt)].sum()) for ex in dm.examples("test"))
    n = len(dm.examples("test"))
    assert got["per_sentence"] == pytest.approx(-total / n, rel=1e-5)
    assert got["per_token"] == pytest.approx(-total / (n * dm.seq_len), rel=1e-5)


# ---------------------------------------------------------------------------------------------------------
# a GAN with z: the marginal over K draws


P_HIGH = 0.9  # p(a | z > 0) = p(b | z < 0) at each of the 3 positions


def sign_of_z_gan(K: int) -> TextGAN:
    """p(y | z) = prod_t p(y_t | sign z) over the words a, b (the vocabulary's only words); lots of mass on UNK
    that the ban removes."""
    vocab = Vocab(["a", "b"])  # a = 5, b = 6
    pos, neg = torch.full((4, 7), -3.0), torch.full((4, 7), -3.0)
    pos[:, 5], pos[:, 6] = math.log(P_HIGH), math.log(1 - P_HIGH)
    neg[:, 5], neg[:, 6] = math.log(1 - P_HIGH), math.log(P_HIGH)
    pos[:, UNK_ID] = neg[:, UNK_ID] = 4.0
    model = gan_model(7, z_dim=1, nll_z_samples=K)
    return attach(with_net(model, TableNet(pos, neg)), vocab, fixed_length=3)


def exact_nll_aaa() -> float:
    """-log p(a a a) with z ~ N(0, 1): sign(z) is a fair coin."""
    return -math.log(0.5 * P_HIGH**3 + 0.5 * (1 - P_HIGH) ** 3)


def mean_nll(model: GeneratorModule, rows: int = 400, batches: int = 3) -> float:
    batch = collate([Example([NULL_ID], [5, 5, 5])] * rows)
    return -sum(float(model.score_batch(batch, i)[0].mean()) for i in range(batches)) / batches


def test_one_z_draw_overstates_the_nll_and_many_draws_approach_the_marginal():
    exact = exact_nll_aaa()
    by_k = {K: mean_nll(sign_of_z_gan(K)) for K in (1, 8, 64, 1024)}
    one_draw = 0.5 * -3 * math.log(P_HIGH) + 0.5 * -3 * math.log(1 - P_HIGH)  # E_z[-log p(y | z)]
    assert by_k[1] == pytest.approx(one_draw, abs=0.2)
    assert by_k[1] > exact + 2.0
    assert by_k[1] > by_k[8] > by_k[64] > by_k[1024] > exact - 0.005  # the upper bound tightens with K
    assert by_k[64] == pytest.approx(exact, abs=0.05)
    assert by_k[1024] == pytest.approx(exact, abs=0.01)


def test_k_is_a_recorded_model_argument():
    assert sign_of_z_gan(16).evaluation.nll_z_samples == 16
    assert gan_model(10).evaluation.nll_z_samples == 64
    with pytest.raises(ValueError, match="model.evaluation.nll_z_samples"):
        gan_model(10, nll_z_samples=0)


@pytest.mark.parametrize("family", ["transformer", "gan"])
def test_a_model_without_z_is_scored_exactly_once_whatever_k(family):
    batch = oracle_batch()
    scores = []
    for K in (1, 64):
        model = mle_model(len(VOCAB)) if family == "transformer" else gan_model(len(VOCAB), nll_z_samples=K)
        model = attach(model, VOCAB, fixed_length=3).eval()
        scores.append(model.score_batch(batch)[0])
        assert model.score_batch_draws(batch)[0].shape == (1, 3)  # one forward, no repetition
    assert torch.equal(scores[0], scores[1])
    want, _ = hand_masked_nll(model.generator(batch.src, batch.src_pad_mask, batch.tgt_in), batch, 3)
    torch.testing.assert_close(-scores[0], want)


def test_z_draws_are_seeded_per_batch_and_leave_the_training_rng_alone():
    model = sign_of_z_gan(8)
    batch = collate([Example([NULL_ID], [5, 6, 5])] * 16)
    torch.manual_seed(123)
    state, py_state = torch.get_rng_state(), random.getstate()
    first = model.score_batch_draws(batch, batch_idx=0)[0]
    again = model.score_batch_draws(batch, batch_idx=0)[0]
    other = model.score_batch_draws(batch, batch_idx=1)[0]
    assert torch.equal(torch.get_rng_state(), state) and random.getstate() == py_state
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert first.shape == (8, 16)


def test_chunking_the_k_draws_changes_no_number(monkeypatch):
    model = sign_of_z_gan(64)
    batch = collate([Example([NULL_ID], [5, 6, 5])] * 10)
    whole = model.score_batch(batch)[0]
    monkeypatch.setattr("modules.models.base.SCORE_CHUNK_LOGITS", 1)  # one draw per chunk
    torch.testing.assert_close(model.score_batch(batch)[0], whole, rtol=0, atol=1e-6)


@pytest.mark.parametrize("draws, levels", [(64, (1, 8, 64)), (8, (1, 8))])
def test_test_stage_logs_the_bound_at_1_8_and_64_draws_up_to_its_own(draws, levels):
    dm = tiny_oracle()
    tr = dict(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False)
    gan = gan_model(dm.vocab_size, z_dim=4, nll_z_samples=draws, num_eval_samples=8)
    m = pl.Trainer(**tr).test(gan, dm, verbose=False)[0]
    for k in levels:
        for unit in ("token", "sentence"):
            assert math.isfinite(m[f"test/nll_test_per_{unit}_z{k}"])
    assert not any(key.endswith(f"_z{k}") for key in m for k in (1, 8, 64) if k not in levels)
    assert m["test/nll_test_per_token"] == pytest.approx(m[f"test/nll_test_per_token_z{draws}"], rel=1e-6)
    assert m["test/nll_test_per_sentence_z1"] == pytest.approx(dm.seq_len * m["test/nll_test_per_token_z1"], rel=1e-6)
    # the run's own NLL_test is what the temperature curve reports at T = 1 (same seeded draws)
    from experiments.q4_temperature.temperature import nll_test_at

    assert nll_test_at(gan, dm, 1.0)["per_token"] == pytest.approx(m["test/nll_test_per_token"], rel=1e-5)
    mle = pl.Trainer(**tr).test(mle_model(dm.vocab_size, num_eval_samples=8), dm, verbose=False)[0]
    assert "test/nll_test_per_token" in mle and not any("_z" in key for key in mle)


# ---------------------------------------------------------------------------------------------------------
# the model's entropy: its own NLL of its own samples


def entropy_run(model: GeneratorModule, dm) -> float:
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False)
    return trainer.test(model, dm, verbose=False)[0]["test/model_entropy_per_token"]


@pytest.mark.parametrize("temperature", [1.0, 0.5])
@pytest.mark.parametrize("family", ["transformer", "gan-with-z"])
def test_entropy_of_a_uniform_model_is_log_n_per_token(family, temperature):
    dm = tiny_oracle()
    dm.prepare()
    flat = torch.zeros(16, dm.vocab_size)  # uniform over the whole vocabulary before the ban
    if family == "transformer":
        model = with_net(mle_model(dm.vocab_size, num_eval_samples=40, eval_temperature=temperature), TableNet(flat))
    else:
        model = with_net(gan_model(dm.vocab_size, z_dim=1, num_eval_samples=40, eval_temperature=temperature,
                                   nll_z_samples=4), TableNet(flat, flat))
    n_allowed = dm.vocab_size - len(dm.vocab.non_output_ids) - 1  # oracle data: no end token within the L words
    assert entropy_run(model, dm) == pytest.approx(math.log(n_allowed), rel=1e-5)


def test_entropy_of_a_uniform_model_on_text_counts_the_end_token(tmp_path):
    words = "the a cat dog sat ran on mat".split()
    rng = random.Random(0)
    (tmp_path / "train.txt").write_text("".join(" ".join(rng.choice(words) for _ in range(rng.randint(2, 5))) + "\n"
                                                for _ in range(60)))
    dm = TextDataModule(train=str(tmp_path / "train.txt"), batch_size=8)
    dm.prepare()
    flat = torch.zeros(32, dm.vocab_size)
    model = with_net(mle_model(dm.vocab_size, num_eval_samples=30), TableNet(flat))
    n_allowed = dm.vocab_size - len(dm.vocab.non_output_ids)  # the words and the end token
    assert entropy_run(model, dm) == pytest.approx(math.log(n_allowed), rel=1e-5)


def test_entropy_is_scored_at_the_sampling_temperature():
    dm = tiny_oracle()
    dm.prepare()
    torch.manual_seed(0)
    table = 2.0 * torch.randn(16, dm.vocab_size)
    T = 0.7
    model = with_net(mle_model(dm.vocab_size, num_eval_samples=1500, eval_temperature=T, bleu_max_n=2),
                     TableNet(heavy_on_banned(table, dm.vocab, dm.seq_len)))
    ban = position_banned_mask(dm.vocab_size, dm.seq_len, dm.seq_len, dm.vocab.non_output_ids)
    logp = F.log_softmax((table[: dm.seq_len] / T).masked_fill(ban, -math.inf), -1)
    exact = float(-(logp.exp() * logp.nan_to_num(neginf=0.0)).sum(-1).mean())  # mean entropy of the L positions
    # 1500 x 6 tokens: the standard error of the estimate is about 0.015 nats
    assert entropy_run(model, dm) == pytest.approx(exact, abs=0.06)
