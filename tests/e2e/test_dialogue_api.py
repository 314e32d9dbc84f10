"""Dialogue over HTTP and from the command line, with the embedded voices."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest
from click.testing import CliRunner

from tests.audio.signals import dominant_frequency, rms, sine, wav_bytes
from voxserve.audio import decode_audio
from voxserve.cli import main

SCRIPT = "Alice|||Hello Bob, how are you?\nBob|||Fine, thanks. And you?\nAlice|||Great!"


def test_speech_input_with_dialogue_lines_is_spoken_as_a_dialogue(server_url):
    response = httpx.post(
        f"{server_url}/v1/audio/speech",
        json={"input": SCRIPT, "response_format": "wav", "voice": "joe"}, timeout=60,
    )  # fmt: skip
    assert response.status_code == 200
    audio = decode_audio(response.content)
    timing = httpx.get(server_url + response.headers["x-timing-url"]).json()
    assert timing["status"] == "complete"
    turns = timing["turns"]
    assert [(t["speaker"], t["voice"]) for t in turns] == [
        ("Alice", "warm_female"), ("Bob", "storyteller_male"), ("Alice", "warm_female"),
    ]  # fmt: skip
    assert turns[1]["start_ms"] - turns[0]["end_ms"] == 400  # the default pause
    assert audio.duration == pytest.approx(turns[-1]["end_ms"] / 1000, abs=0.15)


def test_the_dialogue_route_streams_turn_events(server_url):
    body = {
        "turns": [{"speaker": "Host", "text": "Welcome."}, {"speaker": "Guest", "text": "Thanks."}],
        "voices": {"guest": "deep_male"}, "stream_format": "sse", "response_format": "pcm",
    }  # fmt: skip
    response = httpx.post(f"{server_url}/v1/audio/dialogue", json=body, timeout=60)
    events = [
        json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: ")
    ]
    turns = [e for e in events if e["type"] == "dialogue.turn"]
    assert [(t["speaker"], t["voice"]) for t in turns] == [
        ("Host", "warm_female"),
        ("Guest", "deep_male"),
    ]
    summary = [{key: value for key, value in t.items() if key != "type"} for t in turns]
    assert events[-1]["type"] == "speech.audio.done" and events[-1]["turns"] == summary


@pytest.mark.parametrize(
    ("url", "body", "param"),
    [
        ("/v1/audio/dialogue", {"turns": []}, "turns"),
        ("/v1/audio/dialogue", {"turns": [{"speaker": "A", "text": "Hi."}], "voices": {"a": "x"}},
         "turns.0.voice"),
        ("/v1/audio/speech", {"input": "|||nobody speaks"}, "input"),
    ],
)  # fmt: skip
def test_bad_dialogues_name_what_is_wrong(server_url, url, body, param):
    response = httpx.post(server_url + url, json=body)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


def test_the_dialog_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("VOXSERVE_DATA_DIR", str(tmp_path / "data"))
    script = tmp_path / "podcast.txt"
    script.write_text("Welcome to the show.\n[SPEAKER0] Thanks for having me.\n[SPEAKER1] Hello!\n")
    result = CliRunner().invoke(
        main, ["dialog", str(script), "-o", str(tmp_path / "podcast.opus"),
               "--voice", "SPEAKER1=soft_female", "--timing", str(tmp_path / "t.json")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    timings = json.loads((tmp_path / "t.json").read_text())
    assert [t["voice"] for t in timings] == ["joe", "warm_female", "soft_female"]
    assert decode_audio(tmp_path / "podcast.opus").duration == pytest.approx(
        timings[-1]["end_ms"] / 1000, abs=0.1
    )
    bad = CliRunner().invoke(main, ["dialog", str(script), "-o", "x.mp3", "--voice", "oops"])
    assert bad.exit_code != 0 and "NAME=VOICE" in bad.output
    bed = tmp_path / "bed.wav"
    bed.write_bytes(wav_bytes(sine(220, 1.0, 22050), 22050))
    with_music = CliRunner().invoke(
        main, ["dialog", str(script), "-o", str(tmp_path / "bed.wav.out.wav"), "--music", str(bed)]
    )
    assert with_music.exit_code == 0, with_music.output
    assert decode_audio(tmp_path / "bed.wav.out.wav").duration == pytest.approx(
        timings[-1]["end_ms"] / 1000 + 3, abs=0.1
    )  # the bed's 3 s fade-out after the last word


def test_a_dialogue_form_has_its_music_bed_under_the_turns_and_after(server_url):
    turns = [{"speaker": "Host", "text": "Welcome to the show."},
             {"speaker": "Guest", "text": "Glad to be here."}]  # fmt: skip
    body = {"turns": turns, "response_format": "wav"}
    plain = httpx.post(f"{server_url}/v1/audio/dialogue", json=body, timeout=60)
    files = {"music": ("bed.wav", wav_bytes(sine(220, 1.5, 22050), 22050), "audio/wav")}
    form = {"dialogue": json.dumps(body), "music_level_db": "-24", "music_fade_out": "2"}
    mixed = httpx.post(f"{server_url}/v1/audio/dialogue", files=files, data=form, timeout=60)
    assert mixed.status_code == 200, mixed.text
    speech, music = decode_audio(plain.content), decode_audio(mixed.content)
    assert music.duration == pytest.approx(speech.duration + 2, abs=0.05)  # the fade-out
    # After the last word: the bed's tone, at its level as it starts to fade.
    tail = music.samples[len(speech.samples) : len(speech.samples) + 11025]
    assert dominant_frequency(tail, 22050) == pytest.approx(220, abs=5)
    assert 20 * np.log10(rms(tail)) == pytest.approx(-24 - 3, abs=4)  # at level, fading out
    timing = httpx.get(server_url + mixed.headers["x-timing-url"]).json()
    assert [turn["speaker"] for turn in timing["turns"]] == ["Host", "Guest"]


@pytest.mark.parametrize(
    ("form", "music", "param"),
    [
        ({"music_level_db": "-20"}, None, "dialogue"),
        ({"dialogue": "{}", "voice": "joe"}, None, "voice"),
        ({"dialogue": '{"turns": []}'}, None, "turns"),
        ({"dialogue": '{"turns": [{"text": "Hi."}]}', "music_duck_db": "-6"}, None,
         "music_duck_db"),  # settings without a file
        ({"dialogue": '{"turns": [{"text": "Hi."}]}'}, b"not audio", "music"),
    ],
)  # fmt: skip
def test_bad_dialogue_forms_name_the_field(server_url, form, music, param):
    parts = {name: (None, value) for name, value in form.items()}  # text fields, as multipart
    if music is not None:
        parts["music"] = ("bed.wav", music, "audio/wav")
    response = httpx.post(f"{server_url}/v1/audio/dialogue", files=parts, timeout=30)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
