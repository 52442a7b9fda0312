"""C3 (experiments/c3_attention/attention.py): cross-attention weights, alignment accuracy, heatmap PNGs, W&B images."""

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from experiments.c3_attention.attention import (
    AttentionHeatmaps,
    alignment_accuracy,
    alignment_hits,
    attention_maps,
    encode_pairs,
    log_heatmaps,
    masking_test,
    positional_baseline,
    positional_hits,
    positional_prior,
    write_heatmaps,
)
from modules.data import TaskDataModule
from modules.data.vocab import EOS_ID, UNK_ID
from modules.models import RNNSeq2Seq, TransformerSeq2Seq
from modules.nets.transformer import EncoderDecoderTransformer, TransformerConfig

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_dm(task="copy", **kwargs) -> TaskDataModule:
    args = dict(num_words=10, min_len=3, max_len=6, num_train=1000, num_val=32, num_test=100, batch_size=32)
    return TaskDataModule(task, **{**args, **kwargs})


def make_transformer(V=20, z_dim=0) -> EncoderDecoderTransformer:
    torch.manual_seed(0)
    config = TransformerConfig(V, d_model=32, n_heads=4, n_encoder_layers=1, n_decoder_layers=2, d_ff=64,
                               dropout=0.0, max_len=32, z_dim=z_dim)
    return EncoderDecoderTransformer(config).eval()


def make_batch(V=20):
    g = torch.Generator().manual_seed(1)
    src = torch.randint(5, V, (3, 5), generator=g)
    src_pad_mask = torch.zeros(3, 5, dtype=torch.bool)
    src_pad_mask[1, 3:] = True
    src_pad_mask[2, 1:] = True
    tgt_in = torch.randint(5, V, (3, 6), generator=g)
    tgt_in[:, 0] = 1
    return src.masked_fill(src_pad_mask, 0), src_pad_mask, tgt_in


# ---- the Transformer's cross-attention weights -------------------------------------------------------------------

def test_transformer_cross_attention_weights_per_layer_and_head():
    net = make_transformer()
    src, src_pad_mask, tgt_in = make_batch()
    with torch.no_grad():
        logits, weights = net.cross_attention(src, src_pad_mask, tgt_in)
        plain = net(src, src_pad_mask, tgt_in)
    torch.testing.assert_close(logits, plain, atol=0, rtol=0)  # asking for the weights changes nothing
    assert weights.shape == (3, 2, 4, 6, 5)  # (B, layers, heads, T, S)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 2, 4, 6))
    pad = src_pad_mask[:, None, None, None, :].expand_as(weights)
    assert (weights[pad] == 0).all() and (weights[~pad] > 0).all()


def test_transformer_weights_are_the_ones_the_fused_kernel_applies():
    """weights @ V through the output projection reproduces each layer's cross-attention output (SDPA)."""
    net = make_transformer()
    src, src_pad_mask, tgt_in = make_batch()
    captured = []
    hooks = [block.cross_attn.register_forward_hook(lambda m, args, out: captured.append((args, out)))
             for block in net.decoder]
    with torch.no_grad():
        _, weights = net.cross_attention(src, src_pad_mask, tgt_in)
    for h in hooks:
        h.remove()
    assert len(captured) == 2
    for layer, ((x, k, v), out) in enumerate(captured):
        y = weights[:, layer] @ v  # (B, H, T, hd)
        B, H, T, hd = y.shape
        rebuilt = net.decoder[layer].cross_attn.out_proj(y.transpose(1, 2).reshape(B, T, H * hd))
        torch.testing.assert_close(rebuilt, out, atol=1e-5, rtol=1e-5)


