"""The LSTM encoder-decoder (modules/nets/rnn_seq2seq.py): step protocol, padding, attention, the bottleneck."""

import pytest
import torch
import torch.nn.functional as F

from modules.nets.rnn_seq2seq import LSTMSeq2Seq, RNNSeq2SeqConfig
from modules.sampling import generate

V = 40
PAD, BOS, EOS = 0, 1, 2
BANNED = (0, 1, 3, 4)
KINDS = [(attention, layers) for attention in ("none", "additive", "dot") for layers in (1, 2)]
IDS = [f"{a}-{n}layer" for a, n in KINDS]


def make_net(attention="additive", num_layers=1, dropout=0.0) -> LSTMSeq2Seq:
    torch.manual_seed(0)
    config = RNNSeq2SeqConfig(V, emb_dim=16, hidden_dim=24, num_layers=num_layers, dropout=dropout,
                              attention=attention)
    return LSTMSeq2Seq(config).eval()


def make_batch(B=3, S=5, T=7, seed=1):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(5, V, (B, S), generator=g)
    src_pad_mask = torch.zeros(B, S, dtype=torch.bool)
    src_pad_mask[1, 3:] = True  # row 1 has 3 real tokens
    src_pad_mask[2, 1:] = True  # row 2 has 1 real token
    src = src.masked_fill(src_pad_mask, PAD)
    tgt = torch.randint(5, V, (B, T), generator=g)
    tgt[:, 0] = BOS
    tgt[:, -1] = EOS
    tgt[1, 4] = EOS
    tgt[1, 5:] = PAD
    return src, src_pad_mask, tgt, tgt == PAD


