"""The studio at / in headless Chromium against the real server: the playground speaks with
Piper and with a loopback engine (``openai_compatible`` pointed at a second voxserve) and
highlights the words it hears, a profile made from an uploaded clip is spoken with, a dialogue
renders with its lines highlighted, and nothing is wider than its container at 360 and 1280 px.

One server pair and one browser for the module; a failing test leaves a screenshot in its
temporary directory. Skipped when Chromium is missing.
"""

from __future__ import annotations

import io
import wave
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from playwright import sync_api as playwright_sync

from tests.audio.signals import sine, wav_bytes
from tests.conftest import running
from tests.e2e.test_web import CHROMIUM, LAUNCH_ARGS
from voxserve.config import Settings
from voxserve.server.app import create_app

if not CHROMIUM.exists():
    pytest.skip("Chromium is not installed", allow_module_level=True)

# Each element wider than its parent's content box, or reaching past its right edge, as
# "tag#id.class: by N px". Text overflow inside an element shows as scrollWidth > clientWidth.
OVERFLOWS = """() => {
  const found = [];
  for (const node of document.querySelectorAll("body *")) {
    if (!node.offsetParent && getComputedStyle(node).position !== "fixed") continue;
    const box = node.getBoundingClientRect();
    const parent = node.parentElement.getBoundingClientRect();
    const past = Math.round(Math.max(box.right - parent.right, parent.left - box.left));
    const scrolled = node.scrollWidth - node.clientWidth;
    const allowed = ["PRE", "TEXTAREA", "SELECT", "INPUT"].includes(node.tagName);
    if (past > 1 || (scrolled > 1 && !allowed && getComputedStyle(node).overflowX !== "hidden")) {
      const name = `${node.tagName.toLowerCase()}#${node.id}.${node.className}`;
      found.push(`${name}: ${Math.max(past, scrolled)} px`);
    }
  }
  const page = document.documentElement;
  if (page.scrollWidth > window.innerWidth) found.push("the page scrolls sideways");
  return found;
}"""


