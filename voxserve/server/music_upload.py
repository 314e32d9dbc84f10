"""A music bed sent in a form: its file (the ``music`` field) and its settings as text fields
(``music_level_db``, ``music_duck_db``, ``music_fade_in``, ``music_fade_out``), the same for
``/v1/jobs`` and ``/v1/audio/dialogue``."""

from __future__ import annotations

from pydantic import ValidationError

from voxserve.audio.music_bed import MusicBed
from voxserve.errors import InvalidRequestError

MUSIC_FIELDS = {f"music_{name}": name for name in MusicBed.model_fields}


def music_bed(fields: dict[str, str], has_music: bool) -> MusicBed | None:
    """The bed's settings from ``fields``; None without a music file (where settings without
    one are refused, naming the first)."""
    settings = {name: fields[field] for field, name in MUSIC_FIELDS.items() if field in fields}
    if not has_music:
        if settings:
            first = next(field for field in MUSIC_FIELDS if field in fields)
            raise InvalidRequestError("music settings without a music file", param=first)
        return None
    try:
        return MusicBed.model_validate(settings)
    except ValidationError as error:
        problem = error.errors()[0]
        field = f"music_{problem['loc'][0]}"
        raise InvalidRequestError(f"{field}: {problem['msg']}", param=field) from error
