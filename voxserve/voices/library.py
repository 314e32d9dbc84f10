"""Voice-library operations shared by the HTTP API and the CLI: checked input in, profiles out.

All blocking (audio processing, transcription): call them from a worker thread when async.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from voxserve.config import Settings
from voxserve.errors import ConflictError, InvalidRequestError
from voxserve.voices.reference import ReferenceLimits, prepare_reference
from voxserve.voices.store import VoiceProfile, VoiceStore, check_name
from voxserve.voices.transcribe import Transcriber


class VoiceLibrary:
    """Profiles whose reference audio is checked, cleaned and, without a transcript, transcribed."""

    def __init__(
        self,
        store: VoiceStore,
        settings: Settings,
        reserved: set[str] | None = None,
        transcriber: Transcriber | None = None,
    ):
        self.store = store
        self.limits = ReferenceLimits(
            min_seconds=settings.reference_min_seconds, max_seconds=settings.reference_max_seconds
        )
        self.transcriber = transcriber or Transcriber(**settings.stt.model_dump())
        self.reserved = reserved or set()
        """Names already taken by engine voices, built-ins and aliases."""

    def create(self, fields: dict[str, Any], audio: bytes | None = None) -> VoiceProfile:
        name = check_name(str(fields.get("id") or "").strip().lower())
        if name in self.reserved:
            raise ConflictError(
                f"{name!r} is already one of voxserve's voices; pick another name",
                param="name",
                code="voice_exists",
            )
        profile = _profile({"display_name": name, **fields, "id": name})
        wav, transcript = self._reference(audio, profile.transcript)
        if transcript:
            profile = profile.model_copy(update={"transcript": transcript})
        return self.store.create(profile, wav)

    def update(
        self, profile_id: str, fields: dict[str, Any], audio: bytes | None = None
    ) -> VoiceProfile:
        # New audio without a transcript is transcribed: the old transcript was of the old audio.
        wav, transcript = self._reference(audio, fields.get("transcript"))
        if transcript:
            fields = {**fields, "transcript": transcript}
        return self.store.update(profile_id, fields, wav)

    def import_package(self, path: Path, *, replace: bool = False) -> VoiceProfile:
        """Add a package made by ``export``; its audio is checked like an upload."""
        profile, audio = self.store.read_package(path)
        fields = profile.model_dump(exclude={"has_reference", "created_at", "updated_at"})
        if replace and self.store.find(profile.id):
            return self.update(profile.id, {k: v for k, v in fields.items() if k != "id"}, audio)
        return self.create(fields, audio)

    def _reference(self, audio: bytes | None, transcript: str | None) -> tuple[bytes | None, str]:
        if audio is None:
            return None, transcript or ""
        reference = prepare_reference(audio, self.limits)
        if not (transcript or "").strip():
            transcript = self.transcriber.transcribe(reference)
        return reference.to_wav_bytes(), transcript.strip()


def _profile(fields: dict[str, Any]) -> VoiceProfile:
    try:
        return VoiceProfile.model_validate(fields)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or None
        raise InvalidRequestError(f"{field}: {first['msg']}", param=field) from error
