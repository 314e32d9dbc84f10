"""Forced alignment: when each word of a known text is heard in speech (English, pocketsphinx).

An engine that times no words of its own can still have them timed: the text it was given is
aligned to the audio it made. pocketsphinx does it offline with the US English acoustic model and
CMUdict shipped in its wheel (the ``align`` extra): the words, in order, become a one-path grammar
(`Decoder.set_align_text`), optional silences between them, and the decoder's word segmentation
gives each one's frames. The benches use the same timings as a reference for an engine's own.

Text becomes words the dictionary knows, one written word at a time, so each aligned word maps
back to the word as written: normalized for English ("7:45" -> "seven forty-five"), lowercase,
hyphens as spaces, punctuation dropped. pocketsphinx has no letter-to-sound rules, so a word the
dictionary lacks has its pronunciation guessed from the dictionary's own words: cut into the
fewest pieces it knows ("voxserve" -> "vox" + "serve"), said one after the other. A word no
such cut fits ("zyphra", "café") is aligned as unknown speech (the model's ``[SPEECH]``
filler), so its neighbours keep their times, and is left out of the words returned: unaligned.

Times are frames of 10 ms, and they run early: on Piper's joe the aligner starts a sentence's
first word ~40 ms before its sound rises out of the silence (where Piper's own timing is within
~10 ms), and every word ~50 ms before Piper's timings. Nothing here corrects for it (a constant
tuned on one voice); bench/kokoro.py reports each engine's bias against it.
"""

from __future__ import annotations

import functools
import re
import threading
from typing import Any

import numpy as np

from voxserve.audio.dsp import StreamResampler, float_to_pcm16
from voxserve.audio.frames import WordTiming
from voxserve.errors import EngineError, EngineUnavailableError, InvalidRequestError
from voxserve.text import normalize_for

ALIGN_SAMPLE_RATE = 16000
"""The rate pocketsphinx's English acoustic model was trained at."""

UNKNOWN_SPEECH = "[SPEECH]"
"""The dictionary's filler for speech of no known word (phone ``+SPN+``)."""

MIN_PIECE = 2
"""Fewest letters of a piece a pronunciation is guessed from: CMUdict reads a single letter as
its name ("k": K EY), not its sound."""

_ALTERNATIVE = re.compile(r"\(\d+\)$")  # "and(2)": the dictionary's second pronunciation
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")  # letters and digits, apostrophes inside ("don't")

# A Decoder serves one utterance at a time and takes ~0.1 s to load (model and dictionary), so
# idle ones are kept for the next call: each call holds one of its own. (pocketsphinx keeps the
# GIL as it decodes, so calls from several threads take turns at that step.)
_idle_decoders: list[Any] = []
_idle_lock = threading.Lock()


def align_words(samples: np.ndarray, sample_rate: int, text: str) -> list[WordTiming]:
    """The spoken words of ``text`` as written ("7:45", "today,"), each timed in seconds from
    the start of ``samples`` (float32 mono speech of that text, at any rate).

    Blocking (about 50 times faster than real time): call it from a worker thread. Safe to call
    from several threads at once; the same speech and text always give the same timings.
    Raises InvalidRequestError for a text with no words or no audio, EngineError when the speech
    cannot be aligned to the text (audio too short for it, or of other words),
    EngineUnavailableError without the ``align`` extra.
    """
    written = [(word, spoken) for word in text.split() if (spoken := _spoken_words(word))]
    if not written:
        raise InvalidRequestError("nothing to align: the text has no words", param="text")
    if not len(samples):
        raise InvalidRequestError("nothing to align: the audio is empty", param="samples")
    resampled = StreamResampler(sample_rate, ALIGN_SAMPLE_RATE).process(samples, last=True)
    decoder = _take_decoder()
    try:
        tokens = [
            [token for word in spoken for token in _dictionary_words(decoder, word)]
            for _, spoken in written
        ]
        spans = _aligned_spans(decoder, [token for word in tokens for token in word], resampled)
        frame_rate = decoder.config["frate"]
    finally:
        with _idle_lock:
            _idle_decoders.append(decoder)
    # A written word lasts from its first token's first frame through its last token's last
    # (inclusive) frame; frames are 1 / frame_rate seconds apart. A word with unknown speech in
    # it has no span of its own, so it is left out.
    timings = []
    for (word, _), word_tokens in zip(written, tokens, strict=True):
        known = [token for token in word_tokens if token != UNKNOWN_SPEECH]
        own, spans = spans[: len(known)], spans[len(known) :]
        if len(known) == len(word_tokens):
            timings.append(WordTiming(word, own[0][0] / frame_rate, (own[-1][1] + 1) / frame_rate))
    return timings