@pytest.fixture(scope="module")
def studio(piper_synthesizer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A voxserve whose engines include ``openai_compatible`` speaking to another voxserve."""
    with running(create_app(synthesizer=piper_synthesizer)) as upstream:
        engines = {
            "openai_compatible": {"base_url": f"{upstream}/v1", "model": "piper", "voices": ["joe"]}
        }
        settings = Settings(data_dir=tmp_path_factory.mktemp("studio"), engines=engines)
        with running(create_app(settings)) as url:
            yield url


@pytest.fixture(scope="module")
def browser():
    with playwright_sync.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser, studio, request, tmp_path: Path):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    opened.errors = []
    opened.on("pageerror", lambda error: opened.errors.append(str(error)))
    opened.goto(studio + "/")
    opened.evaluate("window.voxserveReady")
    failed_before = request.session.testsfailed
    yield opened
    if request.session.testsfailed > failed_before:
        opened.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
    context.close()


def speak(page, engine: str, voice: str, text: str) -> dict:
    page.select_option("#engine", engine)
    page.select_option("#voice", voice)
    page.fill("#input", text)
    page.click("#speak")
    page.wait_for_selector("#status:has-text('first audio')", timeout=30_000)
    assert page.locator("#errors li").count() == 0, page.inner_text("#errors")
    return page.evaluate("lastSpeech")


def test_piper_speaks_with_its_words_highlighted_as_heard(page) -> None:
    assert page.locator("a[href='/chat']").count() == 1
    spoken = speak(page, "piper", "joe", "The studio speaks every word of this sentence aloud.")
    words = [word["word"] for word in spoken["words"]]
    assert words[:2] == ["The", "studio"] and words[-1] == "aloud."
    assert spoken["samples"] > spoken["sampleRate"]  # over a second of speech, streamed
    assert page.locator("#spoken .word").count() == len(words)
    page.wait_for_selector("#spoken .word[data-heard]:last-child", timeout=15_000)
    heard = page.locator("#spoken .word[data-heard]").count()
    assert heard >= len(words) - 1  # followed to the end (a word can pass within one frame)
    assert 'voice="joe"' in page.text_content("#python-code")
    assert "/v1/audio/speech" in page.text_content("#curl-code")
    assert page.errors == []


def test_the_loopback_engine_speaks_and_shows_only_its_options(page) -> None:
    page.select_option("#engine", "openai_compatible")
    models = httpx.get(page.url + "v1/models").json()["data"]
    capabilities = next(m for m in models if m["id"] == "openai_compatible")["capabilities"]
    assert page.is_hidden("#instructions-field") is not capabilities["instructions"]
    assert page.is_hidden("#temperature-field") is not capabilities["sampling"]
    spoken = speak(page, "openai_compatible", "joe", "Spoken through another voxserve.")
    assert spoken["samples"] > spoken["sampleRate"] / 2
    with page.expect_download() as downloaded:
        page.click("#downloads [data-format=wav]")
    assert Path(downloaded.value.path()).read_bytes()[:4] == b"RIFF"
    assert page.errors == []


def test_a_profile_made_from_an_uploaded_clip_is_spoken_with(page, tmp_path: Path) -> None:
    clip = httpx.post(
        page.url + "v1/audio/speech",
        json={"input": "A clip of about three seconds, said clearly for the library.",
              "voice": "joe", "response_format": "wav"},
        timeout=60,
    ).content  # fmt: skip
    (tmp_path / "narrator.wav").write_bytes(clip)
    # One second from the middle of the speech: too short, and never silent (the first 44 ms
    # of a Piper clip can be its leading silence, which the server refuses for that instead).
    with wave.open(io.BytesIO(clip)) as spoken_clip:
        rate = spoken_clip.getframerate()
        samples = np.frombuffer(spoken_clip.readframes(spoken_clip.getnframes()), np.int16)
    middle = samples[len(samples) // 2 - rate // 2 :][:rate].astype(np.float32) / 32768
    (tmp_path / "tiny.wav").write_bytes(wav_bytes(middle, rate))
    page.click("[data-tab=library]")
    page.fill("#profile-name", "studio-narrator")
    page.fill("#profile-tags", "studio")
    page.select_option("#profile-voice", "warm_female")
    page.set_input_files("#profile-clip", str(tmp_path / "tiny.wav"))
    page.click("#profile-form button[type=submit]")
    refused = page.wait_for_selector("#profile-errors li.error")
    assert "record at least 3 s" in refused.inner_text()  # the server's own message
    page.set_input_files("#profile-clip", str(tmp_path / "narrator.wav"))
    page.click("#profile-form button[type=submit]")
    page.wait_for_selector("#profile-errors li.ok:has-text('studio-narrator')", timeout=30_000)
    page.fill("#voice-tag", "studio")
    page.dispatch_event("#voice-tag", "change")
    # The list shows every voice until the filtered answer arrives: wait for it to be applied.
    page.wait_for_function("document.querySelectorAll('#voice-list li').length === 1")
    assert page.locator("#voice-list li[data-voice=studio-narrator]").count() == 1
    page.click("#voice-list li[data-voice=studio-narrator] >> text=Try this voice")
    assert page.input_value("#voice") == "studio-narrator"
    spoken = speak(page, "piper", "studio-narrator", "Now in the profile's voice.")
    assert spoken["samples"] > 0
    assert page.errors == []


def test_a_dialogue_renders_with_its_lines_highlighted(page) -> None:
    page.click("[data-tab=dialogue]")
    page.click("#add-line")
    page.locator("#lines li").last.locator("input").fill("And a third line, moved to the top.")
    page.locator("#lines li").last.locator("text=↑").click()
    page.locator("#lines li").nth(1).locator("text=↑").click()
    first = page.locator("#lines li").first.locator("input").input_value()
    assert first.startswith("And a third line")
    page.click("#render-dialogue")
    page.wait_for_selector("#dialogue-status:has-text('3 turns')", timeout=30_000)
    turns = page.evaluate("dialogueTurns")
    assert [turn["speaker"] for turn in turns] == ["Ada", "Ada", "Ben"]
    assert all(a["end"] <= b["start"] for a, b in zip(turns, turns[1:], strict=False))
    page.wait_for_selector("#lines li:nth-child(3)[data-heard]", timeout=15_000)
    assert page.errors == []


def test_a_dialogue_with_a_music_bed_is_sent_as_a_form(page, tmp_path: Path) -> None:
    bed = tmp_path / "bed.wav"
    bed.write_bytes(wav_bytes(sine(220, 1.0, 22050), 22050))
    page.click("[data-tab=dialogue]")
    page.set_input_files("#dialogue-music", str(bed))
    with page.expect_response("**/v1/audio/dialogue") as answered:
        page.click("#render-dialogue")
    response = answered.value
    assert response.status == 200
    assert response.request.headers["content-type"].startswith("multipart/form-data")
    page.wait_for_selector("#dialogue-status:has-text('turns')", timeout=30_000)
    assert page.locator("#dialogue-errors li").count() == 0 and page.errors == []


def test_a_book_is_made_from_an_upload_followed_and_downloaded(page, tmp_path: Path) -> None:
    book = tmp_path / "book.md"
    book.write_text("# Arrival\n\nThe train came in.\n\n# Home\n\nThe door was open.\n")
    page.click("[data-tab=books]")
    page.set_input_files("#book-file", str(book))
    page.select_option("#book-voice", "joe")
    page.select_option("#book-format", "mp3")
    page.click("#start-book")
    done = page.wait_for_selector("#job-list li[data-status=done]", timeout=60_000)
    assert "2/2 pieces" in done.inner_text()
    assert done.query_selector("text=Arrival") and done.query_selector("text=Home")
    with page.expect_download() as downloaded:
        done.query_selector("text=Download mp3").click()
    path = downloaded.value.path()
    assert downloaded.value.suggested_filename == "book.mp3" and Path(path).stat().st_size > 1000
    assert page.locator("#job-errors li").count() == 0 and page.errors == []


@pytest.mark.parametrize("width", [360, 1280])
def test_nothing_is_wider_than_its_container(page, width: int) -> None:
    page.set_viewport_size({"width": width, "height": 900})
    for tab in ("playground", "library", "dialogue", "books"):
        page.click(f"[data-tab={tab}]")
        overflowing = page.evaluate(OVERFLOWS)
        assert overflowing == [], f"{tab}: {overflowing}"


def test_a_folder_import_reports_each_file_and_a_profile_is_deleted_when_confirmed(
    page, tmp_path: Path
) -> None:
    folder = tmp_path / "clips"
    folder.mkdir()
    clip = httpx.post(
        page.url + "v1/audio/speech",
        json={"input": "One clip of a folder, long enough to be a voice of its own.",
              "voice": "joe", "response_format": "wav"},
        timeout=60,
    ).content  # fmt: skip
    (folder / "folder-ada.wav").write_bytes(clip)
    (folder / "folder-tiny.wav").write_bytes(clip[:2000])
    page.click("[data-tab=library]")
    page.set_input_files("#folder-files", str(folder))
    page.wait_for_selector("#import-results li.error:has-text('folder-tiny.wav')", timeout=30_000)
    assert page.locator("#import-results li.ok:has-text('folder-ada.wav')").count() == 1
    item = page.wait_for_selector("#voice-list li[data-voice=folder-ada]")
    page.once("dialog", lambda dialog: dialog.accept())
    item.query_selector("text=Delete").click()
    page.wait_for_selector("#voice-list li[data-voice=folder-ada]", state="detached")
    assert httpx.get(page.url + "v1/audio/voices/folder-ada").status_code == 404
    assert page.errors == []
