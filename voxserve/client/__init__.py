"""A Python client for a voxserve server: its HTTP API and both WebSocket protocols.

    from voxserve.client import Client

    with Client("http://127.0.0.1:8880") as client:
        Path("hello.mp3").write_bytes(client.speech("Hello there!", voice="joe"))

        for data in client.stream_speech("Audio as it is made.", response_format="pcm"):
            ...  # 22,050 Hz s16le mono, as it arrives

        # Text in while audio comes out, e.g. tokens from an LLM:
        with client.speak_stream(["Hello", " there", ".", " How are", " you?"]) as audio:
            for chunk in audio:  # voxserve.AudioChunk: float32 samples + sample_rate
                ...
        print(audio.segments)  # [Segment(index=0, text='Hello there.', start_ms=0, end_ms=...)]

        client.generate_speech("Saved as WAV.", "out.wav", lang="en-US", sample_rate=24000)

`AsyncClient` has the same methods, awaited (``async for`` for the streams), and accepts async
iterables of text in `speak_stream`. Every failure is a `ClientError`: the server's answer (HTTP
status, code, the field at fault, ``retry_after`` for 429) or a network failure.
"""

from voxserve.client._async import AsyncClient, AsyncSpeechStream
from voxserve.client._protocol import ClientError, Segment
from voxserve.client._sync import Client, SpeechStream

__all__ = [
    "AsyncClient",
    "AsyncSpeechStream",
    "Client",
    "ClientError",
    "Segment",
    "SpeechStream",
]