def _spoken_words(written: str) -> list[str]:
    """The words a written word is said as, lowercase: "7:45" -> ["seven", "forty", "five"]."""
    return _WORD.findall(normalize_for(written, "en").lower().replace("-", " "))


def _dictionary_words(decoder: Any, word: str) -> list[str]:
    """``word`` as words the decoder's dictionary knows: itself, else the fewest known pieces it
    can be cut into (of ``MIN_PIECE`` letters or more; the longest first where cuts tie), else
    unknown speech. Pieces are aligned as words of their own: the dictionary is never changed."""
    if decoder.lookup_word(word) is not None:
        return [word]

    @functools.cache
    def pieces(start: int) -> list[str] | None:  # the best cut of word[start:]
        if start == len(word):
            return []
        found = None
        for stop in range(len(word), start + MIN_PIECE - 1, -1):
            if decoder.lookup_word(word[start:stop]) is None:
                continue
            rest = pieces(stop)
            if rest is not None and (found is None or len(rest) + 1 < len(found)):
                found = [word[start:stop], *rest]
        return found

    return pieces(0) or [UNKNOWN_SPEECH]


def _aligned_spans(decoder: Any, tokens: list[str], samples: np.ndarray) -> list[tuple[int, int]]:
    """(first frame, last frame) of each of ``tokens`` but unknown speech, aligned in order to
    16 kHz ``samples``."""
    decoder.set_align_text(" ".join(tokens))
    # The feature extraction learns the channel as it hears it (noise levels, the average
    # spectrum) and keeps it for the next utterance: started afresh (in well under a millisecond),
    # an alignment does not depend on what the decoder aligned before.
    decoder.reinit_feat()
    decoder.start_utt()
    decoder.process_raw(float_to_pcm16(samples), full_utt=True)
    decoder.end_utt()
    if decoder.hyp() is None:  # no path through the whole text fits the audio
        raise EngineError(
            "the speech could not be aligned to the text: it is too short, or says other words",
            code="alignment_failed",
        )
    # The segmentation holds the tokens in order, and between them the silences and noises the
    # grammar lets in: each token is the next segment of its name. Unknown speech is a filler
    # like those (the decoder may even fold it into a silence), so it is not looked for.
    known = [token for token in tokens if token != UNKNOWN_SPEECH]
    spans: list[tuple[int, int]] = []
    for segment in decoder.seg():
        if len(spans) < len(known) and _ALTERNATIVE.sub("", segment.word) == known[len(spans)]:
            spans.append((segment.start_frame, segment.end_frame))
    return spans


def _take_decoder() -> Any:
    """An idle Decoder, or a new one on the packaged English model and dictionary."""
    with _idle_lock:
        if _idle_decoders:
            return _idle_decoders.pop()
    try:
        import pocketsphinx
    except ImportError as error:
        raise EngineUnavailableError(
            "word alignment needs the align extra: pip install 'voxserve[align]'",
            code="align_not_installed",
        ) from error
    # The defaults are the packaged model; no language model (the grammar is the text), and
    # only errors logged (it writes its configuration to stderr otherwise).
    return pocketsphinx.Decoder(lm=None, samprate=ALIGN_SAMPLE_RATE, loglevel="FATAL")
