"""Voice-library operations shared by the HTTP API and the CLI: checked input in, profiles out.

All blocking (audio processing, transcription): call them from a worker thread when async.
"""

from __future__ import annotations

import io
import wave
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from pydantic import ValidationError

from voxserve.audio.transcribe import Transcriber
from voxserve.config import Settings
from voxserve.errors import ConflictError, EngineUnavailableError, InvalidRequestError
from voxserve.voices.backups import REFERENCE_FILE
from voxserve.voices.profile import VoiceProfile, check_name
from voxserve.voices.reference import ReferenceAudio, ReferenceLimits, prepare_reference
from voxserve.voices.store import PROFILE_FILE, VoiceStore

_WAV_HEADER_BYTES = 44
"""The canonical RIFF header of a PCM WAV, as `ReferenceAudio.to_wav_bytes` writes it."""


class EngineCatalog(Protocol):
    """What the library asks of the engine registry to check a profile's engine and voice
    (voices sit below engines: they are named here, not imported)."""

    def engine_for_model(self, model: str | None) -> Any: ...

    def names(self) -> list[str]: ...


class VoiceLibrary:
    """Profiles whose reference audio is checked, cleaned and, without a transcript, transcribed."""

    def __init__(
        self,
        store: VoiceStore,
        settings: Settings,
        reserved: set[str] | None = None,
        transcriber: Transcriber | None = None,
        registry: EngineCatalog | None = None,
    ):
        self.store = store
        self.limits = ReferenceLimits(
            min_seconds=settings.reference_min_seconds, max_seconds=settings.reference_max_seconds
        )
        self.transcriber = transcriber or Transcriber(**settings.stt.model_dump())
        self.reserved = reserved or set()
        """Names already taken by engine voices, built-ins and aliases."""
        self.registry = registry
        """The engines a profile's ``engine`` and ``voice`` must name; None: not checked."""

    def create(
        self, fields: dict[str, Any], audio: bytes | None = None, *, keep_prepared: bool = False
    ) -> VoiceProfile:
        """``keep_prepared``: store ``audio`` as it is when it is already a prepared reference
        (it is checked all the same); see `import_package`."""
        name = fields.get("id", "")
        if not isinstance(name, str):  # never a number made a name: 5 is not "5"
            raise InvalidRequestError(
                f"name must be a string, not {name!r}",
                param="name",
                code="invalid_name",
            )
        name = check_name(name.strip().lower())
        if name in self.reserved:
            raise ConflictError(
                f"{name!r} is already one of voxserve's voices; pick another name",
                param="name",
                code="voice_exists",
            )
        profile = _profile({"display_name": name, **fields, "id": name})
        self._check_voice(profile.engine, profile.voice, profile.engine_options)
        wav, transcript = self._reference(audio, profile.transcript, keep_prepared)
        if transcript:
            profile = profile.model_copy(update={"transcript": transcript})
        return self.store.create(profile, wav)

    def update(
        self,
        profile_id: str,
        fields: dict[str, Any],
        audio: bytes | None = None,
        *,
        keep_prepared: bool = False,
    ) -> VoiceProfile:
        if {"engine", "voice", "engine_options"} & fields.keys():
            current = self.store.get(profile_id)
            self._check_voice(
                fields.get("engine", current.engine),
                fields.get("voice", current.voice),
                fields.get("engine_options", current.engine_options),
            )
        # New audio without a transcript is transcribed: the old transcript was of the old audio.
        wav, transcript = self._reference(audio, fields.get("transcript"), keep_prepared)
        if transcript:
            fields = {**fields, "transcript": transcript}
        return self.store.update(profile_id, fields, wav)

    def import_package(self, path: Path, *, replace: bool = False) -> VoiceProfile:
        """Add a package made by ``export``. Its audio is checked like an upload, and kept byte for
        byte when it is already a prepared reference (what export writes): preparing it again
        would fade and level it a second time, and an export and import must give it back."""
        profile, audio = self.store.read_package(path)
        exists = self.store.find(profile.id) is not None
        if exists and not replace:  # refused before the audio is decoded (and maybe transcribed)
            raise ConflictError(
                f"a voice profile named {profile.id!r} exists already; import with replace to "
                "replace it",
                param="package",
                code="voice_exists",
            )
        fields = profile.model_dump(exclude={"id", "has_reference", "created_at", "updated_at"})
        try:
            if exists:
                return self.update(profile.id, fields, audio, keep_prepared=True)
            return self.create({**fields, "id": profile.id}, audio, keep_prepared=True)
        except InvalidRequestError as error:
            # What came in the package came in no field of the request: say where it is.
            member = {"audio_sample": REFERENCE_FILE, "engine": PROFILE_FILE, "voice": PROFILE_FILE}
            if error.param not in member:
                raise
            raise InvalidRequestError(
                f"the package's {member[error.param]}: {error.message}",
                param="package",
                code=error.code,
            ) from error

    def _check_voice(self, engine: Any, voice: Any, engine_options: Any = None) -> None:
        """Refuse (400, naming the field) an engine that is not installed, a voice it does not
        have or options it does not take, before any audio work: found only when the profile is
        used, it would fail there."""
        if self.registry is None:
            return
        for field, value in (("engine", engine), ("voice", voice)):
            if value is not None and not isinstance(value, str):
                raise InvalidRequestError(f"{field} must be a string", param=field)
        try:
            chosen = self.registry.engine_for_model(engine)
        except (InvalidRequestError, EngineUnavailableError) as error:
            message = error.message
            if error.code == "model_not_found":
                names = ", ".join(self.registry.names())
                message = f"unknown engine {engine!r}; engines: {names}"
            raise InvalidRequestError(message, param="engine", code=error.code) from error
        if voice is not None and chosen.find_voice(voice) is None:
            known = ", ".join(each.id for each in chosen.voices()) or "none"
            raise InvalidRequestError(
                f"unknown voice {voice!r} for engine {chosen.name!r}; voices: {known}",
                param="voice",
                code="voice_not_found",
            )
        if engine_options:
            chosen.options_from(engine_options)

    def _reference(
        self, audio: bytes | None, transcript: str | None, keep_prepared: bool = False
    ) -> tuple[bytes | None, str]:
        if audio is None:
            return None, transcript or ""
        reference = prepare_reference(audio, self.limits)
        if not (transcript or "").strip():
            transcript = self.transcriber.transcribe(reference)
        kept = keep_prepared and _is_prepared(audio, reference)
        return audio if kept else reference.to_wav_bytes(), transcript.strip()


