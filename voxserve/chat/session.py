"""One voice-chat conversation: microphone frames and messages in, transcripts, text and audio out.

Speech -> Listener (VAD, partial and final transcripts) -> the next character -> LLM tokens ->
TextStream (complete sentences) -> synthesis in the character's voice -> audio frames tagged with
a generation id. Half-duplex with optional barge-in; protocol in docs/chat.md. Transport-agnostic:
the WebSocket route hands in two send functions.

A reply starts on the listener's tentative transcript, after a short pause, and is held back
(nothing sent, nothing in the history) until the final transcript confirms the user has finished;
if the user speaks on, it is cancelled. The reply's first audio is then usually ready when the end
of speech becomes certain, which is most of the voice-to-voice latency saved.

With a `ConversationStore`, every turn is saved as it joins the history, and a client can resume a
saved conversation (``resume``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from voxserve.audio import float_to_pcm16, trim_leading_silence
from voxserve.chat.characters import (
    SPEAKER_POLICIES,
    USER,
    Character,
    ChatTurn,
    build_messages,
    choose_next_speaker,
)
from voxserve.chat.history import ConversationStore, check_id, history_disabled, new_id
from voxserve.chat.llm import LLM
from voxserve.chat.stt import Listener, TranscriptEvent
from voxserve.config import ChatSettings
from voxserve.errors import InvalidRequestError, VoxserveError, as_client_error
from voxserve.request import SpeechOptions
from voxserve.synthesis.synthesizer import SpokenSegment, Synthesizer
from voxserve.synthesis.text_stream import TextStream

logger = logging.getLogger("voxserve.chat")
INPUT_RATE = 16000
GENERATION_HEADER = struct.Struct("<I")

SendJson = Callable[[dict], Awaitable[None]]
SendBytes = Callable[[bytes], Awaitable[None]]


@dataclass
class Reply:
    """The assistant's reply in progress."""

    generation: int
    character: Character
    user_text: str
    confirmed: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once the user's turn is certain; until then the reply is prepared but held back."""
    confirmed_at: float | None = None
    task: asyncio.Task | None = None
    text_stream: TextStream | None = None
    spoken: list[SpokenSegment] = field(default_factory=list)
    text: str = ""
    audio_started_at: float | None = None