def test_attention_maps_average_heads_and_drop_the_latent_slot():
    net = make_transformer(z_dim=3)
    src, src_pad_mask, tgt_in = make_batch()
    z = torch.randn(3, 3)
    with torch.no_grad():
        _, raw = net.cross_attention(src, src_pad_mask, tgt_in, z)

    class WithZ(nn.Module):  # feeds a fixed z, as a GAN module would
        def __init__(self):
            super().__init__()
            self.inner, self.z_dim = net, 3

        def cross_attention(self, s, m, t):
            return self.inner.cross_attention(s, m, t, z)

    maps = attention_maps(WithZ(), src, src_pad_mask, tgt_in)
    assert raw.shape[-1] == 6 and maps.heads.shape == (3, 2, 4, 6, 5)
    torch.testing.assert_close(maps.heads, raw[..., 1:])
    torch.testing.assert_close(maps.mean, raw[..., 1:].mean(dim=(1, 2)))


# ---- alignment accuracy --------------------------------------------------------------------------------------------

def test_planted_attention_gives_exactly_the_expected_accuracy():
    # 2 examples: source lengths 4 and 3, padded to S = 5; T = 5 rows (the last is the EOS / padding)
    weights = torch.full((2, 5, 5), 0.01)
    for t, j in enumerate([0, 1, 3, 3]):  # example 0 (copy, 4 words): rows 0, 1 and 3 right, row 2 wrong
        weights[0, t, j] = 0.9
    weights[0, :, 4] = 5.0  # heavy weight on a padding column never counts: only real positions compete
    for t, j in enumerate([2, 0, 1]):  # example 1 (reverse, 3 words): row 0 right only
        weights[1, t, j] = 0.9
    accuracy = alignment_hits(weights, src_lens=[4, 3], alignments=[[0, 1, 2, 3], [2, 1, 0]])
    assert accuracy.tolist() == pytest.approx([3 / 4, 1 / 3], abs=1e-7)  # float32


class PlantedAttention(nn.Module):
    """A 'model' whose attention is one-hot on a chosen source position for every output word."""

    def __init__(self, position):
        super().__init__()
        self.position = position  # (t, src_len) -> the attended source position
        self.dummy = nn.Parameter(torch.zeros(1))

    def cross_attention(self, src, src_pad_mask, tgt_in):
        B, S = src.shape
        weights = torch.zeros(B, tgt_in.size(1), S)
        for b, n in enumerate((~src_pad_mask).sum(1).tolist()):
            for t in range(tgt_in.size(1)):
                weights[b, t, self.position(t, n) if t < n else 0] = 1.0
        return None, weights


def test_alignment_accuracy_of_planted_models():
    copy, reverse = make_dm("copy"), make_dm("reverse")
    diagonal = PlantedAttention(lambda t, n: t)
    assert alignment_accuracy(diagonal, copy).accuracy.tolist() == [1.0] * 100
    # a copy-aligned model on the reverse task is right only at the middle word of an odd-length source
    result = alignment_accuracy(diagonal, reverse, batch_size=7)
    expected = [1 / len(ex.src) if len(ex.src) % 2 else 0.0 for ex in reverse.examples("test")]
    assert result.accuracy.tolist() == pytest.approx(expected)
    assert result.chance.tolist() == pytest.approx([1 / len(ex.src) for ex in reverse.examples("test")])
    anti = PlantedAttention(lambda t, n: n - 1 - t)
    assert alignment_accuracy(anti, reverse).accuracy.tolist() == [1.0] * 100


def test_sort_has_no_alignment_to_score_with_repeated_words():
    with pytest.raises(ValueError, match="no unique true alignment"):
        alignment_accuracy(PlantedAttention(lambda t, n: t), make_dm("sort"))


class AlignedAttention(PlantedAttention):
    """One-hot attention on each example's true source position (``dm.alignment``), found from the source."""

    def __init__(self, dm):
        super().__init__(None)
        self.dm = dm

    def cross_attention(self, src, src_pad_mask, tgt_in):
        B, S = src.shape
        weights = torch.zeros(B, tgt_in.size(1), S)
        for b, (row, pad) in enumerate(zip(src.tolist(), src_pad_mask.tolist())):
            source = [x for x, p in zip(row, pad) if not p]
            for t, j in enumerate(self.dm.alignment(source)):
                weights[b, t, j] = 1.0
        return None, weights


