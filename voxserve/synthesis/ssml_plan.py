"""A speech request's input -> its voicing and segments: SSML (``input_format: "ssml"``, or an
input that opens with ``<speak``) or plain text, whose pause tags are pauses.

An SSML document is planned as a dialogue is: each ``<voice name>`` is resolved as a speaker's
voice (any engine; resampled to the request's rate), each ``<prosody rate>`` multiplies its
voicing's speed (refused where the engine has no rate control, or beyond its range), each
``<say-as>`` is read in its voicing's language, and running text is normalized for it as usual.
What an engine cannot honour (``<emphasis>`` on one that does not declare it) is refused with
a 400 naming the element and where it is.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Protocol

from voxserve.config import Settings
from voxserve.engines.base import Engine, Voicing
from voxserve.errors import InvalidRequestError
from voxserve.request import SpeechOptions, SpeechRequest
from voxserve.synthesis.paused_plan import PausedPlan, plan_paused_text
from voxserve.synthesis.plan import PlanOptions, Segment
from voxserve.text import normalize_for
from voxserve.text.say_as import say_as
from voxserve.text.ssml import Break, SsmlDocument, Words, looks_like_ssml, parse_ssml, refuse
from voxserve.voices.resolution import VoiceResolver


class Planner(Protocol):
    """What planning an input takes of the synthesizer (which calls it: named, not imported)."""

    settings: Settings
    resolver: VoiceResolver

    def plan_options(self, engine: Engine) -> PlanOptions: ...


_LEADING_PUNCTUATION = re.compile(r"\s*[.,!?;:\u2026]+")


def is_ssml(request: SpeechRequest) -> bool:
    """The request's own ``input_format``, else whether its input opens with ``<speak``."""
    if request.input_format is not None:
        return request.input_format == "ssml"
    return looks_like_ssml(request.input)


def spoken_text(request: SpeechRequest) -> str:
    """What the request says, without its markup: the text its language is detected from. A
    malformed document is refused here, before its voice is resolved."""
    return parse_ssml(request.input).text if is_ssml(request) else request.input


def plan_input(synthesizer: Planner, request: SpeechRequest, voicing: Voicing) -> list[Segment]:
    """The request's segments, ``voicing`` speaking all but what a ``<voice>`` gives another.
    Blocking."""
    if not is_ssml(request):
        options = synthesizer.plan_options(voicing.engine)
        return plan_paused_text(request.input, voicing, options, normalize=request.normalize)
    return _SsmlPlanner(synthesizer, request, voicing).plan(parse_ssml(request.input))


class _SsmlPlanner:
    def __init__(self, synthesizer: Planner, request: SpeechRequest, voicing: Voicing):
        self.synthesizer = synthesizer
        self.request = request
        self.voicing = voicing
        self._voicings: dict[tuple[str | None, float], Voicing] = {(None, 1.0): voicing}

    def plan(self, document: SsmlDocument) -> list[Segment]:
        self._check_language(document)
        plan = PausedPlan(self.synthesizer.plan_options)
        run: list[str] = []
        run_voicing = self.voicing
        sentence_pause = self.synthesizer.settings.sentence_pause
        for item in document.items:
            if isinstance(item, Break):
                _add(plan, run, run_voicing)
                seconds = sentence_pause if item.seconds is None else item.seconds
                plan.pause(seconds, written=item.explicit)
                continue
            voicing = self._voicing(item)
            if voicing is not run_voicing:
                _add(plan, run, run_voicing)
                run_voicing = voicing
            run.append(self._spoken(item, voicing))
        _add(plan, run, run_voicing)
        return plan.finish()

    def _check_language(self, document: SsmlDocument) -> None:
        language = document.language
        if language and _base(language) != _base(self.voicing.language or "en"):
            raise InvalidRequestError(
                f"SSML xml:lang {language!r} is not the language of voice "
                f"{self.voicing.voice.id!r} ({self.voicing.language or 'en'}); set the "
                "request's language, or leave xml:lang out",
                param="input", code="unsupported_language",
            )  # fmt: skip

    def _spoken(self, item: Words, voicing: Voicing) -> str:
        """What ``item`` says, as words in its voicing's language."""
        if item.interpret_as is not None:
            try:
                return say_as(item.interpret_as, item.text, voicing.language, item.date_format)
            except ValueError as error:
                what = f"<say-as interpret-as={item.interpret_as!r}>"
                raise refuse(item.where, f"{what}: {error}") from None
        if not self.request.normalize:
            return item.text
        # Normalized on its own: punctuation right after a say-as ("3</say-as>. Then") would
        # be dropped by a normalizer that sees nothing before it, and ends the sentence.
        lead = _LEADING_PUNCTUATION.match(item.text)
        if lead is None:
            return normalize_for(item.text, voicing.language)
        rest = normalize_for(item.text[lead.end() :], voicing.language)
        return f"{lead[0].strip()} {rest}"

    def _voicing(self, item: Words) -> Voicing:
        """The voicing of ``item``'s voice at its rate, resolved once per document."""
        if item.emphasis is not None and item.emphasis != "none":
            engine = self._voice(item).engine
            if not engine.capabilities.emphasis:
                raise refuse(item.where, f"engine {engine.name!r} cannot speak <emphasis>")
        key = (item.voice, round(item.rate, 6))
        if key not in self._voicings:
            self._voicings[key] = self._at_rate(self._voice(item), item.rate, item.where)
        return self._voicings[key]

    def _voice(self, item: Words) -> Voicing:
        if item.voice is None:
            return self.voicing
        key = (item.voice, 1.0)
        if key not in self._voicings:
            options = self.request.model_copy(update={"voice": item.voice})
            try:
                voicing = self.synthesizer.resolver.voicing(
                    SpeechOptions.model_validate(options.model_dump()), text=item.text
                )
            except InvalidRequestError as error:
                raise refuse(item.where, f"<voice name={item.voice!r}>: {error.message}") from error
            # One output rate for the whole answer, as a dialogue's turns have; words timed
            # for all of it, or none.
            self._voicings[key] = replace(
                voicing, sample_rate=self.voicing.sample_rate, timed_words=self.voicing.timed_words
            )
        return self._voicings[key]

    def _at_rate(self, voicing: Voicing, rate: float, where: str) -> Voicing:
        if rate == 1.0:
            return voicing
        engine = voicing.engine
        low, high = engine.capabilities.speed_range
        if low == high:
            raise refuse(where, f"engine {engine.name!r} has no rate control for <prosody rate>")
        speed = voicing.options.speed * rate
        if not low <= speed <= high:
            raise refuse(
                where, f"<prosody rate> makes the speed {speed:g}, outside {engine.name}'s range "
                f"{low:g}-{high:g}",
            )  # fmt: skip
        return replace(voicing, options=replace(voicing.options, speed=speed))


def _add(plan: PausedPlan, run: list[str], voicing: Voicing) -> None:
    """The run of text gathered so far, planned in one voicing, as one text."""
    text = " ".join(" ".join(run).split())
    run.clear()
    if text:
        plan.add(re.sub(r" (?=[.,!?;:])", "", text), voicing)


def _base(language: str) -> str:
    return language.replace("_", "-").lower().split("-")[0]