@pytest.mark.parametrize("attention,num_layers", KINDS, ids=IDS)
def test_step_reproduces_teacher_forced_logits(attention, num_layers):
    net = make_net(attention, num_layers)
    src, src_pad_mask, tgt, _ = make_batch()
    tgt_in = tgt[:, :-1]
    with torch.no_grad():
        full = net(src, src_pad_mask, tgt_in)  # (B, T, V)
        state = net.init_state(src, src_pad_mask)
        stepped = []
        for t in range(tgt_in.size(1)):
            logits, state = net.step(tgt_in[:, t], state)
            stepped.append(logits)
    assert full.shape == (3, 6, V)
    torch.testing.assert_close(torch.stack(stepped, dim=1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attention,num_layers", KINDS, ids=IDS)
def test_shared_sampler_greedy_matches_an_uncached_loop(attention, num_layers):
    net = make_net(attention, num_layers)
    src, src_pad_mask, _, _ = make_batch()
    n = 8
    out = generate(net, src, src_pad_mask, max_new_tokens=n, min_new_tokens=n, greedy=True, banned_ids=BANNED)
    prefix = torch.full((3, 1), BOS)
    with torch.no_grad():
        for _ in range(n):  # re-run the whole teacher-forced pass on the growing prefix
            logits = net(src, src_pad_mask, prefix)[:, -1, :]
            logits[:, list(BANNED) + [EOS]] = float("-inf")
            prefix = torch.cat([prefix, logits.argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out.tokens, prefix[:, 1:])


def test_log_prob_sums_the_target_tokens():
    net = make_net("dot")
    src, src_pad_mask, tgt, tgt_pad_mask = make_batch()
    with torch.no_grad():
        logp = F.log_softmax(net(src, src_pad_mask, tgt[:, :-1]), dim=-1)
        lp = net.log_prob(src, src_pad_mask, tgt, tgt_pad_mask)
    by_hand = torch.zeros(3)
    for b in range(3):
        for t in range(1, tgt.size(1)):
            if not tgt_pad_mask[b, t]:
                by_hand[b] += logp[b, t - 1, tgt[b, t]]
    torch.testing.assert_close(lp, by_hand)


@pytest.mark.parametrize("attention,num_layers", KINDS, ids=IDS)
def test_a_padded_row_decodes_as_it_would_alone(attention, num_layers):
    """Packing: padding never enters the recurrence, and the final state is the last real token's."""
    net = make_net(attention, num_layers)
    src, src_pad_mask, tgt, _ = make_batch()
    with torch.no_grad():
        batched = net(src, src_pad_mask, tgt[:, :-1])
        alone = net(src[1:2, :3], src_pad_mask[1:2, :3], tgt[1:2, :-1])
        src2 = src.clone()
        src2[src_pad_mask] = 17  # what sits under the padding is irrelevant
        repadded = net(src2, src_pad_mask, tgt[:, :-1])
    torch.testing.assert_close(batched[1:2], alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(repadded, batched)


@pytest.mark.parametrize("attention", ["additive", "dot"])
def test_attention_weights_are_distributions_over_real_source_positions(attention):
    net = make_net(attention)
    src, src_pad_mask, tgt, _ = make_batch()
    with torch.no_grad():
        logits, weights = net.cross_attention(src, src_pad_mask, tgt[:, :-1])
    assert weights.shape == (3, 6, 5)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 6))
    assert (weights[src_pad_mask.unsqueeze(1).expand_as(weights)] == 0).all()
    assert (weights[~src_pad_mask.unsqueeze(1).expand_as(weights)] > 0).all()
    torch.testing.assert_close(logits, net(src, src_pad_mask, tgt[:, :-1]))


@pytest.mark.parametrize("attention", ["none", "additive", "dot"])
def test_only_attention_reads_beyond_the_context_vector(attention, monkeypatch):
    """attention='none' is the classic bottleneck: replace every encoder output except the final state and its
    output stays the same; with attention it changes."""
    net = make_net(attention)
    src, src_pad_mask, tgt, _ = make_batch()
    with torch.no_grad():
        before = net(src, src_pad_mask, tgt[:, :-1])
        encode = net.encode

        def scrambled(*args):
            memory, state = encode(*args)
            return torch.randn_like(memory), state

        monkeypatch.setattr(net, "encode", scrambled)
        after = net(src, src_pad_mask, tgt[:, :-1])
    if attention == "none":
        torch.testing.assert_close(after, before, atol=0, rtol=0)
    else:
        assert not torch.allclose(after, before)


def test_a_net_without_attention_has_no_weights_to_show():
    net = make_net("none")
    src, src_pad_mask, tgt, _ = make_batch()
    with pytest.raises(ValueError, match="attention='none'"):
        net.cross_attention(src, src_pad_mask, tgt[:, :-1])
    assert not any("attn" in name for name, _ in net.named_parameters())


def test_step_state_is_not_mutated():
    net = make_net("additive", 2)
    src, src_pad_mask, _, _ = make_batch()
    with torch.no_grad():
        s0 = net.init_state(src, src_pad_mask)
        h0 = s0.h.clone()
        _, s1 = net.step(torch.full((3,), BOS), s0)
        a, _ = net.step(torch.full((3,), 7), s1)
        net.step(torch.full((3,), 9), s1)
        b, _ = net.step(torch.full((3,), 7), s1)
    torch.testing.assert_close(s0.h, h0)
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("attention", ["none", "additive"])
def test_overfits_a_tiny_batch(attention):
    net = make_net(attention).train()
    src, src_pad_mask, tgt, tgt_pad_mask = make_batch(B=4, T=8)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(150):
        loss = -(net.log_prob(src, src_pad_mask, tgt, tgt_pad_mask).sum() / (~tgt_pad_mask[:, 1:]).sum())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05


def test_bad_settings_and_inputs_are_refused():
    with pytest.raises(ValueError, match="attention must be one of"):
        RNNSeq2SeqConfig(V, attention="luong")
    with pytest.raises(ValueError, match="hidden_dim"):
        RNNSeq2SeqConfig(V, hidden_dim=0)
    with pytest.raises(ValueError, match="dropout"):
        RNNSeq2SeqConfig(V, dropout=1.0)
    net = make_net()
    src, src_pad_mask, tgt, _ = make_batch()
    with pytest.raises(ValueError, match="right-padded"):
        net(src, src_pad_mask.flip(1), tgt[:, :-1])
    empty = src_pad_mask.clone()
    empty[0] = True
    with pytest.raises(ValueError, match="at least one real token"):
        net(src, empty, tgt[:, :-1])
    with pytest.raises(ValueError, match="z_dim=0"):
        net(src, src_pad_mask, tgt[:, :-1], torch.randn(3, 4))
