"""Kokoro's voices: the styles in a voices file, their languages, and weighted mixes of them.

A voice's id says its language (its first letter) and gender (its second): ``jm_kumo`` is a
Japanese man. Every voice also speaks English: Kokoro learnt its English phonemes from the most
data, and a voice of another language reads them intelligibly (``jm_kumo`` does, in the tests).

A mix, ``jm_kumo(2)+jf_alpha(1)``, is a voice whose style is the parts' styles weighted by their
share of the total weight (1 where none is written); its parts must share a language.
"""

from __future__ import annotations

import functools
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from voxserve.engines.base import Voice
from voxserve.errors import InvalidRequestError
from voxserve.text.languages import KOKORO_LANG_CODES

LANGUAGES = KOKORO_LANG_CODES
"""A voice id's first letter -> the language it was made for (also Kokoro-FastAPI's lang_code)."""
ENGLISH = ("en-US", "en-GB")
GENDERS = {"f": "female", "m": "male"}

_PREFIX = re.compile(r"([a-z])[fm]_")
"""A Kokoro voice id's start: its language, its gender, an underscore."""
_PART = re.compile(r"\s*([A-Za-z0-9_]+)\s*(?:\(\s*([0-9]*\.?[0-9]+)\s*\))?\s*")


@dataclass(frozen=True)
class Mix:
    """A voice spec as its parts: (voice id, weight as written), in the order given."""

    weights: tuple[tuple[str, float], ...]

    @property
    def parts(self) -> tuple[tuple[str, float], ...]:
        """Each voice with its share of the total weight."""
        total = sum(weight for _, weight in self.weights)
        return tuple((voice, weight / total) for voice, weight in self.weights)

    @property
    def spec(self) -> str:
        """The canonical spelling, ``a(2)+b(1)``; a single voice by its id."""
        if len(self.weights) == 1:
            return self.weights[0][0]
        return "+".join(f"{voice}({weight:g})" for voice, weight in self.weights)


def parse_mix(spec: str) -> Mix | None:
    """``spec`` as a mix (a lone id is a mix of one); None when it is not one's spelling (an
    empty part, a weight of zero or not a plain number)."""
    weights: dict[str, float] = {}
    for part in spec.split("+"):
        match = _PART.fullmatch(part)
        if match is None:
            return None
        voice, weight = match.group(1), float(match.group(2) or 1)
        if weight <= 0:
            return None
        weights[voice] = weights.get(voice, 0.0) + weight  # a part named twice counts twice
    return Mix(tuple(weights.items()))


def language_of(voice_id: str) -> str:
    """The language a voice id's prefix names ("" for an id not spelt as Kokoro's are)."""
    prefix = _PREFIX.match(voice_id)
    return LANGUAGES.get(prefix.group(1), "") if prefix else ""


def make_voice(voice_id: str, engine: str) -> Voice:
    language = language_of(voice_id)
    gender = GENDERS.get(voice_id[1:2], "")
    name = voice_id.partition("_")[2].replace("_", " ").title() or voice_id
    described = ", ".join(part for part in (language, gender) if part)
    return Voice(
        id=voice_id,
        engine=engine,
        name=name,
        language=language,
        description=f"Kokoro voice ({described})" if described else "Kokoro voice",
        languages=_speaks(language),
    )


def mixed_voice(mix: Mix, voices: Mapping[str, Voice], engine: str) -> Voice | None:
    """The voice ``mix`` makes of ``voices``; None when a part is none of them. Parts of
    different languages are a 400 naming ``voice``."""
    if any(voice not in voices for voice, _ in mix.parts):
        return None
    if len(mix.parts) == 1:
        return voices[mix.parts[0][0]]
    languages = {voices[voice].language for voice, _ in mix.parts}
    if len(languages) > 1:
        raise InvalidRequestError(
            f"voice {mix.spec!r} mixes voices of different languages "
            f"({', '.join(sorted(language or 'none' for language in languages))}); "
            "mix voices of one language",
            param="voice",
            code="invalid_voice_mix",
        )
    (language,) = languages
    return Voice(
        id=mix.spec,
        engine=engine,
        name=" + ".join(voices[voice].name for voice, _ in mix.parts),
        language=language,
        description=f"Kokoro mix of {', '.join(voice for voice, _ in mix.parts)}",
        languages=_speaks(language),
    )


def voice_ids(path: Path) -> tuple[str, ...]:
    """The voices in a voices file (an ``.npz`` archive, whatever its name), without reading
    their styles."""
    stat = path.stat()
    return _voice_ids(path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=16)
def _voice_ids(path: Path, modified: int, size: int) -> tuple[str, ...]:
    # Cached per modification: voices are listed on every request.
    with zipfile.ZipFile(path) as archive:
        names = [name.removesuffix(".npy") for name in archive.namelist()]
    return tuple(sorted(names))


def _speaks(language: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys((language, *ENGLISH))) if language else ()