def test_sort_alignment_is_scored_with_distinct_words():
    dm = make_dm("sort", distinct=True)
    result = alignment_accuracy(AlignedAttention(dm), dm)
    assert result.accuracy.tolist() == [1.0] * 100
    diagonal = alignment_accuracy(PlantedAttention(lambda t, n: t), dm)
    # a fixed pattern on a random permutation: right 1 / L of the time on average
    assert diagonal.accuracy.mean().item() == pytest.approx(result.chance.mean().item(), abs=0.06)


# ---- the positional baseline ---------------------------------------------------------------------------------------

def test_positional_prior_is_the_most_frequent_position_per_length_and_output_position():
    fit = [[0, 1], [0, 1], [1, 0], [2, 1, 0], [0, 1, 2], [2, 1, 0]]
    assert positional_prior(fit) == {(2, 0): 0, (2, 1): 1, (3, 0): 2, (3, 1): 1, (3, 2): 0}
    assert positional_prior([[0, 1], [1, 0]]) == {(2, 0): 0, (2, 1): 0}  # a tie: the lowest position


def test_positional_hits_score_the_fitted_prior_and_fall_back_on_hindsight():
    fit = [[0, 1], [0, 1], [1, 0]]
    assert positional_hits(fit, [[0, 1], [1, 0]]).tolist() == [1.0, 0.0]
    # length 3 is never in fit: its prior is the scored examples' own most frequent positions ([2, 1, 0])
    assert positional_hits(fit, [[2, 1, 0], [2, 1, 0], [0, 1, 2]]).tolist() == pytest.approx([1.0, 1.0, 1 / 3])
    with pytest.raises(ValueError, match="no output words"):
        positional_hits(fit, [[]])


@pytest.mark.parametrize("task", ["copy", "reverse"])
def test_positional_baseline_solves_the_positional_tasks(task):
    dm = make_dm(task)
    assert positional_baseline(dm).tolist() == [1.0] * 100  # the diagonal / anti-diagonal, fitted on train
    assert alignment_accuracy(PlantedAttention(lambda t, n: t), dm).positional.tolist() == [1.0] * 100


def test_positional_baseline_of_sort_is_about_chance():
    dm = make_dm("sort", distinct=True, num_test=400, max_len=5)  # lengths 3-5
    baseline = positional_baseline(dm)
    chance = torch.tensor([1 / len(ex.src) for ex in dm.examples("test")])
    assert baseline.shape == (400,)
    # the mean of 400 per-example hit rates of a fixed pattern on random permutations: chance +- about 0.03
    assert baseline.mean().item() == pytest.approx(chance.mean().item(), abs=0.05)
    summary = alignment_accuracy(AlignedAttention(dm), dm).summary()
    assert summary["alignment_positional"] == pytest.approx(baseline.mean().item())


# ---- the masking test ------------------------------------------------------------------------------------------------

class ReadingNet(nn.Module):
    """A hand-built attention model: output word t attends to source position ``look(t, n)`` and emits the word at
    ``read(t, n)`` (EOS past the last word). With look == read the attention is faithful; otherwise it is not."""

    def __init__(self, vocab_size, look, read, logits=True):
        super().__init__()
        self.vocab_size, self.look, self.read, self.logits = vocab_size, look, read, logits
        self.dummy = nn.Parameter(torch.zeros(1))

    def cross_attention(self, src, src_pad_mask, tgt_in):
        B, S = src.shape
        T = tgt_in.size(1)
        weights, logits = torch.zeros(B, T, S), torch.zeros(B, T, self.vocab_size)
        for b, n in enumerate((~src_pad_mask).sum(1).tolist()):
            for t in range(T):
                weights[b, t, self.look(t, n) if t < n else 0] = 1.0
                logits[b, t, src[b, self.read(t, n)] if t < n else EOS_ID] = 1.0
        return (logits if self.logits else None), weights


