"""Text discriminators (modules/nets/discriminators.py): inputs, masking, conditioning, minibatch std,
and that each kind can learn to tell oracle text from random text."""

import pytest
import torch
import torch.nn.functional as F

from modules.data import OracleDataModule
from modules.nets.discriminators import (
    CNNDiscriminator,
    TransformerDiscriminator,
    build_discriminator,
    minibatch_std,
)

V, B, L = 30, 4, 7
KINDS = ("cnn", "transformer", "lstm")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny nets: extra threads only add contention
    yield
    torch.set_num_threads(n)


def make(kind, **kw):
    torch.manual_seed(0)
    kwargs = dict(emb_dim=16, hidden_dim=16, filter_sizes=(2, 3), num_filters=8, n_heads=2, n_layers=1,
                  dropout=0.0, max_len=32)
    kwargs.update(kw)
    return build_discriminator(kind, V, **kwargs).eval()


def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, V, (B, L), generator=g)
    pad = torch.zeros(B, L, dtype=torch.bool)
    pad[1, 5:] = True
    ids = ids.masked_fill(pad, 0)
    src = torch.full((B, 1), 4)
    return ids, pad, src, torch.zeros(B, 1, dtype=torch.bool)


@pytest.mark.parametrize("kind", KINDS)
def test_ids_and_hard_onehots_score_alike(kind):
    D = make(kind)
    ids, pad, src, src_mask = inputs()
    by_ids = D(ids, src, src_mask, pad)
    assert by_ids.shape == (B,)
    by_onehots = D(F.one_hot(ids, V).float(), src, src_mask, pad)
    torch.testing.assert_close(by_ids, by_onehots, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_soft_onehots_carry_gradient(kind):
    D = make(kind)
    _, pad, src, src_mask = inputs()
    logits = torch.randn(B, L, V, requires_grad=True)
    D(torch.softmax(logits, dim=-1), src, src_mask, pad).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", KINDS)
def test_padding_content_is_ignored(kind):
    D = make(kind)
    ids, pad, src, src_mask = inputs()
    other = ids.clone()
    other[1, 5:] = 17  # whatever a generator put after its end
    torch.testing.assert_close(D(ids, src, src_mask, pad), D(other, src, src_mask, pad))


@pytest.mark.parametrize("kind", KINDS)
def test_condition_changes_the_score(kind):
    D = make(kind)
    ids, pad, src, src_mask = inputs()
    assert not torch.allclose(D(ids, src, src_mask, pad), D(ids, torch.full_like(src, 5), src_mask, pad))


def test_lstm_token_logits_read_only_the_prefix():
    D = make("lstm")
    assert D.per_token and not make("cnn").per_token
    ids, pad, src, src_mask = inputs()
    before = D.token_logits(ids, src, src_mask, pad)
    assert before.shape == (B, L)
    assert (before[1, 5:] == 0).all()  # padding gets no score
    changed = ids.clone()
    changed[:, 3] = (changed[:, 3] + 1 - 5) % (V - 5) + 5
    after = D.token_logits(changed, src, src_mask, pad)
    torch.testing.assert_close(before[:, :3], after[:, :3])
    assert not torch.allclose(before[:, 3], after[:, 3])
    # the sequence logit is the mean over real positions
    torch.testing.assert_close(D(ids, src, src_mask, pad)[1], before[1, :5].mean())


def test_sequence_level_discriminators_have_no_token_logits():
    ids, pad, src, src_mask = inputs()
    with pytest.raises(NotImplementedError):
        make("cnn").token_logits(ids, src, src_mask, pad)


def test_minibatch_std_values():
    x = torch.tensor([[1.0, 0.0], [3.0, 0.0]])  # per-feature std [1, 0] -> mean 0.5
    assert minibatch_std(x).item() == pytest.approx(0.5)
    assert minibatch_std(x[:1]).item() == 0.0  # one row: no spread
    # per position with a mask: the padded row does not count
    seq = torch.tensor([[[1.0], [5.0]], [[3.0], [100.0]]])  # (B=2, L=2, F=1)
    mask = torch.tensor([[False, False], [False, True]])
    assert minibatch_std(seq, mask).item() == pytest.approx(0.5, abs=1e-3)  # (1 + ~0) / 2


@pytest.mark.parametrize("kind", KINDS)
def test_minibatch_std_lets_d_see_the_batch(kind):
    D = make(kind, minibatch_std=True)
    ids, pad, src, src_mask = inputs()
    pad = torch.zeros_like(pad)
    # the same first row scores differently beside a copy of itself than beside different rows
    collapsed = ids[:1].repeat(B, 1)
    diverse = torch.cat([ids[:1], ids[1:]])
    a = D(collapsed, src, src_mask, pad)[0]
    b = D(diverse, src, src_mask, pad)[0]
    assert not torch.isclose(a, b)
    assert D(ids[:1], src[:1], src_mask[:1], pad[:1]).shape == (1,)  # batch of one works


def test_cnn_accepts_sequences_shorter_than_its_widest_filter():
    D = CNNDiscriminator(V, 8, (2, 5), 4)
    ids, pad, src, src_mask = inputs()
    assert D(ids[:, :2], src, src_mask, pad[:, :2]).shape == (B,)


def test_transformer_rejects_overlong_input():
    D = TransformerDiscriminator(V, 8, 2, 1, 16, 0.0, max_len=4)
    ids, pad, src, src_mask = inputs()
    with pytest.raises(ValueError, match="max_len"):
        D(ids, src, src_mask, pad)


def test_unknown_kind():
    with pytest.raises(ValueError, match="discriminator must be"):
        build_discriminator("rnn", V)


@pytest.mark.parametrize("kind", ["cnn", "lstm"])
def test_discriminator_separates_oracle_text_from_random_text(kind):
    dm = OracleDataModule(preset="small", vocab_size=40, seq_len=10, num_train=512, num_val=16, num_test=256)
    words = range(dm.vocab.num_reserved, dm.vocab_size)
    lo, hi = words.start, words.stop

    def real(split, n, g):
        rows = torch.randint(len(dm.examples(split)), (n,), generator=g)
        return torch.tensor([dm.examples(split)[i].tgt for i in rows.tolist()])

    torch.manual_seed(0)
    D = build_discriminator(kind, dm.vocab_size, emb_dim=16, hidden_dim=16, filter_sizes=(2, 3), num_filters=16,
                            n_layers=1, dropout=0.0)
    opt = torch.optim.Adam(D.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    n = 32
    src, src_mask = torch.full((n, 1), 4), torch.zeros(n, 1, dtype=torch.bool)
    pad = torch.zeros(n, 10, dtype=torch.bool)
    for _ in range(250):
        x_real, x_fake = real("train", n, g), torch.randint(lo, hi, (n, 10), generator=g)
        loss = F.softplus(-D(x_real, src, src_mask, pad)).mean() + F.softplus(D(x_fake, src, src_mask, pad)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    D.eval()
    m = 256
    src, src_mask, pad = torch.full((m, 1), 4), torch.zeros(m, 1, dtype=torch.bool), torch.zeros(m, 10, dtype=torch.bool)
    with torch.no_grad():
        acc_real = (D(real("test", m, g), src, src_mask, pad) > 0).float().mean()
        acc_fake = (D(torch.randint(lo, hi, (m, 10), generator=g), src, src_mask, pad) < 0).float().mean()
    assert (acc_real + acc_fake) / 2 > 0.9, (acc_real, acc_fake)
