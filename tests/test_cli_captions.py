"""``voxserve say --captions``: a captions file of the spoken words, its format from its name."""

from __future__ import annotations

import json
import re
from pathlib import Path

from click.testing import CliRunner

from tests.test_cli import run  # noqa: F401  (the fixture)
from voxserve.audio import decode_audio
from voxserve.cli import main

TEXT = "Captions make speech easy to follow. They show each word as it is heard."
CUE_TIMES = re.compile(r"(\d\d):(\d\d):(\d\d)\.(\d\d\d) --> (\d\d):(\d\d):(\d\d)\.(\d\d\d)")


def seconds(hours: str, minutes: str, whole: str, millis: str) -> float:
    return int(hours) * 3600 + int(minutes) * 60 + int(whole) + int(millis) / 1000


def test_say_writes_a_vtt_whose_cues_are_the_spoken_words(run, tmp_path: Path):  # noqa: F811
    output, captions = tmp_path / "speech.wav", tmp_path / "speech.vtt"
    result = run("say", TEXT, "-o", str(output), "--captions", str(captions))
    assert result.exit_code == 0, result.output
    vtt = captions.read_text()
    assert vtt.startswith("WEBVTT\n\n")
    cues = vtt.removeprefix("WEBVTT\n\n").strip().split("\n\n")
    times = [CUE_TIMES.fullmatch(cue.split("\n")[0]) for cue in cues]
    assert all(times)
    spans = [(seconds(*m.groups()[:4]), seconds(*m.groups()[4:])) for m in times]
    assert all(start <= end for start, end in spans)
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))
    assert spans[-1][1] <= decode_audio(output).duration + 0.001
    assert " ".join(" ".join(cue.split("\n")[1:]) for cue in cues) == TEXT
    assert [cue.split("\n")[-1][-1] for cue in cues] == [".", "."]  # a cue per sentence here
    assert not list(tmp_path.glob(".*part"))  # written atomically


def test_say_writes_json_captions_with_sentences(run, tmp_path: Path):  # noqa: F811
    captions = tmp_path / "speech.json"
    result = run("say", TEXT, "-o", str(tmp_path / "speech.mp3"), "--captions", str(captions))
    assert result.exit_code == 0, result.output
    document = json.loads(captions.read_text())
    assert [word["word"] for word in document["words"]] == TEXT.split()
    assert [s["text"] for s in document["sentences"]] == [
        "Captions make speech easy to follow.", "They show each word as it is heard.",
    ]  # fmt: skip


def test_a_bad_captions_extension_is_refused_before_any_audio(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("VOXSERVE_DATA_DIR", str(tmp_path / "data"))
    output = tmp_path / "speech.wav"
    result = CliRunner().invoke(
        main, ["say", TEXT, "-o", str(output), "--captions", str(tmp_path / "speech.txt")]
    )
    assert result.exit_code == 2  # a usage error
    assert "--captions" in result.output and ".vtt" in result.output
    assert not output.exists()
