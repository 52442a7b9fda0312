"""The plain corpus readers: the shared real corpora load with their published counts, and bad input fails
with a DataError that says which file (and line) to fix."""

from __future__ import annotations

import gzip

import pytest

from modules.data.corpora import read_labeled, read_lines, read_parallel
from modules.data.errors import DataError


# ---- the shared corpora -----------------------------------------------------------------------------------------


def test_coco_has_10000_lines_per_split_including_the_unterminated_last_line(shared_data):
    for name in ("train.txt", "test.txt"):
        path = shared_data / "coco" / name
        lines = read_lines(path)
        assert len(lines) == 10_000, name
        assert not path.read_bytes().endswith(b"\n")  # the README's premise: the last line must still count
        assert lines[-1] == path.read_text("utf-8").rsplit("\n", 1)[-1].strip()


@pytest.mark.parametrize("split, count", [("train", 29_000), ("val", 1_014), ("test_2016_flickr", 1_000)])
def test_multi30k_pairs(shared_data, split, count):
    d = shared_data / "multi30k"
    pairs = read_parallel(d / f"{split}.de.gz", d / f"{split}.en.gz")
    assert len(pairs) == count
    assert all(de and en for de, en in pairs)


def test_multi30k_first_pair_is_aligned_and_keeps_case(shared_data):
    d = shared_data / "multi30k"
    de, en = read_parallel(d / "train.de.gz", d / "train.en.gz")[0]
    assert en.startswith("Two young, White males")
    assert de.startswith("Zwei junge weiße Männer")


def test_mr_has_5331_sentences_per_class_in_latin1(shared_data):
    d = shared_data / "mr"
    data = read_labeled({"pos": d / "rt-polarity.pos", "neg": d / "rt-polarity.neg"}, encoding="latin-1")
    counts = {label: sum(1 for lab, _ in data if lab == label) for label in ("pos", "neg")}
    assert counts == {"pos": 5_331, "neg": 5_331}
    # Byte 0x85 decodes to U+0085, a line separator for str.splitlines: it must stay inside its sentence.
    assert any("\x85" in text for _, text in data)


def test_mr_read_as_utf8_fails_naming_the_line_and_the_encoding_setting(shared_data):
    path = shared_data / "mr" / "rt-polarity.pos"
    with pytest.raises(DataError) as err:
        read_lines(path)
    msg = str(err.value)
    assert "rt-polarity.pos" in msg and "line 44 " in msg and "utf-8" in msg
    assert "data.encoding" in msg and "latin-1" in msg


# ---- bad input ----------------------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nope\.txt: no such file"):
        read_lines(tmp_path / "nope.txt")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.txt: the file is empty"):
        read_lines(path)


def test_empty_gzip_file(tmp_path):
    path = tmp_path / "empty.txt.gz"
    path.write_bytes(gzip.compress(b""))
    with pytest.raises(DataError, match="the file is empty"):
        read_lines(path)


def test_only_blank_lines(tmp_path):
    path = tmp_path / "blank.txt"
    path.write_text("\n   \n\t\n")
    with pytest.raises(DataError, match=r"blank\.txt: contains only blank lines \(3 of them\)"):
        read_lines(path)


def test_undecodable_bytes_name_line_offset_and_encoding_setting(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"fine\nalso fine\ncaf\xe9 au lait\n")
    with pytest.raises(DataError) as err:
        read_lines(path)
    msg = str(err.value)
    assert "bad.txt" in msg and "line 3 " in msg
    assert "byte e9" in msg and "byte offset 18" in msg and "column 4" in msg
    assert "set data.encoding (e.g. latin-1" in msg
    assert read_lines(path, encoding="latin-1")[-1] == "café au lait"


def test_undecodable_bytes_inside_gzip_name_the_line(tmp_path):
    path = tmp_path / "bad.txt.gz"
    path.write_bytes(gzip.compress(b"a\nb\n\xff\n"))
    with pytest.raises(DataError, match="line 3 is not valid utf-8"):
        read_lines(path)


