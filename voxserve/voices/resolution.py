"""Who speaks: a request, a dialogue turn or a chat character -> one ``Voicing``.

A voice is looked for in this order: a clip given with the request (or a path to one on the
server, in ``voice_paths``), a voice profile of that name, a voice of the engine the request
names (its own ids, then its aliases, then OpenAI's names as ``voice_aliases`` maps them, on
that engine only), then, when no engine was named, the ids of the other installed engines.

The voicing is checked against its engine and voice: speed, language (the voice's own),
cloning and sampling are refused with a 400 naming the field when the engine cannot honour
them, never quietly dropped. ``instructions`` alone are accepted by every engine, because OpenAI's
clients send them by default: an engine that cannot follow them gets none, and the voicing lists
them as ignored (``X-Ignored-Fields``).

Resolution blocks (a SQLite lookup, reading and cleaning a clip, Whisper for a clip without a
transcript): ``resolve`` runs it in a worker thread; ``voicing`` is for code already in one.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass
from pathlib import Path

from voxserve.config import Settings
from voxserve.engines.base import Engine, SynthesisOptions, Voice, Voicing
from voxserve.engines.registry import EngineRegistry
from voxserve.errors import InvalidRequestError
from voxserve.request import SpeechOptions
from voxserve.voices.clip_paths import read_clip, unusable_clip
from voxserve.voices.profile import VoiceProfile
from voxserve.voices.reference import MAX_CLIP_BYTES, ReferenceLimits, prepare_reference
from voxserve.voices.references import ReferenceCache
from voxserve.voices.store import VoiceStore
from voxserve.voices.transcribe import Transcriber


@dataclass(frozen=True)
class CloneReference:
    """A cleaned clip to clone and what it says."""

    path: Path
    text: str


class VoiceResolver:
    """Voicings from requests; owns the voice profiles, clone references and their transcriber."""

    def __init__(self, settings: Settings, registry: EngineRegistry):
        self.settings = settings
        self.registry = registry

    @functools.cached_property
    def voices(self) -> VoiceStore:
        """The user's voice profiles (created on first use)."""
        return VoiceStore(self.settings.data_path / "voices")

    @functools.cached_property
    def references(self) -> ReferenceCache:
        return ReferenceCache(self.settings.data_path / "references")

    @functools.cached_property
    def transcriber(self) -> Transcriber:
        return Transcriber(**self.settings.stt.model_dump())

    async def resolve(
        self, request: SpeechOptions, reference: CloneReference | None = None
    ) -> Voicing:
        """``voicing``, in a worker thread."""
        return await asyncio.to_thread(self.voicing, request, reference)

    def voicing(self, request: SpeechOptions, reference: CloneReference | None = None) -> Voicing:
        """The voicing ``request`` asks for, checked; raises naming the bad field. Blocking.

        ``reference``: a clip to clone, given with the request (it takes the place of ``voice``).
        """
        if reference is None and request.voice and _looks_like_path(request.voice):
            reference = self._path_reference(request.voice, request.model)
        if reference is not None:
            engine = self.cloning_engine(request.model, "the reference clip")
            voice = Voice("reference", engine.name, "reference clip", request.language or "")
            extra = {"reference_audio": str(reference.path), "reference_text": reference.text}
            return self._checked(engine, voice, request, request.speed, **extra)
        profile = self.voices.find(request.voice) if request.voice else None
        if profile is not None:
            return self._profile_voicing(profile, request)
        engine, voice = self.engine_voice(request.voice, request.model)
        return self._checked(engine, voice, request, request.speed)

    def engine_voice(self, spec: str | None, model: str | None) -> tuple[Engine, Voice]:
        """The engine ``model`` names and its voice ``spec`` (None: its default voice)."""
        engine = self.registry.engine_for_model(model)
        if spec is None:
            spec = self._default_voice(engine)
        voice = engine.find_voice(spec)
        alias = self.settings.voice_aliases.get(spec.lower())
        if voice is None and alias is not None:
            voice = engine.find_voice(alias)
        if voice is not None:
            return engine, voice
        if model is None:
            # No engine named: another installed engine's own voice of that id will do (never
            # an alias: OpenAI's names mean the default engine's voices).
            for name in self.registry.names():
                if name == engine.name or not self.registry.is_installed(name):
                    continue
                other = self.registry.get(name)
                if (found := other.find_voice(spec)) is not None:
                    return other, found
        known = ", ".join(voice.id for voice in engine.voices()) or "none"
        raise InvalidRequestError(
            f"unknown voice {spec!r} for engine {engine.name!r}; voices: {known}",
            param="voice",
            code="voice_not_found",
        )

    def _default_voice(self, engine: Engine) -> str:
        """The configured default voice on the default engine; another engine's first voice."""
        if engine.name == self.settings.default_engine:
            return self.settings.default_voice
        voices = engine.voices()
        if not voices:
            raise InvalidRequestError(
                f"engine {engine.name!r} offers no voices (is it configured?)",
                param="voice",
                code="voice_not_found",
            )
        return voices[0].id

    def _profile_voicing(self, profile: VoiceProfile, request: SpeechOptions) -> Voicing:
        """A profile's voice: cloned from its reference where possible, else an engine voice."""
        engine = self.registry.engine_for_model(request.model or profile.engine)
        speed = request.speed
        if "speed" not in request.model_fields_set and profile.defaults.speed:
            speed = profile.defaults.speed
        extra = {"speaker_description": profile.speaker_description}
        reference = self.voices.reference_path(profile.id) if profile.has_reference else None
        if reference and (engine.capabilities.cloning or not profile.voice):
            engine = self.cloning_engine(engine.name, f"voice {profile.id!r}")
            voice = Voice(profile.id, engine.name, profile.display_name, profile.language or "")
            # A copy by content: deleting the profile meanwhile cannot pull the clip away.
            clip = self.references.store(reference.read_bytes())
            extra |= {"reference_audio": str(clip), "reference_text": profile.transcript}
        else:
            engine, voice = self.engine_voice(profile.voice, engine.name)
        return self._checked(engine, voice, request, speed, **extra)

    def cloning_engine(self, model: str | None, what: str) -> Engine:
        """The engine ``model`` names, if it can clone; else a 400 naming the engines that can."""
        engine = self.registry.engine_for_model(model)
        if engine.capabilities.cloning:
            return engine
        cloning = [
            name
            for name in self.registry.names()
            if self.registry.is_installed(name) and self.registry.get(name).capabilities.cloning
        ]
        raise InvalidRequestError(
            f"{what} needs an engine that can clone, and {engine.name!r} cannot; engines that "
            f"can: {', '.join(cloning) or 'none installed'}",
            param="voice",
            code="cloning_not_supported",
        )

    def _path_reference(self, voice: str, model: str | None) -> CloneReference:
        """A clip on the server named as ``voice``, in a directory of ``voice_paths``. The
        cheap checks come first: a request its engine cannot serve reads no file."""
        if not self.settings.voice_paths:
            raise InvalidRequestError(
                f"voice {voice!r} looks like a file path, and paths are not allowed on this "
                "server (voice_paths names the directories whose clips may be used)",
                param="voice",
                code="voice_paths_disabled",
            )
        self.cloning_engine(model, "the reference clip")
        audio = read_clip(voice, self.settings.voice_paths, MAX_CLIP_BYTES)
        try:
            return self.clone_reference(audio, None)
        except InvalidRequestError as error:
            if error.code == "invalid_audio":  # not audio: answered as any unusable path
                raise unusable_clip(voice) from error
            raise

    def clone_reference(self, audio: bytes, transcript: str | None) -> CloneReference:
        """Check and clean a clip given with a request (as its ``voice``: a refusal names that
        field); transcribe it when no transcript came. Blocking."""
        limits = ReferenceLimits(
            min_seconds=self.settings.reference_min_seconds,
            max_seconds=self.settings.reference_max_seconds,
        )
        try:
            clip = prepare_reference(audio, limits)
        except InvalidRequestError as error:
            raise InvalidRequestError(error.message, param="voice", code=error.code) from error
        text = (transcript or "").strip() or self.transcriber.transcribe(clip)
        return CloneReference(self.references.store(clip.to_wav_bytes()), text)

    def _checked(
        self, engine: Engine, voice: Voice, request: SpeechOptions, speed: float, **extra: str
    ) -> Voicing:
        capabilities = engine.capabilities
        low, high = capabilities.speed_range
        if not low <= speed <= high:
            raise InvalidRequestError(
                f"speed {speed} is outside {engine.name}'s range {low}-{high}",
                param="speed",
            )
        spoken = voice.speaks() or capabilities.languages
        if request.language and not language_supported(request.language, spoken):
            raise InvalidRequestError(
                f"voice {voice.id!r} of engine {engine.name!r} does not speak "
                f"{request.language!r}; it speaks {', '.join(spoken)}",
                param="language",
                code="unsupported_language",
            )
        if request.sampling is not None and not capabilities.sampling:
            raise InvalidRequestError(
                f"engine {engine.name!r} does not sample, so it takes no sampling settings",
                param="sampling",
                code="sampling_not_supported",
            )
        follows = capabilities.instructions
        options = SynthesisOptions(
            voice=voice.id,
            speed=speed,
            language=request.language,
            instructions=request.instructions if follows else None,
            sampling=request.sampling,
            **extra,
        )
        ignored = ("instructions",) if request.instructions and not follows else ()
        sample_rate = request.sample_rate or voice.sample_rate or capabilities.sample_rate
        return Voicing(engine, voice, sample_rate, options, ignored)


def _looks_like_path(voice: str) -> bool:
    return "/" in voice or "\\" in voice or voice.startswith("~")


def language_supported(language: str, supported: tuple[str, ...]) -> bool:
    wanted = language.replace("_", "-").lower()
    for tag in supported:
        tag = tag.lower()
        if wanted == tag or wanted.split("-")[0] == tag.split("-")[0]:
            return True
    return False
