"""Piper's phoneme alignments grouped into words (no model: phonemes as espeak-ng writes them)."""

from __future__ import annotations

from voxserve.engines.piper_words import phoneme_words, plan_words, time_words, written_words


def phonemes(text: str) -> list[str]:
    """A sentence's phonemes as Piper lists them: one symbol each, spaces between words."""
    return list(text)


def test_phoneme_words_leave_out_spaces_and_punctuation():
    sentence = phonemes("hɛlˈoʊ, wˈɜːld!")
    words = phoneme_words(sentence)
    assert ["".join(sentence[i] for i in word) for word in words] == ["hɛlˈoʊ", "wˈɜːld"]


def test_written_words_keep_their_punctuation_and_dashes_join_a_word():
    assert written_words("Wait -- what? Yes.") == ["Wait --", "what?", "Yes."]
    assert written_words("... so") == ["... so"]
    assert written_words(" -- ") == []


def test_words_match_one_to_one_when_espeak_keeps_them_apart():
    sentence = phonemes("ðə sˈʌn ɪz ʌp.")
    [planned] = plan_words("The sun is up.", [sentence])
    assert [word.text for word in planned] == ["The", "sun", "is", "up."]
    assert ["".join(sentence[w.first : w.last + 1]) for w in planned] == ["ðə", "sˈʌn", "ɪz", "ʌp"]


def test_words_espeak_runs_together_share_its_phonemes_in_order():
    sentence = phonemes("ɪn fɹʌmðə wˈɛst.")  # "from the" is one phoneme word
    [planned] = plan_words("in from the west.", [sentence])
    assert [word.text for word in planned] == ["in", "from", "the", "west."]
    spoken = ["".join(sentence[w.first : w.last + 1]) for w in planned]
    assert spoken[0] == "ɪn" and spoken[3] == "wˈɛst"
    assert spoken[1] + spoken[2] == "fɹʌmðə" and spoken[1] and spoken[2]


def test_a_written_word_said_as_several_covers_them_all():
    sentence = phonemes("pˈeɪd fˈɔːɹɾi tˈuː nˈaʊ")  # "42" said as two words
    [planned] = plan_words("paid 42 now", [sentence])
    assert [word.text for word in planned] == ["paid", "42", "now"]
    assert "".join(sentence[planned[1].first : planned[1].last + 1]) == "fˈɔːɹɾi tˈuː"


def test_words_go_to_the_sentence_that_says_them():
    first, second = phonemes("hˈaɪ."), phonemes("ðɛɹ ɪt ɪz.")
    planned = plan_words("Hi. There it is.", [first, second])
    assert [[word.text for word in sentence] for sentence in planned] == [
        ["Hi."],
        ["There", "it", "is."],
    ]


def test_no_words_when_nothing_is_said():
    assert plan_words("--", [phonemes("hˈaɪ")]) == [[]]
    assert plan_words("Hi", [phonemes(".")]) == [[]]


def test_times_count_the_samples_before_and_through_each_word():
    sentence = phonemes("ab cd")
    [planned] = plan_words("ab cd", [sentence])
    # Samples of: start marker, a, b, space, c, d, end marker.
    samples = [100, 10, 20, 30, 40, 50, 200]
    words = time_words(planned, samples, sample_rate=100)
    assert [(w.text, w.start, w.end) for w in words] == [("ab", 1.0, 1.3), ("cd", 1.6, 2.5)]


def test_times_are_monotonic_and_inside_the_audio():
    sentence = phonemes("ɪn fɹʌmðə wˈɛst, ænd hˈoʊm.")
    [planned] = plan_words("in from the west, and home.", [sentence])
    samples = [256 * (1 + index % 3) for index in range(len(sentence) + 2)]
    words = time_words(planned, samples, sample_rate=22050)
    assert len(words) == 6
    bounds = [time for word in words for time in (word.start, word.end)]
    assert bounds == sorted(bounds)
    assert all(word.end > word.start for word in words)
    assert bounds[-1] <= sum(samples) / 22050


def test_an_alignment_of_other_phonemes_times_nothing():
    [planned] = plan_words("ab cd", [phonemes("ab cd")])
    assert time_words(planned, [100, 10], sample_rate=100) == ()
