"""voxserve over Wyoming, driven as Home Assistant drives it (tests/wyoming/conftest.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.info import Describe, Info
from wyoming.tts import (
    Synthesize,
    SynthesizeChunk,
    SynthesizeStart,
    SynthesizeStop,
    SynthesizeStopped,
    SynthesizeVoice,
)

from tests.wyoming.conftest import (
    EVENT_TIMEOUT,
    Served,
    describe,
    errors,
    one_shot,
    read_until,
    streamed,
    wav_seconds,
)

PIPER = SynthesizeVoice(name="piper/joe")
FAKE = SynthesizeVoice(name="fake/tone")


async def test_describe_lists_the_voices_with_their_languages_and_whisper(served: Served):
    info = await describe(served)  # within Home Assistant's 1 s, or read_event times out

    (tts,) = info.tts
    assert tts.installed and tts.supports_synthesize_streaming
    voices = {voice.name: voice for voice in tts.voices}
    assert voices["piper/joe"].languages == ["en-US"]
    assert voices["fake/tone"].languages == ["en"]
    assert all(voice.installed and voice.languages for voice in tts.voices)
    assert not served.synthesizer.registry.is_loaded("fake")  # nothing was loaded to answer
    (asr,) = info.asr
    assert asr.installed and asr.models[0].languages == ["en"]


async def test_one_shot_is_one_audio_start_its_chunks_and_one_audio_stop(served: Served):
    async with served.client() as client:
        heard = await one_shot(client, Synthesize(text="Hello from voxserve.", voice=PIPER).event())

    assert heard.types[0] == "audio-start" and heard.types[-1] == "audio-stop"
    assert set(heard.types[1:-1]) == {"audio-chunk"}
    assert 0.5 < wav_seconds(heard.wav()) < 5  # every chunk in the audio-start's format
    assert heard.of(AudioStart)[0].rate == 22050


async def test_streaming_resplits_chunks_into_sentences_and_ignores_the_whole_text(
    served: Served,
):
    served.fake.calls.clear()
    pieces = ["The bed", "room light is o", "ff. The kitch", "en lights are on", ". Anything else?"]
    async with served.client() as client:
        heard = await streamed(
            client,
            SynthesizeStart(voice=FAKE).event(),
            *(SynthesizeChunk(text=piece).event() for piece in pieces),
            # What Home Assistant sends next, for servers that cannot stream: to be ignored.
            Synthesize(text="".join(pieces), voice=FAKE).event(),
            SynthesizeStop().event(),
        )

    assert heard.types.count("audio-start") == 1 and heard.types.count("audio-stop") == 1
    assert heard.types[-2:] == ["audio-stop", "synthesize-stopped"]
    assert " ".join(served.fake.calls) == "".join(pieces)  # spoken once
    # Each whole sentence (its opening words may go first, to start speaking sooner) is spoken:
    # none is cut where the client's pieces were.
    assert served.fake.calls[-2:] == ["The kitchen lights are on.", "Anything else?"]
    assert wav_seconds(heard.wav()) > 0.5


async def test_empty_streamed_text_still_ends_with_synthesize_stopped(served: Served):
    async with served.client() as client:
        heard = await streamed(
            client, SynthesizeStart(voice=PIPER).event(), SynthesizeChunk(text=" ").event(),
            SynthesizeStop().event(),
        )  # fmt: skip

    assert heard.types == ["audio-start", "audio-stop", "synthesize-stopped"]


async def test_first_sentence_is_heard_before_the_last_chunk_is_sent(served: Served):
    async with served.client() as client:
        await client.write_event(SynthesizeStart(voice=PIPER).event())
        await client.write_event(SynthesizeChunk(text="Good morning. The weather to").event())
        # The last chunk is held back until audio comes: this returns only if it does.
        before_last = await read_until(client, AudioChunk)
        await client.write_event(SynthesizeChunk(text="day is sunny.").event())
        await client.write_event(SynthesizeStop().event())
        rest = await read_until(client, SynthesizeStopped)

    assert before_last.types == ["audio-start", "audio-chunk"]
    assert rest.types[-2:] == ["audio-stop", "synthesize-stopped"]


async def test_an_unknown_voice_is_an_error_event_and_the_next_client_is_served(served: Served):
    async with served.client() as client:
        heard = await one_shot(
            client, Synthesize(text="Hi.", voice=SynthesizeVoice("nobody")).event()
        )

    (error,) = errors(heard)
    assert error.code == "voice_not_found" and "nobody" in error.text
    assert heard.types == ["error"]  # then the connection ended: Home Assistant's failure sign

    async with served.client() as client:  # a stream with that voice: told, and stopped
        heard = await streamed(
            client, SynthesizeStart(voice=SynthesizeVoice("nobody")).event(),
            SynthesizeChunk(text="Hi.").event(), SynthesizeStop().event(),
        )  # fmt: skip
    assert heard.types == ["error", "synthesize-stopped"]

    async with served.client() as client:
        heard = await one_shot(client, Synthesize(text="Still here.", voice=PIPER).event())
    assert not errors(heard) and wav_seconds(heard.wav()) > 0.3


async def test_chunks_outside_a_stream_are_told_and_the_connection_goes_on(served: Served):
    async with served.client() as client:
        await client.write_event(SynthesizeChunk(text="Hello.").event())
        await client.write_event(Describe().event())
        heard = await read_until(client, Info)

    assert heard.types == ["error", "info"]
    assert errors(heard)[0].code == "unexpected_event"


async def test_speech_to_text_hears_what_piper_said(served: Served):
    async with served.client() as client:
        spoken = await one_shot(
            client, Synthesize(text="Turn on the kitchen lights.", voice=PIPER).event()
        )
    start = spoken.of(AudioStart)[0]

    async with served.client() as client:
        await client.write_event(Transcribe(language="en").event())
        await client.write_event(start.event())
        for chunk in spoken.of(AudioChunk):
            await client.write_event(chunk.event())
        await client.write_event(AudioStop().event())
        heard = await read_until(client, Transcript)

    (transcript,) = heard.of(Transcript)
    words = transcript.text.lower().strip(".").replace(",", "").split()
    assert {"kitchen", "lights"} <= set(words), transcript.text
    assert transcript.language == "en"


async def test_a_client_that_leaves_mid_synthesis_stops_it(served: Served):
    fake, scheduler_of = served.fake, served.synthesizer.schedulers
    fake.calls.clear()
    sentences = 30
    text = " ".join(f"Sentence number {n} is here." for n in range(sentences))
    async with served.client() as client:
        await client.write_event(Synthesize(text=text, voice=FAKE).event())
        await read_until(client, AudioChunk)
    # Gone: its render ends (its place on the engine is given back) long before the text does.
    assert await eventually(lambda: not scheduler_of()["fake"].active_streams)
    started = len(fake.calls)
    await asyncio.sleep(0.3)  # (no more engine calls come after it)
    assert len(fake.calls) == started
    assert f"number {sentences - 1} is" not in " ".join(fake.calls)  # the end was never spoken


async def test_a_client_that_leaves_mid_stream_gives_its_place_back(served: Served):
    # No sentence is complete, so nothing is written that could fail: only the end of the
    # connection can end this synthesis, which holds its place on the engine until then.
    streams = served.synthesizer.schedulers
    async with served.client() as client:
        await client.write_event(SynthesizeStart(voice=FAKE).event())
        await client.write_event(SynthesizeChunk(text="And then").event())
        await client.write_event(Describe().event())
        assert (await read_until(client, Info)).types == ["audio-start", "info"]
        assert await eventually(lambda: streams()["fake"].active_streams == 1)
    assert await eventually(lambda: streams()["fake"].active_streams == 0)


async def eventually(condition: Callable[[], bool]) -> bool:
    for _ in range(round(EVENT_TIMEOUT / 0.01)):
        if condition():
            return True
        await asyncio.sleep(0.01)
    return False