def test_masking_the_token_a_faithful_model_reads_always_changes_its_output():
    dm = make_dm("copy")
    result = masking_test(ReadingNet(dm.vocab_size, lambda t, n: t, lambda t, n: t), dm, batch_size=7)
    # masked to <unk> (never emitted), the output word changes; another token masked, nothing changes
    assert result.attended.tolist() == [1.0] * 100 and result.random.tolist() == [0.0] * 100
    assert result.summary() == {"mask_flip_attended": 1.0, "mask_flip_random": 0.0, "mask_examples": 100,
                                "mask_skipped": 0}


def test_masking_exposes_attention_that_is_not_what_the_output_reads():
    dm = make_dm("copy", distinct=True, min_len=2, max_len=2, num_train=20, num_val=5, num_test=15)
    shifted = ReadingNet(dm.vocab_size, lambda t, n: t, lambda t, n: (t + 1) % n)  # looks at t, reads t + 1
    result = masking_test(shifted, dm)
    # two source words: the attended one never matters; the random other one is always the word read
    assert result.attended.tolist() == [0.0] * 15 and result.random.tolist() == [1.0] * 15

    dm = make_dm("copy", min_len=3, max_len=6)
    result = masking_test(ReadingNet(dm.vocab_size, lambda t, n: t, lambda t, n: (t + 1) % n), dm, seed=3)
    expected = torch.tensor([1 / (len(ex.src) - 1) for ex in dm.examples("test")])  # the read word drawn by chance
    assert result.attended.sum() == 0
    assert result.random.mean().item() == pytest.approx(expected.mean().item(), abs=0.08)


def test_masking_skips_single_word_sources_and_needs_logits():
    dm = make_dm("copy", test_min_len=1, test_max_len=2, num_test=50)
    single = sum(len(ex.src) == 1 for ex in dm.examples("test"))
    assert single > 0
    result = masking_test(ReadingNet(dm.vocab_size, lambda t, n: t, lambda t, n: t), dm)
    assert result.skipped == single and result.attended.numel() == 50 - single
    with pytest.raises(ValueError, match="gives no logits"):
        masking_test(ReadingNet(dm.vocab_size, lambda t, n: t, lambda t, n: t, logits=False), dm)


def test_masking_uses_unk_and_the_seed():
    dm = make_dm("copy")
    seen = []

    class Spy(ReadingNet):
        def cross_attention(self, src, src_pad_mask, tgt_in):
            seen.append(src.clone())
            return super().cross_attention(src, src_pad_mask, tgt_in)

    net = Spy(dm.vocab_size, lambda t, n: t, lambda t, n: t)
    masking_test(net, dm, max_examples=5)
    masked = torch.cat([s for s in seen[1:]])  # seen[0]: the unmasked batch
    assert (masked == UNK_ID).sum(dim=1).tolist() == [1] * masked.size(0)  # one token masked per copy
    a = masking_test(ReadingNet(dm.vocab_size, lambda t, n: t, lambda t, n: (t + 1) % n), dm, seed=1)
    b = masking_test(ReadingNet(dm.vocab_size, lambda t, n: t, lambda t, n: (t + 1) % n), dm, seed=1)
    assert a.random.tolist() == b.random.tolist()


