"""The shared sampler (modules/sampling.py)."""

import math

import pytest
import torch

from modules.nets.lstm_generator import LSTMGenerator
from modules.nets.transformer import EncoderDecoderTransformer, TransformerConfig
from modules.sampling import (
    SampleOutput,
    banned_mask,
    generate,
    generate_in_batches,
    process_logits,
    sample_from_probs,
)

V = 30
PAD, BOS, EOS, UNK, NULL = 0, 1, 2, 3, 4
LABELS = (5, 6, 7)
BANNED = (PAD, BOS, UNK, NULL) + LABELS


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # these nets are tiny: intra-op threads only add synchronisation cost (badly so on a busy machine)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class ScriptedNet:
    """Follows the step protocol with logits chosen by a function of (time step, batch size)."""

    def __init__(self, logits_fn):
        self.logits_fn = logits_fn

    def init_state(self, src, src_pad_mask, z=None):
        return 0

    def step(self, prev_tokens, t):
        return self.logits_fn(t, prev_tokens.size(0)), t + 1


def condition(B, kind="null"):
    """B rows of one NULL token (unconditional) or of a short source sentence with padding."""
    if kind == "null":
        src = torch.full((B, 1), NULL)
    else:
        src = torch.randint(8, V, (B, 4), generator=torch.Generator().manual_seed(3))
        src[::2, 2:] = PAD
    return src, src == PAD


def lstm():
    torch.manual_seed(0)
    return LSTMGenerator(V, emb_dim=16, hidden_dim=16).eval()


def transformer():
    torch.manual_seed(0)
    cfg = TransformerConfig(vocab_size=V, d_model=32, n_heads=4, n_encoder_layers=1, n_decoder_layers=1,
                            d_ff=64, dropout=0.0, max_len=32)
    return EncoderDecoderTransformer(cfg).eval()


NETS = {"lstm": lstm, "transformer": transformer}


@pytest.mark.parametrize("name", NETS)
def test_same_seed_same_samples(name):
    net = NETS[name]()
    src, mask = condition(16, "source")
    kw = {"max_new_tokens": 12, "banned_ids": BANNED}
    a = generate(net, src, mask, generator=torch.Generator().manual_seed(7), **kw)
    b = generate(net, src, mask, generator=torch.Generator().manual_seed(7), **kw)
    c = generate(net, src, mask, generator=torch.Generator().manual_seed(8), **kw)
    assert isinstance(a, SampleOutput)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.lengths, b.lengths)
    assert not torch.equal(a.tokens[:, :5], c.tokens[:, :5])


@pytest.mark.parametrize("name", NETS)
def test_degenerate_settings_equal_greedy(name):
    net = NETS[name]()
    src, mask = condition(8, "source")
    kw = {"max_new_tokens": 10, "min_new_tokens": 10, "banned_ids": BANNED}  # fixed length: rows align
    greedy = generate(net, src, mask, greedy=True, **kw).tokens
    g = torch.Generator().manual_seed(0)
    assert torch.equal(generate(net, src, mask, temperature=1e-4, generator=g, **kw).tokens, greedy)
    assert torch.equal(generate(net, src, mask, top_k=1, generator=g, **kw).tokens, greedy)
    assert torch.equal(generate(net, src, mask, top_p=1e-6, generator=g, **kw).tokens, greedy)
    # and plain sampling does differ from greedy, so the three checks above mean something
    assert not torch.equal(generate(net, src, mask, generator=g, **kw).tokens, greedy)


def test_banned_ids_never_appear():
    # a net that loves exactly the ids it must not produce
    def logits_fn(t, B):
        logits = torch.zeros(B, V)
        logits[:, list(BANNED)] = 10.0
        return logits

    out = generate(ScriptedNet(logits_fn), *condition(500), max_new_tokens=8, banned_ids=BANNED,
                   generator=torch.Generator().manual_seed(0))
    produced = out.tokens[out.tokens != PAD]
    assert len(produced) > 0
    assert not torch.isin(produced, torch.tensor(BANNED)).any()

    net = lstm()
    out = generate(net, *condition(200), max_new_tokens=15, banned_ids=BANNED,
                   generator=torch.Generator().manual_seed(0))
    produced = out.tokens[out.tokens != PAD]
    assert not torch.isin(produced, torch.tensor(BANNED)).any()