class ChatSession:
    def __init__(
        self,
        synthesizer: Synthesizer,
        llm: LLM | None,
        settings: ChatSettings,
        send_json: SendJson,
        send_bytes: SendBytes,
        store: ConversationStore | None = None,
    ):
        self.synthesizer = synthesizer
        self.llm = llm
        self.settings = settings
        self.send_json = send_json
        self.send_bytes = send_bytes
        self.listener = Listener(
            synthesizer.transcriber,
            end_of_speech_ms=settings.end_of_speech_ms,
            speculate_after_ms=settings.speculate_after_ms if settings.speculate else None,
            min_speech_ms=settings.min_speech_ms,
            partial_interval_ms=settings.partial_interval_ms,
            vad_threshold=settings.vad_threshold,
            window_s=settings.stt_window_s,
            beam_size=settings.stt_beam_size,
        )
        self.characters = [Character(**c) for c in settings.characters]
        self.policy = settings.policy
        self.history: list[ChatTurn] = []
        self.store = store
        self.conversation_id = new_id()
        """The conversation's id; it is saved from its first turn on."""
        self._saved: asyncio.Task | None = None  # the last save: saves run one after another
        self.listening = False
        self.stopped_by_hand = False
        self.generation = 0
        self.reply: Reply | None = None
        self.speaking = False  # audio of the current reply is out and not yet played to the end
        self._heard = 0  # microphone samples received: the listener's clock
        self._speech_started_at: float | None = None
        self._warming: asyncio.Task | None = None

    async def start(self) -> None:
        await self.send_json(self._ready())
        self._warming = asyncio.create_task(self._warm_up())

    async def _warm_up(self) -> None:
        """Load and run every model of the chat once, while the user gets ready to speak.

        Cold, the first turn answered ~2 s later than the next ones (loading the voice takes
        ~1.9 s, the LLM reading its persona prompt ~0.5 s, Whisper's first run ~75 ms). A step
        that fails is left to the turn that meets it, which reports it.
        """
        character = self.characters[0]
        others = [c for c in self.characters if c.name != character.name]
        steps: list[Callable[[], Awaitable]] = [
            functools.partial(asyncio.to_thread, self.listener.warm_up)
        ]
        if self.llm is not None:
            messages = build_messages(character, [], others=others)
            steps.append(functools.partial(self.llm.warm_up, messages))
        engines = set()
        for each in self.characters:
            with contextlib.suppress(VoxserveError):  # a bad voice is reported when it speaks
                engines.add(self.synthesizer.voicing(SpeechOptions(voice=each.voice)).engine.name)
        steps += [functools.partial(self.synthesizer.registry.ensure_loaded, e) for e in engines]
        for step in steps:  # one at a time, the ears first: the user speaks first
            try:
                await step()
            except Exception as error:  # noqa: BLE001 - best effort: the turn reports it
                logger.info("warming up the chat: %s", error)

    # client messages

    async def on_message(self, message: dict) -> None:
        kind = message.get("type")
        handler = {
            "start_listening": self._start_listening, "stop_listening": self._stop_listening,
            "text": self._typed, "interrupt": self._interrupt_message,
            "playback_started": self._playback_started,
            "playback_finished": self._playback_finished,
            "set_characters": self._set_characters, "reset": self._reset,
            "resume": self._resume,
        }.get(kind)  # fmt: skip
        if handler is None:
            raise InvalidRequestError(f"unknown message type {kind!r}", code="unknown_type")
        await handler(message)

    async def on_audio(self, frame: bytes) -> None:
        """A microphone frame: transcribed while listening; heard for barge-in while speaking."""
        if not (self.listening or (self.speaking and self.settings.barge_in)):
            return
        pushed_at = time.monotonic()
        self._heard += len(frame) // 2
        for event in await self.listener.push(frame):
            await self._on_transcript(event, pushed_at)
        if (
            self.speaking
            and self._speech_started_at is not None
            and self.listener.speaking
            and self._heard / INPUT_RATE - self._speech_started_at
            >= self.settings.barge_in_min_ms / 1000
        ):
            await self.interrupt()

    async def close(self) -> None:
        if self._warming is not None:
            self._warming.cancel()
        await self._cancel_reply()
        if self._saved is not None:
            await asyncio.gather(self._saved, return_exceptions=True)

    # turns

    async def _on_transcript(self, event: TranscriptEvent, pushed_at: float) -> None:
        if event.kind == "speech_started":
            self._speech_started_at = event.start
        elif event.kind == "partial":
            await self.send_json({"type": "transcript_partial", "text": event.text})
        elif event.kind == "tentative" and self.listening:  # not while the assistant talks
            await self.respond(
                event.text, self._ended_at(event, pushed_at), event.heard_in, tentative=True
            )
        elif event.kind == "speech_resumed":
            if self.reply is not None and not self.reply.confirmed.is_set():
                await self._cancel_reply()
        elif event.kind == "final":
            self._speech_started_at = None
            await self.send_json({"type": "transcript_final", "text": event.text})
            reply = self.reply
            if reply and not reply.confirmed.is_set() and reply.user_text == event.text:
                self._confirm(reply)
            else:
                await self.respond(event.text, self._ended_at(event, pushed_at), event.heard_in)

    def _ended_at(self, event: TranscriptEvent, pushed_at: float) -> float:
        """When, on our clock, the user stopped speaking: ``event.end`` is in stream time, and the
        frame pushed at ``pushed_at`` ended at the stream time of every sample heard so far."""
        return pushed_at - (self._heard / INPUT_RATE - event.end)

    async def respond(
        self,
        user_text: str,
        speech_ended_at: float | None = None,
        heard_in: float | None = None,
        *,
        tentative: bool = False,
    ) -> None:
        """Answer the user: the previous reply, if still going, is cancelled. A ``tentative``
        answer is prepared but held back until ``_confirm``. ``heard_in``: the seconds the
        transcription of ``user_text`` took, for the turn's metrics."""
        await self._cancel_reply()
        history = [*self.history, ChatTurn(USER, user_text)]
        last = next((t.speaker for t in reversed(history) if t.speaker != USER), None)
        character = choose_next_speaker(self.characters, user_text, last, self.policy)
        self.generation += 1
        reply = Reply(self.generation, character, user_text)
        started = speech_ended_at or time.monotonic()
        reply.task = asyncio.create_task(self._speak(reply, history, started, heard_in))
        self.reply = reply
        if not tentative:
            self._confirm(reply)

    def _confirm(self, reply: Reply) -> None:
        """The user's turn is certain: it joins the history, and the reply may go out."""
        self._remember(ChatTurn(USER, reply.user_text))
        reply.confirmed_at = time.monotonic()
        reply.confirmed.set()

    async def _speak(
        self, reply: Reply, history: list[ChatTurn], started: float, heard_in: float | None
    ) -> None:
        character, generation = reply.character, reply.generation
        marks: dict[str, float] = {"start": started, "final": time.monotonic()}
        if heard_in is not None:
            marks["transcription"] = heard_in
        try:
            if self.llm is None:
                raise InvalidRequestError(
                    "no LLM is configured: set chat.llm_base_url to an OpenAI-compatible server, "
                    "or install the embedded one: pip install 'voxserve[chat]'",
                    code="llm_not_configured",
                )
            voicing = self.synthesizer.voicing(SpeechOptions(voice=character.voice))
            text = TextStream(voicing.voice.id, self.synthesizer.plan_options(voicing.engine))
            reply.text_stream = text
            others = [c for c in self.characters if c.name != character.name]
            messages = build_messages(character, history, others=others)
            writer = asyncio.create_task(self._write_reply(reply, messages, text, marks))
            try:
                await self._play(reply, voicing, text, marks)
                await writer
            finally:
                writer.cancel()
                await asyncio.gather(writer, return_exceptions=True)
            await reply.confirmed.wait()
            marks["confirmed"] = reply.confirmed_at
            self._remember(ChatTurn(character.name, reply.text.strip()))
            await self.send_json(
                {"type": "assistant_text", "character": character.name,
                 "text": reply.text.strip(), "generation": generation, "final": True}
            )  # fmt: skip
            await self.send_json({"type": "metrics", "generation": generation, **_stages(marks)})
        except Exception as error:  # a bug too is told, and the chat listens again
            told = as_client_error(error, logger, "replying")
            await reply.confirmed.wait()  # a reply that is never confirmed never failed
            await self.send_json({"type": "error", "code": told.code, "message": told.message})
            await self._resume_listening()
        finally:
            if self.reply is reply and not self.speaking:
                self.reply = None

    async def _write_reply(
        self, reply: Reply, messages: list[dict], text: TextStream, marks: dict
    ) -> None:
        """LLM tokens -> the reply's text, released sentence by sentence to the synthesizer."""
        stream = self.llm.stream(messages, max_tokens=self.settings.max_reply_tokens)
        try:
            async with contextlib.aclosing(stream) as tokens:
                async for token in tokens:
                    marks.setdefault("llm_first_token", time.monotonic())
                    reply.text += token
                    text.push(token)
                    if text.released:
                        marks.setdefault("llm_first_sentence", time.monotonic())
        finally:
            text.end()

    async def _play(self, reply: Reply, voicing, text: TextStream, marks: dict) -> None:
        """Synthesize the reply as its sentences arrive; audio frames carry the generation id."""
        header = GENERATION_HEADER.pack(reply.generation)
        started = False
        rendered = self.synthesizer.render(voicing, text.segments())
        async with contextlib.aclosing(rendered) as items:
            async for item in items:
                if isinstance(item, SpokenSegment):
                    reply.spoken.append(item)
                    await self.send_json(
                        {"type": "assistant_text", "character": reply.character.name,
                         "text": item.segment.text, "generation": reply.generation,
                         "final": False}
                    )  # fmt: skip
                    continue
                samples = item.samples
                if not started:
                    started = True
                    marks["tts_first_audio"] = time.monotonic()
                    samples = trim_leading_silence(samples, voicing.sample_rate)
                    await reply.confirmed.wait()
                    reply.audio_started_at = time.monotonic()
                    await self._audio_starts(reply, voicing.sample_rate)
                await self.send_bytes(header + float_to_pcm16(samples))
        if started:
            await self.send_json({"type": "audio_stream_stop", "generation": reply.generation})

    async def _audio_starts(self, reply: Reply, sample_rate: int) -> None:
        self.speaking = True
        await self.send_json(
            {"type": "audio_stream_start", "sample_rate": sample_rate,
             "character": reply.character.name, "generation": reply.generation}
        )  # fmt: skip
        if self.listening:  # half-duplex: the assistant has the floor now
            self.listening = False
            self.listener.reset()
            await self.send_json({"type": "listening", "active": False})

    async def interrupt(self, played_ms: int | None = None) -> None:
        """Barge-in or stop button: flush the client, stop the LLM and the synthesis, and keep in
        the history only what was heard (``played_ms`` as the client reports it, else estimated
        from the time since its audio started)."""
        reply = self.reply
        if reply is None:
            return
        await self.send_json({"type": "tts_interrupt", "generation": reply.generation})
        await self._cancel_reply()
        if played_ms is not None:
            played = played_ms / 1000
        elif reply.audio_started_at is not None:
            played = time.monotonic() - reply.audio_started_at
        else:
            played = 0.0
        heard = " ".join(_heard(reply, played))
        if heard:
            self._remember(ChatTurn(reply.character.name, heard))
        self.speaking = False
        await self._resume_listening(force=True)

    async def _cancel_reply(self) -> None:
        reply, self.reply = self.reply, None
        if reply is not None and reply.task is not None and not reply.task.done():
            reply.task.cancel()
            await asyncio.gather(reply.task, return_exceptions=True)

    async def _resume_listening(self, force: bool = False) -> None:
        if self.stopped_by_hand or (self.listening and not force):
            return
        self.listener.reset()
        self._speech_started_at = None
        self.listening = True
        await self.send_json({"type": "listening", "active": True})

    # message handlers

    async def _start_listening(self, _: dict) -> None:
        self.stopped_by_hand = False
        await self._resume_listening(force=True)

    async def _stop_listening(self, _: dict) -> None:
        self.stopped_by_hand = True
        self.listening = False
        self.listener.reset()
        await self.send_json({"type": "listening", "active": False})

    async def _typed(self, message: dict) -> None:
        text = message.get("text")
        if not isinstance(text, str) or not text.strip():
            raise InvalidRequestError('"text" must be a non-empty string', code="invalid_message")
        await self.respond(text.strip())

    async def _interrupt_message(self, message: dict) -> None:
        played_ms = message.get("played_ms")
        await self.interrupt(played_ms if isinstance(played_ms, int) else None)

    async def _playback_started(self, message: dict) -> None:
        return None  # the client's own account; the server already knows the audio went out

    async def _playback_finished(self, message: dict) -> None:
        if message.get("generation") != self.generation:
            return  # a stale generation
        self.speaking = False
        if self.reply is not None and self.reply.task is not None and self.reply.task.done():
            self.reply = None
        await self._resume_listening()

    async def _set_characters(self, message: dict) -> None:
        try:
            characters = [Character(**c) for c in message.get("characters") or []]
        except TypeError as error:
            raise InvalidRequestError(
                f"invalid character: {error}", code="invalid_message"
            ) from error
        if not characters or len({c.name for c in characters}) != len(characters):
            raise InvalidRequestError("give one or more characters with unique names",
                                      code="invalid_message")  # fmt: skip
        for character in characters:
            self.synthesizer.voicing(SpeechOptions(voice=character.voice))  # a bad voice: 400 now
        policy = message.get("policy", self.policy)
        if policy not in SPEAKER_POLICIES:
            raise InvalidRequestError(f"unknown policy {policy!r}", code="invalid_message")
        self.characters, self.policy = characters, policy
        if self.store is not None:
            await asyncio.to_thread(
                self.store.set_characters, self.conversation_id, characters, policy
            )
        await self.send_json(self._ready())

    async def _reset(self, _: dict) -> None:
        """A new conversation; the old one stays saved."""
        await self._cancel_reply()
        self.history.clear()
        self.conversation_id = new_id()
        self.speaking = False
        await self.send_json(self._ready())

    async def _resume(self, message: dict) -> None:
        """Carry on a saved conversation: its characters, policy and history come back."""
        conversation_id = message.get("conversation_id")
        check_id(conversation_id)
        if self.store is None:
            raise history_disabled()
        conversation = await asyncio.to_thread(self.store.get, conversation_id)
        await self._cancel_reply()
        if self._saved is not None:  # our own last turns must be in before it is read again
            await asyncio.gather(self._saved, return_exceptions=True)
        self.conversation_id = conversation.id
        self.history = list(conversation.turns)
        self.characters, self.policy = conversation.characters, conversation.policy
        self.speaking = False
        await self.send_json(self._ready())

    def _remember(self, turn: ChatTurn) -> None:
        """``turn`` joins the history, and is saved in the background, after the turns before."""
        self.history.append(turn)
        if self.store is not None:
            save = functools.partial(
                self.store.add_turn, self.conversation_id, turn,
                characters=self.characters, policy=self.policy,
            )  # fmt: skip
            self._saved = asyncio.create_task(self._save(save, self._saved))

    async def _save(self, save: Callable[[], None], previous: asyncio.Task | None) -> None:
        if previous is not None:
            await asyncio.gather(previous, return_exceptions=True)
        try:
            await asyncio.to_thread(save)
        except Exception as error:  # a database down must not end the chat; say so
            logger.exception("could not save a chat turn")
            await self.send_json(
                {"type": "error", "code": "history_not_saved",
                 "message": f"this turn was not saved: {error}"}
            )  # fmt: skip

    def _ready(self) -> dict:
        return {
            "type": "ready",
            "characters": [c.__dict__ for c in self.characters],
            "policy": self.policy,
            "barge_in": self.settings.barge_in,
            "input_sample_rate": INPUT_RATE,
            "conversation_id": self.conversation_id,
            "history": [{"speaker": t.speaker, "text": t.text} for t in self.history],
        }