def _profile(fields: dict[str, Any]) -> VoiceProfile:
    try:
        return VoiceProfile.model_validate(fields)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or None
        raise InvalidRequestError(f"{field}: {first['msg']}", param=field) from error


def _is_prepared(audio: bytes, reference: ReferenceAudio) -> bool:
    """Whether ``audio`` is already what preparing it gave, ``reference``: a plain 16-bit mono
    WAV at the reference rate holding only samples (nothing a decoder might read beyond them),
    no longer than the speech found in it plus preparation's margins, and levelled alike."""
    try:
        with wave.open(io.BytesIO(audio)) as clip:
            shape = (clip.getnchannels(), clip.getsampwidth(), clip.getframerate())
            samples = np.frombuffer(clip.readframes(clip.getnframes()), dtype="<i2") / 32768
    except (wave.Error, EOFError):
        return False
    return (
        shape == (1, 2, reference.sample_rate)
        and len(audio) == _WAV_HEADER_BYTES + 2 * len(samples)
        and len(samples) <= len(reference.samples) + reference.sample_rate // 2
        and abs(_level_db(samples) - _level_db(reference.samples)) < 0.5
    )


def _level_db(samples: np.ndarray) -> float:
    return 10 * float(np.log10(np.mean(np.square(samples), dtype=np.float64) + 1e-12))