@pytest.mark.parametrize("name", NETS)
def test_exact_length_rows(name):
    net = NETS[name]()
    with torch.no_grad():  # make EOS very likely, so only the rule can keep rows going
        if name == "lstm":
            net.head.bias[EOS] += 20.0
    L = 9
    out = generate(net, *condition(64), max_new_tokens=L, min_new_tokens=L, banned_ids=BANNED,
                   generator=torch.Generator().manual_seed(0))
    assert out.tokens.shape == (64, L)
    assert (out.lengths == L).all() and not out.ended.any()
    assert not (out.tokens == EOS).any() and not (out.tokens == PAD).any()


def test_eos_stops_a_row_and_pads_after():
    # row b wants EOS at step b+1 (0-based), and the word 10 + t before that
    def logits_fn(t, B):
        logits = torch.zeros(B, V)
        for b in range(B):
            logits[b, EOS if t == b + 1 else 10 + t] = 50.0
        return logits

    out = generate(ScriptedNet(logits_fn), *condition(3), max_new_tokens=6, greedy=True)
    # 4 columns, not 6: the loop exits as soon as the last row has emitted its EOS
    assert out.tokens.tolist() == [
        [10, EOS, PAD, PAD],
        [10, 11, EOS, PAD],
        [10, 11, 12, EOS],
    ]
    assert out.lengths.tolist() == [1, 2, 3]
    assert out.ended.all()


def test_max_new_tokens_leaves_row_without_eos():
    def logits_fn(t, B):
        logits = torch.zeros(B, V)
        logits[:, 12] = 50.0
        logits[0, EOS] = 60.0 if t == 2 else -50.0
        return logits

    out = generate(ScriptedNet(logits_fn), *condition(2), max_new_tokens=5, greedy=True)
    assert out.tokens.tolist() == [[12, 12, EOS, PAD, PAD], [12, 12, 12, 12, 12]]
    assert out.lengths.tolist() == [2, 5]
    assert out.ended.tolist() == [True, False]


def test_min_new_tokens_delays_eos():
    def always_eos(t, B):
        logits = torch.zeros(B, V)
        logits[:, EOS] = 50.0
        return logits

    out = generate(ScriptedNet(always_eos), *condition(4), max_new_tokens=10, min_new_tokens=3,
                   generator=torch.Generator().manual_seed(0))
    assert out.tokens.shape == (4, 4)
    assert (out.tokens[:, 3] == EOS).all() and not (out.tokens[:, :3] == EOS).any()
    assert (out.lengths == 3).all()


def test_temperature_matches_the_distribution():
    base = torch.tensor([2.0, 1.0, 0.0, -1.0])
    words = torch.tensor([10, 11, 12, 13])

    def logits_fn(t, B):
        logits = torch.full((B, V), -1e9)
        logits[:, words] = base
        return logits

    N, temperature = 6000, 2.0
    out = generate(ScriptedNet(logits_fn), *condition(N), max_new_tokens=1, temperature=temperature,
                   generator=torch.Generator().manual_seed(0))
    freq = torch.stack([(out.tokens[:, 0] == w).float().mean() for w in words])
    expected = torch.softmax(base / temperature, dim=0)
    assert (freq - expected).abs().max() < 4 * math.sqrt(0.25 / N)


def test_sample_from_probs():
    g = torch.Generator().manual_seed(0)
    probs = torch.tensor([[0.0, 0.5, 0.0, 0.5, 0.0]]).expand(4000, -1)
    draws = sample_from_probs(probs, g)
    assert set(draws.tolist()) == {1, 3}
    assert abs((draws == 1).float().mean().item() - 0.5) < 0.05
    last_only = torch.tensor([[0.0, 0.0, 0.0, 1.0]]).expand(1000, -1)
    assert (sample_from_probs(last_only, g) == 3).all()
    # unnormalised rows work too: the uniform is scaled by each row's total
    assert set(sample_from_probs(torch.tensor([[0.0, 3.0], [2.0, 0.0]]), g).tolist()) == {0, 1}