def _heard(reply: Reply, played: float) -> list[str]:
    """The reply's sentences whose audio had started playing ``played`` seconds in: the finished
    ones by their timings, and the one in progress (its timing comes only when it ends)."""
    heard = [spoken.segment.text for spoken in reply.spoken if spoken.start < played]
    released = reply.text_stream.released if reply.text_stream else []
    in_progress_start = reply.spoken[-1].end if reply.spoken else 0.0
    if len(released) > len(reply.spoken) and reply.audio_started_at and in_progress_start < played:
        heard.append(released[len(reply.spoken)].text)
    return heard


def _stages(marks: dict[str, float]) -> dict[str, int]:
    """Milliseconds per stage of a turn (docs/chat.md). A tentative transcript can come before the
    end of speech is certain (``end_of_speech_to_confirmed``); the reply's work then overlaps it."""
    start = marks["start"]
    stages = {
        "end_of_speech_to_final": marks["final"] - start,
        "end_of_speech_to_confirmed": marks["confirmed"] - start,
    }
    if "transcription" in marks:  # the rest of the way to the transcript: hearing the pause
        heard_in = stages["transcription"] = marks["transcription"]
        stages["end_of_speech_detection"] = stages["end_of_speech_to_final"] - heard_in
    for name in ("llm_first_token", "llm_first_sentence", "tts_first_audio"):
        if name in marks:
            stages[name] = marks[name] - marks["final"]
    if "tts_first_audio" in marks:
        stages["total_to_first_audio"] = max(marks["tts_first_audio"], marks["confirmed"]) - start
    return {name: round(seconds * 1000) for name, seconds in stages.items()}
