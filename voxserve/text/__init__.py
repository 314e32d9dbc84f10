"""The text layer: normalization, sentence splitting (also for streamed text) and chunking."""

from voxserve.text.chunking import Fragment, chunk_sentence, plan_fragments
from voxserve.text.normalize import normalize_text
from voxserve.text.sentences import SentenceBuffer, split_sentences


def normalize_for(text: str, language: str) -> str:
    """``text`` normalized for ``language``. Only English has a normalizer (also for a voice of
    no stated language); other languages are spoken as written, since reading "3 km" as
    "three kilometers" inside a German sentence is worse than leaving it to the engine."""
    if not language or language.replace("_", "-").lower().split("-")[0] == "en":
        return normalize_text(text)
    return text


__all__ = [
    "Fragment",
    "SentenceBuffer",
    "chunk_sentence",
    "normalize_for",
    "normalize_text",
    "plan_fragments",
    "split_sentences",
]
