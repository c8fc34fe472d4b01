from hypothesis import given
from hypothesis import strategies as st

from encoders.text import is_content_word, merge_subwords, split_sentences


def test_split_chinese_and_english_terminators() -> None:
    text = "我爱看电影。特别喜欢科幻片！你呢？好的；再见!Really? Yes. No; fine"
    assert split_sentences(text) == [
        "我爱看电影。",
        "特别喜欢科幻片！",
        "你呢？",
        "好的；",
        "再见!",
        "Really?",
        "Yes.",
        "No;",
        "fine",
    ]


def test_split_keeps_decimals_and_closing_quotes_and_breaks_on_newlines() -> None:
    assert split_sentences("Pi is 3.14 today. “好。”他说\n\nnext line") == [
        "Pi is 3.14 today.",
        "“好。”",
        "他说",
        "next line",
    ]


def test_split_attaches_punctuation_only_pieces() -> None:
    assert split_sentences("Wow!!! ... ok") == ["Wow!!!...", "ok"]
    assert split_sentences("。。。") == ["。。。"]


@given(st.text(min_size=1, max_size=200))
def test_split_loses_no_content(text: str) -> None:
    """Every non-space character survives splitting, in order."""
    sentences = split_sentences(text)
    assert "".join("".join(s.split()) for s in sentences) == "".join(text.split())
    assert all(s == s.strip() and s for s in sentences)


def test_merge_sentencepiece_words() -> None:
    words = merge_subwords(
        ["▁Science", "▁fic", "tion", "▁films", "!", "▁", "科幻", "电影"], "sentencepiece", 1
    )
    assert [(w.text, w.pieces, w.content) for w in words] == [
        ("Science", (1,), True),
        ("fiction", (2, 3), True),
        ("films", (4,), True),
        ("!", (5,), False),
        ("科幻", (7,), True),
        ("电影", (8,), True),
    ]


def test_merge_wordpiece_words_and_stopwords() -> None:
    words = merge_subwords(["the", "sci", "##fi", "film", "[UNK]", "."], "wordpiece")
    assert [(w.text, w.content) for w in words] == [
        ("the", False),
        ("scifi", True),
        ("film", True),
        ("[UNK]", True),  # the encoder marks unknown tokens; merging only sees strings
        (".", False),
    ]


@given(st.lists(st.sampled_from(["▁a", "b", "▁", "电", "!", "▁cd", "e"]), max_size=30))
def test_merge_covers_every_piece_once(tokens: list[str]) -> None:
    words = merge_subwords(tokens, "sentencepiece")
    covered = [i for w in words for i in w.pieces]
    expected = [i for i, t in enumerate(tokens) if t != "▁"]
    assert covered == expected


def test_content_words() -> None:
    assert is_content_word("科幻") and is_content_word("Kafka")
    assert not is_content_word("的") and not is_content_word("The") and not is_content_word("，")
