import json

import numpy as np
import pytest

from pyrnn.vocab import Vocab


def test_char_build_order_and_ids():
    v = Vocab.build(["abracadabra", "cab"])
    # counts: a=6, b=3, r=2, c=2, d=1; r before c by first appearance
    assert v.tokens == ("<pad>", "<unk>", "<eos>", "a", "b", "r", "c", "d")
    assert (v.pad_id, v.unk_id, v.eos_id) == (0, 1, 2)
    assert len(v) == 8
    ids = v.encode("abcz")
    assert ids.dtype == np.int64
    assert ids.tolist() == [3, 4, 6, 1]
    assert v.encode("ab", add_eos=True).tolist() == [3, 4, 2]
    assert v.encode("").tolist() == []


def test_char_roundtrip_newlines_and_unicode():
    text = "déf f(x):\n\treturn x  # ✓ 😀\n"
    v = Vocab.build(text)
    assert v.decode(v.encode(text)) == text
    assert v.encode("\n").tolist() == [v.token_to_id("\n")]
    # a character outside the table's range maps to <unk>
    assert v.encode("\U0010FFFF").tolist() == [1]


def test_char_vectorised_encode_matches_dict_lookup():
    rng = np.random.default_rng(0)
    text = "".join(rng.choice(list("abcdefg\n é"), size=5000))
    v = Vocab.build(text[:2500], max_size=9)
    slow = [v.token_to_id(c) for c in text]
    assert v.encode(text).tolist() == slow
    assert v.encode(list(text)).tolist() == slow


def test_min_freq_and_max_size():
    v = Vocab.build("aaaabbbccd", min_freq=2)
    assert v.tokens[3:] == ("a", "b", "c")
    v = Vocab.build("aaaabbbccd", max_size=5)
    assert v.tokens[3:] == ("a", "b")
    assert len(v) == 5
    v = Vocab.build("aaaabbbccd", max_size=3)
    assert len(v) == 3 and v.encode("a").tolist() == [1]


def test_word_level_tokenisation_and_decode():
    text = "the cat sat\non the  mat\n\nthe end"
    v = Vocab.build(text, level="word")
    assert v.tokenize("a b\nc") == ["a", "b", "<eos>", "c"]
    # the: 3; then by first appearance
    assert v.tokens[3:] == ("the", "cat", "sat", "on", "mat", "end")
    ids = v.encode("the cat\nthe dog")
    assert ids.tolist() == [3, 4, 2, 3, 1]
    assert v.decode(ids) == "the cat\nthe <unk>"
    assert v.decode(ids, skip_specials=True) == "the cat\nthe"
    norm = "the cat sat\non the mat\n\nthe end\n"
    assert v.decode(v.encode(norm)) == norm
    assert v.decode(v.encode("the end"), skip_specials=True) == "the end"
    assert v.decode(v.encode("the end", add_eos=True)) == "the end\n"


def test_word_level_literal_specials_and_pretokenised():
    v = Vocab.build(["a <unk> b <unk>", ["b", "c", "<eos>"]], level="word")
    assert v.tokens == ("<pad>", "<unk>", "<eos>", "b", "a", "c")
    assert v.encode("<unk> a").tolist() == [1, 4]
    assert v.encode(["c", "zz"]).tolist() == [5, 1]


def test_word_level_without_eos_special():
    v = Vocab.build("x y\nx", level="word", specials=("<pad>", "<unk>"))
    assert v.eos_id is None
    assert v.tokens == ("<pad>", "<unk>", "x", "y")
    assert v.encode("x\ny").tolist() == [2, 3]
    with pytest.raises(ValueError, match="add_eos"):
        v.encode("x", add_eos=True)


def test_no_unk_raises_on_unknown():
    v = Vocab.build("ab", specials=("<pad>",))
    assert v.unk_id is None and v.pad_id == 0
    assert v.encode("ba").tolist() == [2, 1]
    with pytest.raises(ValueError, match="'z'"):
        v.encode("abz")


def test_decode_skip_specials_char():
    v = Vocab.build("ab")
    ids = [3, 0, 4, 1, 2]
    assert v.decode(ids) == "a<pad>b<unk><eos>"
    assert v.decode(np.array(ids, dtype=np.int32), skip_specials=True) == "ab"


def test_dict_roundtrip_exact_via_json():
    for v in (Vocab.build("hello wörld\n"),
              Vocab.build("a b a\nc", level="word", specials=("<unk>", "<eos>", "<s>")),
              Vocab.build("", level="word")):
        d = json.loads(json.dumps(v.to_dict()))
        w = Vocab.from_dict(d)
        assert w == v
        assert w.tokens == v.tokens and w.level == v.level and w.specials == v.specials
        assert w.to_dict() == v.to_dict()
    assert Vocab.build("ab") != Vocab.build("ba")


def test_build_is_deterministic():
    text = "the quick brown fox jumps over the lazy dog " * 3
    assert Vocab.build(text).tokens == Vocab.build(text).tokens
    assert Vocab.build(text, level="word").tokens == Vocab.build(text, level="word").tokens


@pytest.mark.parametrize("kwargs, exc, word", [
    (dict(level="byte"), ValueError, "level"),
    (dict(min_freq=0), ValueError, "min_freq"),
    (dict(min_freq=1.5), ValueError, "min_freq"),
    (dict(max_size=2), ValueError, "max_size"),
    (dict(specials="<pad>"), TypeError, "specials"),
    (dict(specials=("<a>", "<a>")), ValueError, "specials"),
])
def test_build_argument_errors(kwargs, exc, word):
    with pytest.raises(exc, match=word):
        Vocab.build("abc", **kwargs)


def test_input_errors():
    with pytest.raises(TypeError, match="texts_or_tokens"):
        Vocab.build(b"abc")
    with pytest.raises(TypeError, match="texts_or_tokens"):
        Vocab.build(123)
    with pytest.raises(TypeError, match=r"texts_or_tokens\[1\]"):
        Vocab.build(["ab", 5])
    v = Vocab.build("abc")
    with pytest.raises(TypeError, match="ids"):
        v.decode([1.0, 2.0])
    with pytest.raises(ValueError, match="ids"):
        v.decode([0, 99])
    with pytest.raises(ValueError, match="ids"):
        v.decode([[1]])
    with pytest.raises(TypeError, match="text"):
        v.encode(5)
    with pytest.raises(ValueError, match="format"):
        Vocab.from_dict({"level": "char"})
    bad = v.to_dict()
    bad["tokens"] = ["a", "a"]
    with pytest.raises(ValueError, match="twice"):
        Vocab.from_dict(bad)
