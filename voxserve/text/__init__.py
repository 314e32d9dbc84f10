"""The text layer: normalization, sentence splitting (also for streamed text) and chunking."""

from voxserve.text.chunking import Fragment, chunk_sentence, plan_fragments
from voxserve.text.normalize import normalize_text
from voxserve.text.sentences import SentenceBuffer, split_sentences

__all__ = [
    "Fragment",
    "SentenceBuffer",
    "chunk_sentence",
    "normalize_text",
    "plan_fragments",
    "split_sentences",
]
