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
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace

from voxserve.audio import AudioChunk, trim_leading_silence
from voxserve.chat import messages
from voxserve.chat.characters import USER, Character, ChatTurn, build_messages, choose_next_speaker
from voxserve.chat.history import ConversationStore, history_disabled, new_id
from voxserve.chat.llm import LLM
from voxserve.chat.stt import Listener, TranscriptEvent
from voxserve.chat.warmup import ChatWarmup
from voxserve.config import ChatSettings
from voxserve.engines.base import Voicing
from voxserve.errors import InvalidRequestError, VoxserveError
from voxserve.request import SpeechOptions
from voxserve.streaming import client_error, encode_stream
from voxserve.synthesis.cost import text_usd
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
    user_turn: ChatTurn | None = None
    """The user's turn, once it has joined the history."""
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
        warmup: ChatWarmup,
        store: ConversationStore | None = None,
        check_spending: Callable[[float], None] | None = None,
    ):
        self.synthesizer = synthesizer
        self.llm = llm
        self.settings = settings
        self.send_json = send_json
        self.send_bytes = send_bytes
        self.warmup = warmup
        """Shared by the process's sessions: the models are warmed once, not per connection."""
        self.listener = Listener.for_chat(synthesizer.resolver.transcriber, settings)
        self.characters = [Character(**c) for c in settings.characters]
        self._voicings: dict[str, Voicing] = {}  # a character's voice -> its voicing
        self.policy = settings.policy
        self.history: list[ChatTurn] = []
        self.store = store
        self.check_spending = check_spending
        """Refuses (raising) text whose speech, at that many USD, the caller's budget cannot pay
        for: the server's `Spending.check`; None where nothing is budgeted (the library)."""
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

    async def start(self) -> None:
        """Say hello. Nothing else costs anything until the client speaks or writes, but the
        process's first chat starts warming the models for everyone."""
        self.warmup.start()
        await self.send_json(self._ready())

    # client messages

    async def on_message(self, message: messages.ClientMessage) -> None:
        """A client's message, checked already (`messages.parse_message`)."""
        handler = {
            "start_listening": self._start_listening, "stop_listening": self._stop_listening,
            "text": self._typed, "interrupt": self._interrupt_message,
            "playback_started": self._playback_started,
            "playback_finished": self._playback_finished,
            "set_characters": self._set_characters, "reset": self._reset,
            "resume": self._resume,
        }[message.type]  # fmt: skip
        await handler(message)  # type: ignore[operator]

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
        reply.user_turn = ChatTurn(USER, reply.user_text)
        self._remember(reply.user_turn)
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
            voicing = await self._voicing(character.voice)
            text = TextStream(
                voicing,
                self.synthesizer.plan_options(voicing.engine),
                voicing_for=self.synthesizer.resolver.for_text,
            )
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
            told = client_error(error, logger, "replying")
            await reply.confirmed.wait()  # a reply that is never confirmed never failed
            # A turn that could not be answered fails alone: kept, every later reply would read
            # it again (and, were it the cause, fail the same way).
            self._forget(reply.user_turn)
            await self.send_json(told.ws_message())
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
                    if self.check_spending is not None:  # the reply stops at the budget
                        self.check_spending(text_usd(text.voicing, token))
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
        rendered = self.synthesizer.render(text.segments(), [voicing.engine], voicing.sample_rate)
        encoded = encode_stream(_trimmed(rendered, marks), "pcm", voicing.sample_rate)
        async with contextlib.aclosing(encoded) as pieces:
            async for piece in pieces:
                if isinstance(piece, SpokenSegment):
                    reply.spoken.append(piece)
                    await self.send_json(
                        {"type": "assistant_text", "character": reply.character.name,
                         "text": piece.segment.text, "generation": reply.generation,
                         "final": False}
                    )  # fmt: skip
                    continue
                if not isinstance(piece, bytes):
                    continue  # words: the chat's protocol has no place for them yet
                if not started:
                    started = True
                    await reply.confirmed.wait()
                    reply.audio_started_at = time.monotonic()
                    await self._audio_starts(reply, voicing.sample_rate)
                await self.send_bytes(header + piece)
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

    async def _start_listening(self, _: messages.StartListening) -> None:
        self.stopped_by_hand = False
        for character in self.characters:  # resolved now, not when a reply is begun in a pause
            with contextlib.suppress(VoxserveError):  # a bad voice is told when it speaks
                await self._voicing(character.voice)
        await self._resume_listening(force=True)

    async def _voicing(self, voice: str) -> Voicing:
        """A character's voicing, resolved once (in a thread) and kept: a reply begun in the
        user's pause must not wait for a free worker thread behind the transcription."""
        voicing = self._voicings.get(voice)
        if voicing is None:
            voicing = await self.synthesizer.resolver.resolve(SpeechOptions(voice=voice))
            self._voicings[voice] = voicing
        return voicing

    async def _stop_listening(self, _: messages.StopListening) -> None:
        self.stopped_by_hand = True
        self.listening = False
        self.listener.reset()
        await self.send_json({"type": "listening", "active": False})

    async def _typed(self, message: messages.TypedText) -> None:
        await self.respond(message.text.strip())

    async def _interrupt_message(self, message: messages.Interrupt) -> None:
        played_ms = message.played_ms
        await self.interrupt(None if played_ms is None else round(played_ms))

    async def _playback_started(self, _: messages.PlaybackStarted) -> None:
        return None  # the client's own account; the server already knows the audio went out

    async def _playback_finished(self, message: messages.PlaybackFinished) -> None:
        if message.generation != self.generation:
            return  # a stale generation
        self.speaking = False
        if self.reply is not None and self.reply.task is not None and self.reply.task.done():
            self.reply = None
        await self._resume_listening()

    async def _set_characters(self, message: messages.SetCharacters) -> None:
        characters = message.characters
        if len({c.name for c in characters}) != len(characters):
            raise InvalidRequestError("give characters unique names", param="characters",
                                      code="invalid_message")  # fmt: skip
        for number, character in enumerate(characters):
            try:  # a bad voice is told now, not at the character's first line
                await self._voicing(character.voice)
            except VoxserveError as error:
                error.param = f"characters.{number}.voice"
                raise
        policy = message.policy or self.policy
        self.characters, self.policy = characters, policy
        if self.store is not None:
            await asyncio.to_thread(
                self.store.set_characters, self.conversation_id, characters, policy
            )
        await self.send_json(self._ready())

    async def _reset(self, _: messages.Reset) -> None:
        """A new conversation; the old one stays saved."""
        await self._cancel_reply()
        self.history.clear()
        self.conversation_id = new_id()
        self.speaking = False
        await self.send_json(self._ready())

    async def _resume(self, message: messages.Resume) -> None:
        """Carry on a saved conversation: its characters, policy and history come back."""
        if self.store is None:
            raise history_disabled()
        conversation = await asyncio.to_thread(self.store.get, message.conversation_id)
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

    def _forget(self, turn: ChatTurn | None) -> None:
        """``turn``, the latest of the history, leaves it, and the saved conversation too."""
        if turn is None or not self.history or self.history[-1] is not turn:
            return  # the history moved on (a reset, a resume): nothing of ours to take back
        self.history.pop()
        if self.store is not None:
            drop = functools.partial(self.store.drop_last_turn, self.conversation_id, turn)
            self._saved = asyncio.create_task(self._save(drop, self._saved))

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


async def _trimmed(
    items: AsyncIterator[AudioChunk | SpokenSegment], marks: dict[str, float]
) -> AsyncIterator[AudioChunk | SpokenSegment]:
    """A reply's audio without the silence it starts with (the user waits through it); when its
    first audio came marked."""
    first = True
    async with contextlib.aclosing(items):
        async for item in items:
            if first and isinstance(item, AudioChunk) and len(item.samples):
                first = False
                marks["tts_first_audio"] = time.monotonic()
                samples = trim_leading_silence(item.samples, item.sample_rate)
                item = replace(item, samples=samples)
            yield item


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