@pytest.mark.parametrize("task", ["copy", "reverse"])
def test_briefly_trained_attention_aligns_far_above_chance(task):
    pl.seed_everything(0)
    dm = make_dm(task)
    model = RNNSeq2Seq(dm.vocab_size, emb_dim=32, hidden_dim=32, dropout=0.0, attention="additive", lr=1e-2,
                       evaluation=dict(num_eval_samples=0))
    before = alignment_accuracy(model, dm)
    tr = pl.Trainer(max_steps=150, max_epochs=-1, limit_val_batches=0, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    tr.fit(model, dm)
    after = alignment_accuracy(model, dm)
    chance = after.chance.mean().item()  # about 0.23 for sources of 3 to 6 words
    assert before.accuracy.mean().item() < chance + 0.15  # untrained: no better than guessing
    assert after.accuracy.mean().item() > chance + 0.4
    assert after.positional.tolist() == [1.0] * 100  # a positional task: a fixed pattern aligns it perfectly
    masked = masking_test(model, dm).summary()
    assert masked["mask_flip_attended"] > masked["mask_flip_random"] + 0.3  # it reads what it attends to


def test_a_model_without_attention_is_refused():
    dm = make_dm()
    model = RNNSeq2Seq(dm.vocab_size, emb_dim=8, hidden_dim=8, attention="none")
    with pytest.raises(ValueError, match="attention='none'"):
        alignment_accuracy(model, dm)
    with pytest.raises(ValueError, match="attention='none'"):
        write_heatmaps(model, dm.examples("test")[:1], "unused", vocab=dm.vocab)


# ---- heatmaps -----------------------------------------------------------------------------------------------------

def _is_png(path, min_size=50):
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == PNG_MAGIC
    height, width = imread(path).shape[:2]
    assert height >= min_size and width >= min_size


def test_rnn_heatmaps_are_written(tmp_path):
    dm = make_dm()
    model = RNNSeq2Seq(dm.vocab_size, emb_dim=8, hidden_dim=8, attention="dot")
    written = write_heatmaps(model, dm.examples("test")[:3], tmp_path / "rnn", vocab=dm.vocab)
    assert sorted(written) == ["attention_0", "attention_1", "attention_2"]
    for path in written.values():
        _is_png(path)


def test_transformer_heatmaps_mean_and_per_head(tmp_path):
    dm = make_dm()
    model = TransformerSeq2Seq(dm.vocab_size, d_model=16, n_heads=2, n_encoder_layers=1, n_decoder_layers=2,
                               d_ff=32, max_len=16)
    model.vocab, model.tokenizer = dm.vocab, dm.tokenizer
    pairs = encode_pairs(model, [("t1 t2 t3", "t3 t2 t1"), ("t4 t5", "t5 t4")])
    written = write_heatmaps(model, pairs, tmp_path / "tf", prefix="pair")
    assert sorted(written) == ["pair_0", "pair_0_heads", "pair_1", "pair_1_heads"]
    for path in written.values():
        _is_png(path)


def test_heatmaps_go_to_w_and_b_images_when_a_wandb_logger_is_there(tmp_path):
    class FakeWandbLogger:
        def __init__(self):
            self.calls = []

        def log_image(self, key, images, step=None):
            self.calls.append((key, images, step))

    path = tmp_path / "a.png"
    path.write_bytes(PNG_MAGIC)
    wandb_like, csv = FakeWandbLogger(), pl.loggers.CSVLogger(tmp_path)
    assert log_heatmaps([csv, wandb_like], {"attention_0": path}, step=7)
    assert wandb_like.calls == [("attention/attention_0", [str(path)], 7)]
    assert not log_heatmaps([csv], {"attention_0": path})


def test_callback_writes_heatmaps_during_fit_and_the_command_from_a_checkpoint(tmp_path):
    pl.seed_everything(0)
    dm = make_dm(num_train=64)
    model = RNNSeq2Seq(dm.vocab_size, emb_dim=8, hidden_dim=8, attention="additive",
                       evaluation=dict(num_eval_samples=0))
    logger = pl.loggers.CSVLogger(tmp_path)
    tr = pl.Trainer(max_steps=2, limit_val_batches=1, logger=logger, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
                    callbacks=[AttentionHeatmaps(num_pairs=2)], num_sanity_val_steps=0)
    tr.fit(model, dm)
    written = sorted((tmp_path / "lightning_logs" / "version_0" / "attention").glob("step*/*.png"))
    assert [p.name for p in written] == ["attention_0.png", "attention_1.png"]
    _is_png(written[0])

    # and from the checkpoint, for pairs given as text
    from experiments.c3_attention.attention import main

    tr.save_checkpoint(tmp_path / "m.ckpt")
    out = tmp_path / "from_ckpt"
    assert main(["--checkpoint", str(tmp_path / "m.ckpt"), "--src", "t1 t2 t3", "--tgt", "t1 t2 t3",
                 "--src", "t4 t5", "--tgt", "t4 t5", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["attention_0.png", "attention_1.png"]
