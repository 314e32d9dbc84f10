"""SSML and pause tags through the real server (httpx and the openai SDK), the CLI and the
library."""

from __future__ import annotations

import httpx
import pytest
from click.testing import CliRunner
from openai import BadRequestError, OpenAI

from tests.conftest import running
from voxserve.api import synthesize_to_file
from voxserve.audio import decode_audio
from voxserve.cli import main
from voxserve.request import SpeechRequest
from voxserve.server.app import create_app

BREAK = "<speak>Hello there. <break time='{}'/> General Kenobi.</speak>"


@pytest.fixture(scope="module")
def url(piper_synthesizer):
    with running(create_app(synthesizer=piper_synthesizer)) as url:
        yield url


def seconds(url: str, **body) -> float:
    response = httpx.post(f"{url}/v1/audio/speech", json={"response_format": "wav", **body},
                          timeout=60)  # fmt: skip
    assert response.status_code == 200, response.text
    return decode_audio(response.content).duration


def test_the_openai_sdk_sends_ssml_as_its_input(url):
    client = OpenAI(base_url=f"{url}/v1", api_key="unused")
    audio = {}
    for pause in ("2s", "0ms"):
        speech = client.audio.speech.create(
            model="tts-1", voice="alloy", input=BREAK.format(pause), response_format="wav"
        )
        audio[pause] = decode_audio(speech.content).duration
    assert audio["2s"] - audio["0ms"] == pytest.approx(2.0, abs=0.01)
    with pytest.raises(BadRequestError) as caught:
        client.audio.speech.create(model="tts-1", voice="alloy", input="<speak><b>x</b></speak>")
    assert caught.value.body["param"] == "input"
    assert (
        caught.value.body["message"] == "SSML line 1, column 8: unknown or unsupported element <b>"
    )


def test_input_format_and_pause_tags_over_http(url):
    text = "Hello there. [pause:2s] General Kenobi."
    tagged, untagged = seconds(url, input=text), seconds(url, input=text.replace("[pause:2s] ", ""))
    assert tagged - untagged == pytest.approx(2.0 - 0.2, abs=0.01)  # instead of the sentence pause
    # Forced to text, a document is read as plain text: its tags are markup, taken out.
    assert seconds(url, input=BREAK.format("2s"), input_format="text") < tagged - 1.5
    response = httpx.post(f"{url}/v1/audio/speech", json={"input": "Hi [pause:20s] there"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "input"


def test_a_malformed_document_is_a_400_that_says_where(url):
    response = httpx.post(
        f"{url}/v1/audio/speech", json={"input": "<speak>\n<p>one\n<s>two</p></speak>"}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["param"], error["message"]) == ("input", "SSML line 3, column 9: mismatched tag")


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.setenv("VOXSERVE_DATA_DIR", str(tmp_path / "data"))
    runner = CliRunner()
    return lambda *arguments: runner.invoke(main, list(arguments), catch_exceptions=False)


def test_the_cli_speaks_ssml_by_detection_or_by_flag(run, tmp_path):
    paths = {name: tmp_path / f"{name}.wav" for name in ("detected", "flagged", "plain")}
    assert run("say", BREAK.format("2s"), "-o", str(paths["detected"])).exit_code == 0
    flagged = run("say", "  " + BREAK.format("2s"), "--ssml", "-o", str(paths["flagged"]))
    assert flagged.exit_code == 0
    assert run("say", BREAK.format("2s"), "--plain", "-o", str(paths["plain"])).exit_code == 0
    duration = {name: decode_audio(path).duration for name, path in paths.items()}
    assert duration["detected"] == pytest.approx(duration["flagged"], abs=0.01)
    assert duration["detected"] - duration["plain"] > 1.5
    bad = run("say", "<speak><emphasis>no</emphasis></speak>", "-o", str(tmp_path / "x.wav"))
    assert bad.exit_code == 1
    assert "engine 'piper' cannot speak <emphasis>" in bad.output


def test_the_library_speaks_ssml_given_as_a_string_or_a_request(piper_synthesizer, tmp_path):
    detected = synthesize_to_file(
        BREAK.format("2s"), tmp_path / "a.wav", synthesizer=piper_synthesizer
    )
    forced = synthesize_to_file(
        SpeechRequest(input=BREAK.format("2s"), input_format="text"), tmp_path / "b.wav",
        synthesizer=piper_synthesizer,
    )  # fmt: skip
    assert decode_audio(detected).duration - decode_audio(forced).duration > 1.5
