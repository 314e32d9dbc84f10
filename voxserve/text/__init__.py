"""The text layer: normalization, sentence splitting (also for streamed text) and chunking."""

from voxserve.text.chunking import Fragment, chunk_sentence, plan_fragments
from voxserve.text.localized import normalizer_for
from voxserve.text.normalize import normalize_text
from voxserve.text.sentences import SentenceBuffer, split_sentences


def normalize_for(text: str, language: str) -> str:
    """``text`` normalized for ``language``: English by its own normalizer (also for a voice of
    no stated language), the languages of ``localized.LOCALES`` by theirs; any other is spoken
    as written, since reading "3 km" as "three kilometers" inside a Polish sentence is worse
    than leaving it to the engine."""
    if not language or language.replace("_", "-").lower().split("-")[0] == "en":
        return normalize_text(text)
    localized = normalizer_for(language)
    return localized(text) if localized is not None else text


__all__ = [
    "Fragment",
    "SentenceBuffer",
    "chunk_sentence",
    "normalize_for",
    "normalize_text",
    "plan_fragments",
    "split_sentences",
]
