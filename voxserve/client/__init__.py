"""A Python client for a voxserve server: its HTTP API and both WebSocket protocols.

    from voxserve.client import Client, Sampling, SpeechRequest

    with Client("http://127.0.0.1:8880") as client:
        Path("hello.mp3").write_bytes(client.speech("Hello there!", voice="joe"))

        for data in client.stream_speech("Audio as it is made.", response_format="pcm"):
            ...  # 24 kHz s16le mono (OpenAI's pcm), as it arrives

        # Text in while audio comes out, e.g. tokens from an LLM:
        with client.speak_stream(["Hello", " there", ".", " How are", " you?"]) as audio:
            for chunk in audio:  # voxserve.AudioChunk: float32 samples + sample_rate
                ...
        print(audio.segments)  # [Segment(index=0, text='Hello there.', start_ms=0, end_ms=...)]

        client.generate_speech("Saved as WAV.", "out.wav", lang="en-US", sample_rate=24000)

        # The server's own request models, or their fields as keywords, checked before sending:
        client.speech(SpeechRequest(input="Hi.", sampling=Sampling(seed=7)), model="higgs")
        client.dialogue_to_file([{"speaker": "Ann", "text": "Hi!"}], "chat.mp3")
        client.create_voice("ann", audio="ann.wav", transcript="What the clip says.")
        client.speech("Like the clip.", clip="ann.wav", model="higgs")  # a cloning engine

`AsyncClient` has the same methods, awaited (``async for`` for the streams), and accepts async
iterables of text in `speak_stream`; `Client` is generated from it (scripts/unasync.py). Every
failure is a `ClientError`: the server's answer (HTTP status, code, the field at fault,
``retry_after`` for 429), a request the server's model refuses (``invalid_request``, no status),
or a network failure. A keyword that is no field of the request is a TypeError.

The request models are the server's, here too for one import: `SpeechRequest`, `SpeechOptions`,
`Sampling`, `DialogueRequest`, `DialogueTurn`.
"""

from voxserve.client._async import AsyncClient, AsyncSpeechStream
from voxserve.client._protocol import ClientError, Segment
from voxserve.client._sync import Client, SpeechStream
from voxserve.request import DialogueRequest, DialogueTurn, Sampling, SpeechOptions, SpeechRequest

__all__ = [
    "AsyncClient",
    "AsyncSpeechStream",
    "Client",
    "ClientError",
    "DialogueRequest",
    "DialogueTurn",
    "Sampling",
    "Segment",
    "SpeechOptions",
    "SpeechRequest",
    "SpeechStream",
]
