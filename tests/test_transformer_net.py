"""The generator nets: the encoder-decoder Transformer and the LSTM generator (modules/nets)."""

import pytest
import torch
import torch.nn.functional as F

from modules.nets.lstm_generator import LSTMGenerator
from modules.nets.transformer import (
    EncoderDecoderTransformer,
    TransformerConfig,
    num_target_tokens,
    sequence_log_prob,
)
from modules.sampling import generate

V = 40
PAD, BOS, EOS = 0, 1, 2
BANNED = (0, 1, 3, 4)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # these nets are tiny: intra-op threads only add synchronisation cost (badly so on a busy machine)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def make_transformer(**overrides) -> EncoderDecoderTransformer:
    kwargs = {"vocab_size": V, "d_model": 32, "n_heads": 4, "n_encoder_layers": 2, "n_decoder_layers": 2,
              "d_ff": 64, "dropout": 0.0, "max_len": 32}
    kwargs.update(overrides)
    torch.manual_seed(0)
    return EncoderDecoderTransformer(TransformerConfig(**kwargs)).eval()


def make_lstm(**overrides) -> LSTMGenerator:
    torch.manual_seed(0)
    return LSTMGenerator(V, **overrides).eval()


def make_batch(B=3, S=5, T=7, seed=1):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(5, V, (B, S), generator=g)
    src_pad_mask = torch.zeros(B, S, dtype=torch.bool)
    src_pad_mask[1, 3:] = True  # row 1 has 3 real tokens
    src_pad_mask[2, 1:] = True  # row 2 has 1 real token (a label-like condition)
    src = src.masked_fill(src_pad_mask, PAD)
    tgt = torch.randint(5, V, (B, T), generator=g)
    tgt[:, 0] = BOS
    tgt[:, -1] = EOS
    tgt[1, 4] = EOS
    tgt[1, 5:] = PAD
    tgt_pad_mask = tgt == PAD
    return src, src_pad_mask, tgt, tgt_pad_mask


def naive_greedy(net, src, src_pad_mask, n, z=None, banned=BANNED):
    """Greedy decoding without any cache: re-run forward on the growing prefix each step."""
    B = src.size(0)
    prefix = torch.full((B, 1), BOS, dtype=torch.long)
    with torch.no_grad():
        for _ in range(n):
            logits = net(src, src_pad_mask, prefix, z)[:, -1, :]
            logits[:, list(banned)] = float("-inf")
            prefix = torch.cat([prefix, logits.argmax(-1, keepdim=True)], dim=1)
    return prefix[:, 1:]


NETS = {
    "transformer": lambda: (make_transformer(), None),
    "transformer_learned_untied": lambda: (make_transformer(positional="learned", tie_embeddings=False), None),
    "transformer_z": lambda: (make_transformer(z_dim=6), torch.randn(3, 6, generator=torch.Generator().manual_seed(5))),
    "lstm": lambda: (make_lstm(), None),
    "lstm_z": lambda: (make_lstm(z_dim=6, num_layers=2), torch.randn(3, 6, generator=torch.Generator().manual_seed(5))),
}


@pytest.mark.parametrize("name", NETS)
def test_forward_shape_and_log_prob(name):
    net, z = NETS[name]()
    src, src_pad_mask, tgt, tgt_pad_mask = make_batch()
    logits = net(src, src_pad_mask, tgt[:, :-1], z)
    assert logits.shape == (3, 6, V)
    assert torch.isfinite(logits).all()

    lp = net.log_prob(src, src_pad_mask, tgt, tgt_pad_mask, z)
    by_hand = torch.zeros(3)
    logp = F.log_softmax(logits, dim=-1)
    for b in range(3):
        for t in range(1, tgt.size(1)):
            if not tgt_pad_mask[b, t]:
                by_hand[b] += logp[b, t - 1, tgt[b, t]]
    torch.testing.assert_close(lp, by_hand, atol=1e-5, rtol=1e-5)
    assert lp.shape == (3,) and (lp < 0).all()
    assert num_target_tokens(tgt_pad_mask).tolist() == [6, 4, 6]
    torch.testing.assert_close(sequence_log_prob(logits, tgt, tgt_pad_mask), lp)