def test_process_logits_truncation():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = lambda x: torch.isfinite(x)[0].tolist()
    assert kept(process_logits(logits, top_k=2)) == [True, True, False, False]
    assert kept(process_logits(logits, top_k=10)) == [True] * 4
    assert kept(process_logits(logits, top_p=0.7)) == [True, True, False, False]
    assert kept(process_logits(logits, top_p=0.5)) == [True, False, False, False]
    assert kept(process_logits(logits, top_p=0.96)) == [True] * 4
    assert kept(process_logits(logits, top_p=1.0)) == [True] * 4
    # banning comes first, so truncation chooses among the allowed ids
    banned = banned_mask(4, [0])
    assert kept(process_logits(logits, top_k=1, banned=banned)) == [False, True, False, False]
    torch.testing.assert_close(process_logits(logits, temperature=0.5), logits * 2)
    # works on (B, T, V) as well, which the Gumbel-softmax path needs
    assert process_logits(torch.randn(2, 3, 4), top_k=2, top_p=0.9).shape == (2, 3, 4)


def test_argument_errors():
    net, (src, mask) = ScriptedNet(lambda t, B: torch.zeros(B, V)), condition(2)
    with pytest.raises(ValueError, match="greedy=True"):
        generate(net, src, mask, max_new_tokens=3, temperature=0.0)
    with pytest.raises(ValueError, match="top_k"):
        generate(net, src, mask, max_new_tokens=3, top_k=0)
    for top_p in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="top_p"):
            generate(net, src, mask, max_new_tokens=3, top_p=top_p)
    with pytest.raises(ValueError, match="min_new_tokens"):
        generate(net, src, mask, max_new_tokens=3, min_new_tokens=4)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(net, src, mask, max_new_tokens=0)
    with pytest.raises(ValueError, match="eos_id"):
        generate(net, src, mask, max_new_tokens=3, banned_ids=(0, 2))
    with pytest.raises(ValueError, match="banned ids"):
        generate(net, src, mask, max_new_tokens=3, banned_ids=(0, V))
    with pytest.raises(ValueError, match="greedy=True"):
        process_logits(torch.zeros(1, V), temperature=-1.0)


def test_generate_in_batches():
    net = lstm()
    kw = {"max_new_tokens": 8, "banned_ids": BANNED}
    # one shared condition
    out = generate_in_batches(net, torch.tensor([NULL]), num_samples=50, batch_size=16, progress=True,
                              generator=torch.Generator().manual_seed(0), **kw)
    assert out.tokens.shape[0] == 50 and out.lengths.shape == (50,) and out.tokens.size(1) <= 8
    # equals one big call with the same generator: chunks consume the random stream in order
    # (only when every chunk runs to max_new_tokens, so use fixed-length rows)
    kw_fixed = {"max_new_tokens": 6, "min_new_tokens": 6, "banned_ids": BANNED}
    chunked = generate_in_batches(net, torch.tensor([NULL]), 40, 40, generator=torch.Generator().manual_seed(1),
                                  **kw_fixed)
    whole = generate(net, *condition(40), generator=torch.Generator().manual_seed(1), **kw_fixed)
    assert torch.equal(chunked.tokens, whole.tokens)

    # one condition per sample, with padding, and greedy: chunking must not change anything
    src, mask = condition(30, "source")
    chunked = generate_in_batches(net, src, 30, 7, condition_pad_mask=mask, greedy=True, **kw)
    whole = generate(net, src, mask, greedy=True, **kw)
    L = whole.tokens.size(1)
    assert torch.equal(chunked.tokens[:, :L], whole.tokens) and (chunked.tokens[:, L:] == PAD).all()
    assert torch.equal(chunked.lengths, whole.lengths)

    # z is sliced per chunk
    torch.manual_seed(0)
    znet = LSTMGenerator(V, emb_dim=16, hidden_dim=16, z_dim=4).eval()
    z = torch.randn(30, 4)
    chunked = generate_in_batches(znet, src, 30, 8, condition_pad_mask=mask, z=z, greedy=True, **kw)
    whole = generate(znet, src, mask, z=z, greedy=True, **kw)
    assert torch.equal(chunked.tokens[:, :whole.tokens.size(1)], whole.tokens)
    with pytest.raises(ValueError, match="rows"):
        generate_in_batches(znet, src, 30, 8, z=z[:10], **kw)


def test_grad_flag():
    net = lstm()
    src, mask = condition(2)
    seen = []

    class Spy:
        def init_state(self, *a, **k):
            return net.init_state(*a, **k)

        def step(self, prev, state):
            seen.append(torch.is_grad_enabled())
            return net.step(prev, state)

    generate(Spy(), src, mask, max_new_tokens=2, min_new_tokens=2, banned_ids=BANNED)
    generate(Spy(), src, mask, max_new_tokens=2, min_new_tokens=2, banned_ids=BANNED, grad=True)
    assert seen == [False, False, True, True]
