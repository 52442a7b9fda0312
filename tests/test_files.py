"""The one atomic writer (modules/files.py): ordinary file modes, and a crash mid-write keeps the old file."""

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from modules.files import atomic_open, atomic_write_bytes, atomic_write_text

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("write", [
    lambda p: atomic_write_text(p, "hello\n"),
    lambda p: atomic_write_bytes(p, b"hello\n"),
], ids=["text", "bytes"])
def test_a_new_file_gets_the_ordinary_mode_0644_under_umask_022(tmp_path, umask_022, write):
    path = tmp_path / "out.txt"
    write(path)
    assert path.read_bytes() == b"hello\n"
    assert _mode(path) == 0o644


def test_the_mode_follows_the_umask(tmp_path):
    previous = os.umask(0o077)
    try:
        atomic_write_text(tmp_path / "private.txt", "x")
    finally:
        os.umask(previous)
    assert _mode(tmp_path / "private.txt") == 0o600


def test_gvt_sample_out_file_is_0644(tmp_path, umask_022, monkeypatch):
    """`gvt sample --out` came out 0600 (mkstemp's mode) before the writers were merged."""
    import torch

    from modules import sample_cli

    class Tiny:  # the loaded model: only what sample_cli.main calls
        _data_info = {"condition": "none"}
        vocab = None

        def sample(self, src, mask, **kwargs):
            from modules.sampling import SampleOutput

            n = src.size(0)
            return SampleOutput(torch.full((n, 2), 7), torch.full((n,), 2), torch.ones(n, dtype=torch.bool))

        def decode_samples(self, tokens, lengths):
            return [row[:n] for row, n in zip(tokens.tolist(), lengths.tolist())]

        def to_text(self, ids):
            return " ".join(map(str, ids))

    monkeypatch.setattr(sample_cli, "load_model", lambda path: Tiny())
    out = tmp_path / "samples.txt"
    assert sample_cli.main(["--checkpoint", "unused.ckpt", "--num-samples", "3", "--out", str(out)]) == 0
    assert out.read_text() == "7 7\n7 7\n7 7\n"
    assert _mode(out) == 0o644


def test_an_exception_mid_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "table.jsonl"
    path.write_text("old\n")
    with pytest.raises(RuntimeError):
        with atomic_open(path) as f:
            f.write("half of the new")
            raise RuntimeError("crash")
    assert path.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.jsonl"]


def test_a_killed_process_mid_write_keeps_the_old_file(tmp_path):
    """No cleanup runs at all (os._exit): the old file is still whole under its name."""
    path = tmp_path / "table.jsonl"
    path.write_text("old\n")
    code = (
        "import os, sys\n"
        "from modules.files import atomic_open\n"
        "with atomic_open(sys.argv[1]) as f:\n"
        "    f.write('half of the new'); f.flush()\n"
        "    os._exit(9)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(path)], cwd=ROOT)
    assert proc.returncode == 9
    assert path.read_text() == "old\n"
    leftovers = [p for p in tmp_path.iterdir() if p.name != "table.jsonl"]
    assert [p.read_text() for p in leftovers] == ["half of the new"]  # only a hidden temporary beside it
    assert all(p.name.startswith(".table.jsonl.") and p.name.endswith(".tmp") for p in leftovers)


def test_a_complete_write_replaces_the_old_content(tmp_path):
    path = tmp_path / "a" / "b.csv"  # missing folders are made
    atomic_write_text(path, "x,y\r\n1,2\r\n")
    atomic_write_text(path, "x,y\r\n3,4\r\n")
    assert path.read_bytes() == b"x,y\r\n3,4\r\n"  # newlines as given: the csv module's \r\n survive


def test_torch_save_through_the_writer_round_trips(tmp_path):
    import torch

    path = tmp_path / "cache.pt"
    with atomic_open(path, "wb") as f:
        torch.save({"t": torch.arange(3)}, f)
    assert torch.equal(torch.load(path, weights_only=True)["t"], torch.arange(3))


def test_only_whole_file_modes_are_accepted(tmp_path):
    with pytest.raises(ValueError, match="mode must be"):
        with atomic_open(tmp_path / "x", "a"):
            pass


def test_no_other_module_renames_temporary_files_itself():
    """One writer: no second copy of the temp-file-and-rename helper grows back."""
    offenders = []
    for folder in ("modules", "experiments"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.name == "files.py" and path.parent.name == "modules":
                continue
            text = path.read_text(encoding="utf-8")
            if "os.replace(" in text or "mkstemp(" in text:
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