@pytest.mark.parametrize("name", NETS)
def test_cached_step_matches_forward(name):
    net, z = NETS[name]()
    src, src_pad_mask, tgt, _ = make_batch()
    tgt_in = tgt[:, :-1]
    with torch.no_grad():
        full = net(src, src_pad_mask, tgt_in, z)  # (B, T, V)
        state = net.init_state(src, src_pad_mask, z=z)
        stepped = []
        for t in range(tgt_in.size(1)):
            logits, state = net.step(tgt_in[:, t], state)
            stepped.append(logits)
    torch.testing.assert_close(torch.stack(stepped, dim=1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", NETS)
def test_greedy_generate_matches_uncached_loop(name):
    net, z = NETS[name]()
    src, src_pad_mask, _, _ = make_batch()
    n = 10
    # min_new_tokens=n forbids EOS throughout, so all n positions of every row are compared
    out = generate(net, src, src_pad_mask, max_new_tokens=n, min_new_tokens=n, greedy=True, z=z, banned_ids=BANNED)
    ref = naive_greedy(net, src, src_pad_mask, n, z, banned=BANNED + (EOS,))
    assert torch.equal(out.tokens, ref)
    assert out.lengths.tolist() == [n] * 3
    assert not out.ended.any()


@pytest.mark.parametrize("name", NETS)
def test_greedy_generate_stops_like_uncached_loop(name):
    net, z = NETS[name]()
    src, src_pad_mask, _, _ = make_batch()
    n = 12
    ref = naive_greedy(net, src, src_pad_mask, n, z)
    # a random net rarely picks EOS, so let a word that row 0 emits at step 3 play the EOS
    eos = ref[0, 3].item()
    out = generate(net, src, src_pad_mask, max_new_tokens=n, greedy=True, z=z, eos_id=eos)
    for b in range(3):
        hits = (ref[b] == eos).nonzero()
        L = hits[0].item() + 1 if len(hits) else n
        assert torch.equal(out.tokens[b, :L], ref[b, :L])
        assert (out.tokens[b, L:] == PAD).all()
        assert out.ended[b].item() == bool(len(hits))
        assert out.lengths[b].item() == (L - 1 if len(hits) else n)
    assert out.ended[0] and out.lengths[0] <= 3


def test_causal():
    net = make_transformer()
    src, src_pad_mask, tgt, _ = make_batch()
    tgt_in = tgt[:, :-1].clone()
    t = 3
    with torch.no_grad():
        before = net(src, src_pad_mask, tgt_in)
        tgt_in[:, t] = (tgt_in[:, t] + 1 - 5) % (V - 5) + 5
        after = net(src, src_pad_mask, tgt_in)
    torch.testing.assert_close(after[:, :t], before[:, :t], atol=0, rtol=0)
    assert not torch.allclose(after[:, t:], before[:, t:])


@pytest.mark.parametrize("z_dim", [0, 4])
def test_src_padding_is_ignored(z_dim):
    net = make_transformer(z_dim=z_dim)
    z = torch.randn(3, z_dim) if z_dim else None
    src, src_pad_mask, tgt, _ = make_batch()
    with torch.no_grad():
        before = net(src, src_pad_mask, tgt[:, :-1], z)
        src2 = src.clone()
        src2[src_pad_mask] = 17  # change what sits under the padding
        after = net(src2, src_pad_mask, tgt[:, :-1], z)
        src3 = src.clone()
        src3[0, 0] = 18 if src[0, 0] != 18 else 19  # a real token does matter
        changed = net(src3, src_pad_mask, tgt[:, :-1], z)
    torch.testing.assert_close(after, before, atol=1e-6, rtol=1e-6)
    assert not torch.allclose(changed[0], before[0])


def test_lstm_src_padding_is_ignored():
    net = make_lstm()
    src, src_pad_mask, tgt, _ = make_batch()
    with torch.no_grad():
        before = net(src, src_pad_mask, tgt[:, :-1])
        src2 = src.clone()
        src2[src_pad_mask] = 17
        after = net(src2, src_pad_mask, tgt[:, :-1])
    torch.testing.assert_close(after, before)


def test_z_changes_output_and_is_required():
    net = make_transformer(z_dim=4)
    src, src_pad_mask, tgt, _ = make_batch()
    with torch.no_grad():
        a = net(src, src_pad_mask, tgt[:, :-1], torch.randn(3, 4))
        b = net(src, src_pad_mask, tgt[:, :-1], torch.randn(3, 4))
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="z_dim"):
        net(src, src_pad_mask, tgt[:, :-1])
    with pytest.raises(ValueError, match="shape"):
        net(src, src_pad_mask, tgt[:, :-1], torch.randn(3, 5))
    with pytest.raises(ValueError, match="z_dim=0"):
        make_transformer()(src, src_pad_mask, tgt[:, :-1], torch.randn(3, 4))
    with pytest.raises(ValueError, match="z_dim=0"):
        make_lstm()(src, src_pad_mask, tgt[:, :-1], torch.randn(3, 4))
    assert not any("z_proj" in n for n, _ in make_transformer().named_parameters())


def test_tie_embeddings():
    tied = make_transformer(tie_embeddings=True)
    assert tied.lm_head.weight is tied.tgt_emb.weight
    assert tied.src_emb.weight is tied.tgt_emb.weight
    untied = make_transformer(tie_embeddings=False)
    assert untied.lm_head.weight is not untied.tgt_emb.weight
    assert untied.src_emb.weight is not untied.tgt_emb.weight
    assert untied.num_parameters() - tied.num_parameters() == 2 * V * 32
    # a gradient through the output projection reaches the shared matrix
    src, src_pad_mask, tgt, tgt_pad_mask = make_batch()
    tied.train()
    (-tied.log_prob(src, src_pad_mask, tgt, tgt_pad_mask).sum()).backward()
    assert tied.tgt_emb.weight.grad is not None and tied.tgt_emb.weight.grad.abs().sum() > 0


def test_positional_variants_and_max_len():
    for positional in ("sinusoidal", "learned"):
        net = make_transformer(positional=positional, max_len=8)
        src, src_pad_mask, tgt, _ = make_batch(T=8)
        assert net(src, src_pad_mask, tgt[:, :-1]).shape == (3, 7, V)
        with pytest.raises(ValueError, match="max_len"):
            net(src, src_pad_mask, torch.ones(3, 9, dtype=torch.long))
    with pytest.raises(ValueError):
        TransformerConfig(vocab_size=V, positional="rotary")
    with pytest.raises(ValueError):
        TransformerConfig(vocab_size=V, d_model=30, n_heads=4)


def test_step_state_is_not_mutated():
    """An old state stays valid after step, so rollouts can branch from a shared prefix."""
    net = make_transformer()
    src, src_pad_mask, _, _ = make_batch()
    with torch.no_grad():
        s0 = net.init_state(src, src_pad_mask)
        _, s1 = net.step(torch.full((3,), BOS), s0)
        a, _ = net.step(torch.full((3,), 7), s1)
        _, _ = net.step(torch.full((3,), 9), s1)
        b, _ = net.step(torch.full((3,), 7), s1)
    assert s0.pos == 0 and s1.pos == 1
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("kind", ["transformer", "lstm"])
def test_overfits_tiny_batch(kind):
    torch.manual_seed(0)
    if kind == "transformer":
        net = EncoderDecoderTransformer(TransformerConfig(vocab_size=V, d_model=32, n_heads=4, n_encoder_layers=1,
                                                          n_decoder_layers=1, d_ff=64, dropout=0.0, max_len=16))
    else:
        net = LSTMGenerator(V, emb_dim=32, hidden_dim=64)
    src, src_pad_mask, tgt, tgt_pad_mask = make_batch(B=4, T=8)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    net.train()
    for _ in range(100):
        loss = -(net.log_prob(src, src_pad_mask, tgt, tgt_pad_mask).sum() / num_target_tokens(tgt_pad_mask).sum())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05