def test_unknown_encoding(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("a\n")
    with pytest.raises(DataError, match="unknown text encoding 'klingon'.*data.encoding"):
        read_lines(path, encoding="klingon")


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(DataError, match="is a directory"):
        read_lines(tmp_path)


def test_gz_suffix_on_plain_text_is_reported(tmp_path):
    path = tmp_path / "plain.gz"
    path.write_text("hello\n")
    with pytest.raises(DataError, match="not gzip-compressed"):
        read_lines(path)


def test_truncated_gzip_is_reported(tmp_path):
    path = tmp_path / "cut.gz"
    path.write_bytes(gzip.compress(b"hello world\n" * 100)[:-20])
    with pytest.raises(DataError, match="corrupt or truncated"):
        read_lines(path)


def test_parallel_length_mismatch_names_both_files_and_counts(tmp_path):
    src, tgt = tmp_path / "a.de", tmp_path / "a.en"
    src.write_text("eins\nzwei\ndrei\n")
    tgt.write_text("one\ntwo\n")
    with pytest.raises(DataError) as err:
        read_parallel(src, tgt)
    msg = str(err.value)
    assert "a.de has 3 lines" in msg and "a.en has 2 lines" in msg


def test_read_labeled_with_no_files():
    with pytest.raises(DataError, match="at least one label"):
        read_labeled({})


# ---- conventions ----------------------------------------------------------------------------------------------------


def test_gzip_is_read_transparently_and_lines_are_stripped(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress("  a b \r\nc\r\n".encode()))
    assert read_lines(path) == ["a b", "c"]


def test_blank_lines_are_skipped_in_a_single_file(tmp_path):
    path = tmp_path / "x.txt"
    path.write_text("a\n\n  \nb\n\n")
    assert read_lines(path) == ["a", "b"]


def test_parallel_blank_line_drops_the_pair_and_keeps_alignment(tmp_path):
    src, tgt = tmp_path / "s", tmp_path / "t"
    src.write_text("s1\n\ns3\ns4\n")
    tgt.write_text("t1\nt2\n\nt4\n\n")  # the trailing blank line is not a length mismatch
    assert read_parallel(src, tgt) == [("s1", "t1"), ("s4", "t4")]


def test_utf8_byte_order_mark_is_dropped(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes("\ufeffhello\nworld\n".encode("utf-8"))
    assert read_lines(path) == ["hello", "world"]


def test_read_labeled_orders_by_label_whatever_the_mapping_order(tmp_path):
    (tmp_path / "p").write_text("good\ngreat\n")
    (tmp_path / "n").write_text("bad\n")
    data = read_labeled({"pos": tmp_path / "p", "neg": tmp_path / "n"})
    assert data == [("neg", "bad"), ("pos", "good"), ("pos", "great")]


# ---- control characters -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("char, name", [("\x00", "U+0000 (NUL)"), ("\x1b", "U+001B (ESC)"), ("\x0c", "U+000C (form feed)"),
                                        ("\x07", "U+0007 (a control character)"), ("\x7f", "U+007F (DEL)")])
def test_a_control_character_is_refused_naming_file_line_and_column(tmp_path, char, name):
    path = tmp_path / "train.txt"
    path.write_text(f"a man riding\nthe man riding{char} a horse\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        read_lines(path)
    assert f"{path}: line 2, column 15 holds {name}" in str(err.value)
    assert "data.control_chars=strip" in str(err.value)


def test_a_control_character_inside_gzip_is_refused(tmp_path):
    path = tmp_path / "train.en.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("riding\x00\n")
    with pytest.raises(DataError, match=r"line 1, column 7 holds U\+0000"):
        read_lines(path)


@pytest.mark.parametrize("side", ["src", "tgt"])
def test_parallel_files_refuse_control_characters_on_either_side(tmp_path, side):
    files = {"src": tmp_path / "a.de", "tgt": tmp_path / "a.en"}
    files["src"].write_text("ein mann\nzwei\n", encoding="utf-8")
    files["tgt"].write_text("a man\ntwo\n", encoding="utf-8")
    files[side].write_text(files[side].read_text(encoding="utf-8").replace("\n", "\x00\n", 1), encoding="utf-8")
    with pytest.raises(DataError, match=rf"{files[side].name}: line 1, column \d+ holds U\+0000"):
        read_parallel(files["src"], files["tgt"])


def test_labeled_files_refuse_control_characters(tmp_path):
    (tmp_path / "pos").write_text("good\n", encoding="utf-8")
    (tmp_path / "neg").write_text("bad\x1b[0m\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"neg: line 1, column 4 holds U\+001B"):
        read_labeled({"pos": tmp_path / "pos", "neg": tmp_path / "neg"})


def test_tab_is_allowed(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("a\tman\n", encoding="utf-8")
    assert read_lines(path) == ["a\tman"]


def test_latin1_c1_characters_pass(tmp_path):
    """MR's byte 0x85 (U+0085 in Latin-1, an ellipsis in cp1252) is text, not a control to refuse."""
    path = tmp_path / "mr.pos"
    path.write_bytes(b"well \x85 fine\n")
    assert read_lines(path, encoding="latin-1") == ["well \x85 fine"]


def test_strip_deletes_control_characters_and_logs_the_count(tmp_path, caplog):
    path = tmp_path / "train.txt"
    path.write_text("riding\x00\nclean\n\x01a\x02b\x7f\n", encoding="utf-8")
    with caplog.at_level("WARNING", logger="modules.data.corpora"):
        assert read_lines(path, control_chars="strip") == ["riding", "clean", "ab"]
    assert f"{path}: deleted 4 control characters on 2 lines (data.control_chars=strip)" in caplog.text


def test_an_unknown_control_chars_setting_is_refused(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("a\n", encoding="utf-8")
    with pytest.raises(DataError, match="data.control_chars must be 'error' or 'strip'"):
        read_lines(path, control_chars="ignore")
