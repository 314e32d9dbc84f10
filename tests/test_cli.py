"""The voxserve command, run in-process with click's runner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from voxserve.audio import decode_audio
from voxserve.cli import main


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("VOXSERVE_DATA_DIR", str(tmp_path / "data"))
    runner = CliRunner()

    def invoke(*arguments: str, stdin: str | None = None):
        return runner.invoke(main, list(arguments), input=stdin, catch_exceptions=False)

    return invoke


def test_say_writes_the_format_its_extension_names(run, tmp_path: Path):
    output = tmp_path / "hello.flac"
    result = run("say", "Hello from the command line.", "-o", str(output))
    assert result.exit_code == 0, result.output
    decoded = decode_audio(output)
    assert decoded.sample_rate == 22050
    assert 1.0 < decoded.duration < 5.0
    assert not list(tmp_path.glob(".*part"))  # written atomically, nothing left over


def test_say_reads_standard_input_and_takes_voice_and_speed(run, tmp_path: Path):
    slow, fast = tmp_path / "slow.wav", tmp_path / "fast.wav"
    text = "Reading this from standard input."
    assert (
        run("say", "-", "-o", str(slow), "--voice", "alloy", "--speed", "0.8", stdin=text).exit_code
        == 0
    )
    assert run("say", "-", "-o", str(fast), "--speed", "1.6", stdin=text).exit_code == 0
    assert decode_audio(fast).duration < decode_audio(slow).duration * 0.7


def test_say_writes_when_each_word_is_spoken(run, tmp_path: Path):
    output, timestamps = tmp_path / "hello.wav", tmp_path / "hello.json"
    text = "Hello from the command line."
    result = run("say", text, "-o", str(output), "--timestamps", str(timestamps))
    assert result.exit_code == 0, result.output
    words = json.loads(timestamps.read_text())
    assert [word["word"] for word in words] == text.split()
    assert all(a["end"] <= b["start"] for a, b in zip(words, words[1:], strict=False))
    assert 0 <= words[0]["start"] and words[-1]["end"] <= decode_audio(output).duration
    result = run("say", text, "-o", "-", "-f", "wav", "--timestamps", str(timestamps))
    assert result.exit_code != 0 and "--timestamps" in result.output


def test_say_rejects_what_it_cannot_do(run, tmp_path: Path):
    result = run("say", "Hi.", "-o", str(tmp_path / "x.doc"))
    assert result.exit_code != 0 and "cannot tell the audio format" in result.output
    result = run("say", "Hi.", "-o", str(tmp_path / "x.wav"), "--voice", "nobody")
    assert result.exit_code != 0 and "unknown voice 'nobody'" in result.output
    result = run("say", "Hi.", "-o", str(tmp_path / "x.wav"), "--speed", "9")
    assert result.exit_code != 0 and "speed" in result.output
    assert not (tmp_path / "x.wav").exists()


def test_engines_lists_piper_with_its_capabilities(run):
    result = run("engines")
    assert result.exit_code == 0
    assert "piper" in result.output and "yes, default" in result.output and "22050" in result.output


def test_voices_lists_joe_and_its_aliases(run):
    result = run("voices")
    assert result.exit_code == 0
    assert "joe (default)" in result.output and "alloy" in result.output


def test_chats_undelete_brings_back_a_deleted_conversation(run, tmp_path: Path):
    from voxserve.chat.characters import USER, Character, ChatTurn
    from voxserve.chat.history import ConversationStore, new_id

    conversation_id = new_id()
    (tmp_path / "data").mkdir()
    store = ConversationStore(f"sqlite:///{tmp_path / 'data' / 'chat.db'}")
    ava = Character(name="Ava", voice="warm_female", persona="A guide.")
    store.add_turn(conversation_id, ChatTurn(USER, "When does it open?"), characters=[ava],
                   policy="round_robin")  # fmt: skip
    store.delete(conversation_id)

    result = run("chats", "undelete", conversation_id)
    assert result.exit_code == 0, result.output
    assert "When does it open?" in result.output
    assert store.get(conversation_id).turns == [ChatTurn(USER, "When does it open?")]
    again = run("chats", "undelete", conversation_id)
    assert again.exit_code == 1 and "no deleted conversation" in again.output
    store.close()
