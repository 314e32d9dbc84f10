"""The ``voxserve`` command: serve, wyoming, say, engines, voices."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from pydantic import ValidationError
from rich import box
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Column, Table

from voxserve.config import ConfigError, Settings, load_settings
from voxserve.download_progress import report_with, terminal_bar
from voxserve.errors import VoxserveError

if TYPE_CHECKING:  # the synthesizer loads PyAV and the engines: not for `voxserve --help`
    from voxserve.synthesis.synthesizer import Progress as SynthesisProgress

PROGRESS_MIN_SEGMENTS = 4  # below this, a bar would flash by
WYOMING_PORT = 10200  # Home Assistant's Wyoming add-ons' (Piper's) port

stderr = Console(stderr=True)


def _settings(context: click.Context, **overrides: Any) -> Settings:
    try:
        return load_settings(context.obj["config"], overrides)
    except ConfigError as error:
        raise click.ClickException(str(error)) from error


@click.group()
@click.version_option(package_name="voxserve")
@click.option(
    "--config",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="VOXSERVE_CONFIG",
    help="TOML configuration file [default: ~/.config/voxserve/config.toml].",
)
@click.pass_context
def main(context: click.Context, config: Path | None) -> None:
    """voxserve: a self-hosted speech server."""
    context.obj = {"config": config}
    # Engines fetch their model files as they load, deep below any command: a bar for each.
    report_with(lambda name: terminal_bar(name, stderr))


@main.command()
@click.option("--host", help="Address to listen on [default: 127.0.0.1].")
@click.option("--port", type=int, help="Port to listen on [default: 8880].")
@click.option("--preload/--no-preload", default=None, help="Load the default engine at start.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]))
@click.option(
    "--insecure",
    is_flag=True,
    default=None,
    help="Serve a non-loopback address without API keys (auth.insecure): anyone can use it.",
)
@click.pass_context
def serve(context: click.Context, insecure: bool | None, **overrides: Any) -> None:
    """Start the HTTP server."""
    import logging

    from voxserve.server.app import create_app
    from voxserve.server.serving import server

    settings = _settings(context, **overrides, auth={"insecure": True} if insecure else None)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(levelname)s:%(name)s: %(message)s"
    )
    stderr.print(
        f"voxserve on http://{settings.host}:{settings.port}  (default voice: "
        f"{settings.default_voice}, engine: {settings.default_engine})"
    )
    if settings.wyoming.port is not None:
        stderr.print(f"Wyoming on tcp://{settings.wyoming.host}:{settings.wyoming.port}")
    try:
        app = create_app(settings)
    except ConfigError as error:
        raise click.ClickException(str(error)) from error
    serving = server(app, settings)
    with contextlib.suppress(KeyboardInterrupt):
        serving.run()
    if not serving.started:  # uvicorn has logged why (the port is taken...)
        sys.exit(3)


@main.command("wyoming")
@click.option("--host", help="Address to listen on [default: wyoming.host, 127.0.0.1].")
@click.option("--port", type=int, help="Port to listen on [default: wyoming.port, else 10200].")
@click.option("--zeroconf/--no-zeroconf", default=None, help="Announce it on the local network.")
@click.option(
    "--allow-unauthenticated",
    is_flag=True,
    default=None,
    help="Listen on a non-loopback address (Wyoming carries no key): anyone can use it.",
)
@click.option("--preload/--no-preload", default=None, help="Load the default engine at start.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]))
@click.pass_context
def wyoming(
    context: click.Context, preload: bool | None, log_level: str | None, **options: Any
) -> None:
    """Serve Home Assistant's Wyoming protocol alone, without HTTP (docs: README)."""
    import logging

    from voxserve.server.wyoming import serve_alone

    given = {name: value for name, value in options.items() if value is not None}
    if _settings(context, wyoming=given).wyoming.port is None:
        given["port"] = WYOMING_PORT
    settings = _settings(context, wyoming=given, preload=preload, log_level=log_level)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(levelname)s:%(name)s: %(message)s"
    )
    stderr.print(f"voxserve's Wyoming on tcp://{settings.wyoming.host}:{settings.wyoming.port}")
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve_alone(settings))
    except ConfigError as error:
        raise click.ClickException(str(error)) from error


@main.group()
def keys() -> None:
    """API keys for auth.api_keys or auth.api_keys_file."""


@keys.command("new")
@click.option(
    "--scope", type=click.Choice(["speech", "admin"]), default="speech", show_default=True
)
def new_key(scope: str) -> None:
    """Print a new random key, as a line for auth.api_keys_file."""
    import secrets

    key = secrets.token_urlsafe(32)  # URL-safe: fits a header, a query and a subprotocol
    click.echo(f"{key} admin" if scope == "admin" else key)


@main.command()
@click.argument("text")
@click.option(
    "-o",
    "--output",
    help="Output file (format from its extension), or - for stdout. Needed unless --estimate.",
)
@click.option("-v", "--voice", help="Voice id or alias [default: the configured default].")
@click.option("-e", "--engine", "model", help="Engine to use [default: the voice's engine].")
@click.option("-s", "--speed", type=float, default=1.0, show_default=True)
@click.option(
    "-f",
    "--format",
    "response_format",
    help="Audio format when the extension does not say (needed for -).",
)
@click.option("--sample-rate", type=int, help="Resample to this rate.")
@click.option(
    "--no-normalize", is_flag=True, help="Speak the text as written (no number/date/URL reading)."
)
@click.option("--ssml/--plain", default=None,
              help="TEXT is SSML / plain text [default: SSML if it starts <speak].")  # fmt: skip
@click.option("--timestamps", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write when each word is spoken, as JSON.")  # fmt: skip
@click.option("--captions", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write captions of the words: .srt, .vtt or .json.")  # fmt: skip
@click.option("--estimate", "only_estimate", is_flag=True,
              help="Print the characters, segments and cost it would take; make no audio.")
@click.pass_context
def say(
    context: click.Context, text: str, output: str | None, only_estimate: bool, **options: Any
) -> None:
    """Speak TEXT (or - to read standard input) into a file."""
    from voxserve.api import estimate, synthesize_to_file
    from voxserve.audio import format_for_path
    from voxserve.request import SpeechRequest
    from voxserve.synthesis.synthesizer import Synthesizer

    if text == "-":
        text = sys.stdin.read()
    options["normalize"] = not options.pop("no_normalize")
    options["input_format"] = {True: "ssml", False: "text"}.get(options.pop("ssml"))
    timestamps = options.pop("timestamps")
    captions = options.pop("captions")
    if output is None and not only_estimate:
        raise click.UsageError("Missing option '-o' / '--output' (or --estimate).")
    if timestamps and output == "-":
        raise click.BadParameter("needs an output file, not -", param_hint="--timestamps")
    if captions and output == "-":
        raise click.BadParameter("needs an output file, not -", param_hint="--captions")
    if captions:
        _check_captions_path(captions)
    if options["response_format"] is None and output is not None:
        options["response_format"] = (format_for_path(output) if output != "-" else None) or "mp3"
    try:
        request = SpeechRequest(input=text, **{k: v for k, v in options.items() if v is not None})
        synthesizer = Synthesizer(_settings(context))
        if only_estimate:
            _print_estimate(estimate(request, synthesizer=synthesizer))
            return
        if output == "-":
            asyncio.run(_write_stdout(synthesizer, request))
            return
        prepared_total = len(synthesizer.prepare(request).segments)
        with _progress_bar(prepared_total) as on_progress:
            path = synthesize_to_file(
                request, output, synthesizer=synthesizer, progress=on_progress,
                timestamps=timestamps, captions=captions,
            )  # fmt: skip
    except ValidationError as error:
        first = error.errors()[0]
        raise click.BadParameter(first["msg"], param_hint=str(first["loc"][0])) from error
    except VoxserveError as error:
        raise click.ClickException(error.message) from error
    also = [str(extra) for extra in (timestamps, captions) if extra]
    stderr.print(f"wrote {path}" + "".join(f" and {extra}" for extra in also))


def _check_captions_path(path: Path) -> None:
    """A bad captions extension is a usage error before any audio is made."""
    from voxserve.audio.captions import caption_format_for_path

    try:
        caption_format_for_path(path)
    except VoxserveError as error:
        raise click.BadParameter(error.message, param_hint="--captions") from error


def music_options(command: Callable) -> Callable:
    """``--music``, ``--music-level`` and ``--music-duck``: a music bed under the speech."""
    options = [
        click.option("--music", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="A music bed under the speech, ducked while it plays."),
        click.option("--music-level", type=float, default=-20.0, show_default=True,
                     help="The music's level (dBFS) with no speech."),
        click.option("--music-duck", type=float, default=-12.0, show_default=True,
                     help="How far (dB) it dips under speech."),
    ]  # fmt: skip
    for option in reversed(options):
        command = option(command)
    return command


def _music_bed(music: Path | None, level: float, duck: float) -> tuple[bytes, Any] | None:
    """The music file and its bed's settings (a setting out of range: ValidationError)."""
    from voxserve.audio.music_bed import MusicBed

    return None if music is None else (music.read_bytes(), MusicBed(level_db=level, duck_db=duck))


@main.command()
@click.argument("document", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The book: .m4b, .mp4 or .mp3, with chapter markers.")  # fmt: skip
@click.option("-v", "--voice", help="A voice id, alias or profile [default: the default voice].")
@click.option("-m", "--model", help="The engine [default: the default engine].")
@click.option("--speed", type=float)
@click.option("--language", help="IETF tag, e.g. en-US.")
@click.option("--document-format", type=click.Choice(["text", "markdown", "epub", "script"]),
              help="[default: from the file name]")  # fmt: skip
@click.option("--chapter-pattern", help="A regex: plain-text lines that start a chapter.")
@click.option("--loudness", type=float, default=-16.0, show_default=True,
              help="Target LUFS (ITU-R BS.1770); --no-loudness keeps the level.")  # fmt: skip
@click.option("--no-loudness", is_flag=True)
@click.option("--chapters-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Also write each chapter as a file of its own here.")  # fmt: skip
@music_options
@click.pass_context
def book(
    context: click.Context, document: Path, output: Path, document_format: str | None,
    chapter_pattern: str | None, loudness: float, no_loudness: bool, chapters_dir: Path | None,
    music: Path | None, music_level: float, music_duck: float, **options: Any,
) -> None:  # fmt: skip
    """Speak DOCUMENT (text, Markdown or EPUB) into an audiobook, a chapter marker per chapter.
    Stopped (Ctrl-C, a crash), the same command again goes on where it stopped."""
    from voxserve.longform.audiobook import render_book, work_directory
    from voxserve.longform.book_file import BOOK_FORMATS
    from voxserve.longform.chapters import read_document
    from voxserve.request import SpeechOptions
    from voxserve.synthesis.synthesizer import Synthesizer

    file_format = output.suffix.lower().lstrip(".")
    if file_format not in BOOK_FORMATS:
        raise click.BadParameter(f"should end in .{', .'.join(BOOK_FORMATS)}", param_hint="-o")
    settings = _settings(context)
    source = document.read_bytes()
    with _errors():
        read = read_document(source, document.name, document_format=document_format,
                             chapter_pattern=chapter_pattern)  # fmt: skip
        speech = SpeechOptions(**{key: value for key, value in options.items() if value})
        bed = _music_bed(music, music_level, music_duck)
        fields = {**speech.model_dump(), "chapter_pattern": chapter_pattern}
        work = work_directory(settings.data_path / "books", source, fields)
        if made := len(list(work.glob("*.wav"))):
            stderr.print(f"going on from where it stopped: {made} made already")
        columns = (TextColumn("speaking"), BarColumn(),
                   TextColumn("{task.completed}/{task.total} pieces"),
                   TextColumn("chapter {task.fields[chapter]}/" + str(len(read.chapters))),
                   TextColumn("{task.fields[audio]:.0f}s"), TimeRemainingColumn())  # fmt: skip
        with Progress(*columns, console=stderr, disable=not stderr.is_terminal) as bar:
            task = bar.add_task("speaking", total=None, chapter=1, audio=0.0)

            def advance(done: Any) -> None:
                bar.update(task, completed=done.pieces_done, total=done.pieces_total,
                           chapter=done.chapters_done + 1, audio=done.audio_seconds)  # fmt: skip

            starts = asyncio.run(render_book(
                Synthesizer(settings), read, speech, output, work, file_format=file_format,
                loudness=None if no_loudness else loudness, chapters_dir=chapters_dir,
                music=bed, progress=advance,
            ))  # fmt: skip
    stderr.print(f"wrote {output}: {len(starts)} chapters")


@main.command()
@click.argument("script", type=click.File("r", encoding="utf-8"))
@click.option("-o", "--output", required=True, help="Output file; the format from its extension.")
@click.option("-v", "--voice", "mapping", multiple=True, metavar="NAME=VOICE",
              help="A speaker's voice (repeatable); others get distinct built-ins.")  # fmt: skip
@click.option("--narrator", help="Voice for lines without a speaker [default: the default voice].")
@click.option("--pause", type=float, default=0.4, show_default=True, help="Seconds between turns.")
@click.option("--delimiter", help="Between speaker and text [default: |||].")
@click.option("--timing", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write each turn's speaker, voice, start and end as JSON.")  # fmt: skip
@music_options
@click.pass_context
def dialog(
    context: click.Context, script: Any, output: str, mapping: tuple[str, ...],
    narrator: str | None, pause: float, delimiter: str | None, timing: Path | None,
    music: Path | None, music_level: float, music_duck: float,
) -> None:  # fmt: skip
    """Render a dialogue SCRIPT (one turn per line: Speaker|||text, or [SPEAKER0] text; - for
    standard input) into one audio file."""
    import json

    from voxserve.api import dialogue_to_file
    from voxserve.request import DialogueRequest
    from voxserve.synthesis.synthesizer import Synthesizer
    from voxserve.text.dialogue import parse_dialogue

    settings = _settings(context)
    voices = {}
    for pair in mapping:
        name, separator, voice = pair.partition("=")
        if not separator or not name.strip() or not voice.strip():
            raise click.BadParameter(f"{pair!r} is not NAME=VOICE", param_hint="--voice")
        voices[name.strip()] = voice.strip()
    try:
        turns = parse_dialogue(script.read(), delimiter or settings.dialogue_delimiter)
    except ValueError as error:
        raise click.ClickException(f"{script.name}: {error}") from error
    if not turns:
        raise click.ClickException(f"{script.name} has no lines to speak")
    try:
        request = DialogueRequest(
            turns=[{"speaker": turn.speaker, "text": turn.text} for turn in turns],
            voices=voices, voice=narrator, pause_between_turns=pause,
        )  # fmt: skip
        bed = _music_bed(music, music_level, music_duck)
        with _progress_bar(len(turns), unit="turns") as on_progress:
            timings = dialogue_to_file(
                request, output, synthesizer=Synthesizer(settings), progress=on_progress,
                music=bed,
            )  # fmt: skip
    except ValidationError as error:
        first = error.errors()[0]
        raise click.BadParameter(first["msg"], param_hint=str(first["loc"][0])) from error
    except VoxserveError as error:
        raise click.ClickException(error.message) from error
    if timing:
        timing.write_text(json.dumps([t.to_dict() for t in timings], indent=2))
    speakers = sorted({f"{t.speaker or 'narrator'}={t.voice}" for t in timings})
    stderr.print(
        f"wrote {output}: {len(timings)} turns, {timings[-1].end:.1f} s ({', '.join(speakers)})"
    )


def _print_estimate(share: Any) -> None:
    table = Table("engine", "characters", "segments", "units", "cost (USD)", box=box.SIMPLE_HEAD)
    cost = share.cost
    units = f"{cost.units} {cost.unit}" if cost else "-"
    table.add_row(
        share.engine, str(share.characters), str(share.segments), units,
        f"{cost.usd:.6f}" if cost else "free",
    )  # fmt: skip
    Console().print(table)


async def _write_stdout(synthesizer: Any, request: Any) -> None:
    from voxserve.streaming import encode_chunks

    prepared = synthesizer.prepare(request)
    chunks = synthesizer.stream(prepared)
    async for data in encode_chunks(chunks, request.response_format, prepared.sample_rate):
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()


@contextlib.contextmanager
def _progress_bar(
    total: int, unit: str = "segments"
) -> Iterator[Callable[[SynthesisProgress], None] | None]:
    """A rich progress bar fed by the synthesizer's progress callback (none for short texts)."""
    if total < PROGRESS_MIN_SEGMENTS or not stderr.is_terminal:
        yield None
        return
    columns = (
        TextColumn("speaking"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} " + unit),
        TextColumn("{task.fields[audio]:.1f}s audio"),
        TextColumn("eta {task.fields[eta]}"),
    )
    with Progress(*columns, console=stderr) as bar:
        task = bar.add_task("speaking", total=total, audio=0.0, eta="-")

        def update(done: SynthesisProgress) -> None:
            eta = f"{done.eta_seconds:.0f}s" if done.eta_seconds is not None else "-"
            bar.update(task, completed=done.segments_done, audio=done.audio_seconds, eta=eta)

        yield update


@main.command()
@click.pass_context
def engines(context: click.Context) -> None:
    """List engines: installed or not, what installs them, what they can do."""
    from voxserve.engines.registry import ENGINE_CLASSES, engine_class

    settings = _settings(context)
    table = Table(
        "engine", "installed", "can", "languages", "rate", "max chars", "speed", box=box.SIMPLE_HEAD
    )
    table.columns[1].no_wrap = True  # "yes, default" in one piece; languages wrap instead
    for name in sorted(ENGINE_CLASSES, key=lambda n: (n != settings.default_engine, n)):
        cls = engine_class(name)
        if not cls.is_installed():
            table.add_row(name, f"no: pip install 'voxserve[{cls.extra}]'", *[""] * 5)
            continue
        caps = cls(settings.engine_settings(name), data_dir=settings.data_path).capabilities
        features = [
            label
            for label, flag in (
                ("stream", caps.streaming),
                ("clone", caps.cloning),
                ("instruct", caps.instructions),
                ("sample", caps.sampling),
            )
            if flag
        ]
        table.add_row(
            name,
            "yes, default" if name == settings.default_engine else "yes",
            ", ".join(features) or "-",
            ", ".join(caps.languages),
            str(caps.sample_rate),
            str(caps.max_input_chars),
            f"{caps.speed_range[0]:g}-{caps.speed_range[1]:g}",
        )
    Console().print(table)


@main.group(invoke_without_command=True)
@click.pass_context
def voices(context: click.Context) -> None:
    """Voices: list them (the default), and manage your voice profiles."""
    if context.invoked_subcommand is None:
        context.invoke(voices_list)


@voices.command("list")
@click.option("--tag", help="Only profiles with this tag.")
@click.pass_context
def voices_list(context: click.Context, tag: str | None = None) -> None:
    """Engine voices and built-ins (with the aliases pointing at them), then your profiles."""
    settings = _settings(context)
    library = _library(settings)
    # The voice is what a user copies: never wrapped, the descriptions give way first.
    table = Table(Column("voice", no_wrap=True), "kind", "engine", "language", "aliases / tags",
                  "description", box=box.SIMPLE_HEAD)  # fmt: skip
    aliases: dict[str, list[str]] = {}
    for alias, target in settings.voice_aliases.items():
        aliases.setdefault(target, []).append(alias)
    if tag is None:
        for voice in _registry(settings).all_voices():
            default = " (default)" if voice.id == settings.default_voice else ""
            table.add_row(voice.id + default, "built-in", voice.engine, voice.language,
                          ", ".join(aliases.get(voice.id, [])), voice.description)  # fmt: skip
    for profile in library.store.list(tag):
        kind = "profile, cloned" if profile.has_reference else "profile"
        engine = profile.engine or settings.default_engine
        tags = ", ".join(profile.tags)
        table.add_row(profile.id, kind, engine, profile.language or "", tags, profile.description)
    Console().print(table)


def _profile_options(command: Callable) -> Callable:
    """The profile fields, shared by create and update."""
    options = [
        click.option("--audio", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="Reference clip: WAV, MP3, FLAC, OGG or M4A, 3-30 s of speech."),
        click.option("--display", "display_name", help="Display name."),
        click.option("--description"),
        click.option("--tags", help="Comma-separated tags."),
        click.option("--transcript", help="What the clip says (else it is transcribed)."),
        click.option("--language", help="IETF tag, e.g. en-US."),
        click.option("--engine", help="Preferred engine."),
        click.option("--voice", help="Engine voice to use where cloning is not possible."),
        click.option("--speaker-description", help='e.g. "feminine, warm, conversational".'),
        click.option("--scene-prompt"),
        click.option("--speed", type=float, help="Default speed."),
    ]  # fmt: skip
    for option in reversed(options):
        command = option(command)
    return command


@voices.command("create")
@click.option("--name", required=True, help="The profile id: lowercase letters, digits, - and _.")
@_profile_options
@click.pass_context
def voices_create(context: click.Context, name: str, audio: Path | None, **fields: Any) -> None:
    """Create a voice profile, optionally from a reference clip."""
    library = _library(_settings(context))
    with _errors():
        profile = library.create({"id": name, **_fields(fields)}, _read(audio))
    stderr.print(
        f"created voice {profile.id}" + (f': "{profile.transcript}"' if profile.transcript else "")
    )


@voices.command("show")
@click.argument("name")
@click.pass_context
def voices_show(context: click.Context, name: str) -> None:
    """A profile's fields, as JSON."""
    with _errors():
        profile = _library(_settings(context)).store.get(name)
    click.echo(profile.model_dump_json(indent=2))


@voices.command("update")
@click.argument("name")
@_profile_options
@click.pass_context
def voices_update(context: click.Context, name: str, audio: Path | None, **fields: Any) -> None:
    """Change a profile's fields or its reference clip (a backup is taken first)."""
    with _errors():
        profile = _library(_settings(context)).update(name, _fields(fields), _read(audio))
    stderr.print(f"updated voice {profile.id}")


@voices.command("delete")
@click.argument("name")
@click.pass_context
def voices_delete(context: click.Context, name: str) -> None:
    """Delete a profile (a backup is taken first: `voxserve voices restore` brings it back)."""
    with _errors():
        _library(_settings(context)).store.delete(name)
    stderr.print(f"deleted voice {name}")


@voices.command("export")
@click.option("--profile", "name", required=True)
@click.option("--output", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.pass_context
def voices_export(context: click.Context, name: str, output: Path) -> None:
    """Write a self-contained package (NAME.zip) of a profile."""
    with _errors():
        path = _library(_settings(context)).store.export(name, output)
    stderr.print(f"wrote {path}")


@voices.command("import")
@click.option(
    "--package", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option("--replace", is_flag=True, help="Replace a profile of the same name.")
@click.pass_context
def voices_import(context: click.Context, package: Path, replace: bool) -> None:
    """Add a profile from a package made by export."""
    with _errors():
        profile = _library(_settings(context)).import_package(package, replace=replace)
    stderr.print(f"imported voice {profile.id}")


@voices.command("import-folder")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--tags", help="Comma-separated tags for every profile made.")
@click.option("--engine", help="Preferred engine of every profile made.")
@click.option("--language", help="IETF tag of every profile made, e.g. en-US.")
@click.option("--replace", is_flag=True, help="Replace profiles of the same names.")
@click.pass_context
def voices_import_folder(
    context: click.Context, directory: Path, replace: bool, **fields: Any
) -> None:
    """A profile from every clip in DIRECTORY, named after its file; its transcript from the
    same-named .txt, else heard by Whisper. Bad clips are reported and skipped. Exits 1 when
    any clip failed."""
    from voxserve.voices.folder_import import folder_files, import_clips

    library = _library(_settings(context))
    files = folder_files(directory)
    columns = (TextColumn("importing"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TextColumn("{task.fields[file]}"))  # fmt: skip
    with Progress(*columns, console=stderr, disable=not stderr.is_terminal) as bar:
        task = bar.add_task("importing", total=None, file="")

        def advance(done: int, total: int, name: str) -> None:
            bar.update(task, completed=done, total=total, file=name)

        with _errors():
            results = import_clips(library, files, fields=_fields(fields), replace=replace,
                                   progress=advance)  # fmt: skip
    table = Table(Column("file", no_wrap=True), "outcome", "voice", "why", box=box.SIMPLE_HEAD)
    for result in results:
        table.add_row(result.file, result.outcome, result.voice or "", result.reason or "")
    Console().print(table)
    counts = {outcome: sum(r.outcome == outcome for r in results)
              for outcome in ("created", "replaced", "skipped", "failed")}  # fmt: skip
    stderr.print(", ".join(f"{count} {outcome}" for outcome, count in counts.items()))
    if counts["failed"]:
        raise SystemExit(1)


@voices.command("backup")
@click.pass_context
def voices_backup(context: click.Context) -> None:
    """Back up every profile and its audio."""
    with _errors():
        path = _library(_settings(context)).store.backup()
    stderr.print(f"wrote {path}")


@voices.command("restore")
@click.option("--from", "backup", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A backup file [default: the latest].")  # fmt: skip
@click.pass_context
def voices_restore(context: click.Context, backup: Path | None) -> None:
    """Restore profiles from a backup (the current ones are backed up first)."""
    with _errors():
        source = _library(_settings(context)).store.restore(backup)
    stderr.print(f"restored from {source}")


@main.group()
def chats() -> None:
    """Saved voice-chat conversations."""


@chats.command("undelete")
@click.argument("conversation_id")
@click.pass_context
def chats_undelete(context: click.Context, conversation_id: str) -> None:
    """Bring back a deleted conversation (the latest 100 deleted are kept)."""
    from voxserve.server.ws_chat import conversation_store

    settings = _settings(context)
    store = conversation_store(settings)
    if store is None:
        raise click.ClickException("chat.keep_history is off: there are no saved conversations")
    with _errors():
        try:
            conversation = store.undelete(conversation_id)
        finally:
            store.close()
    stderr.print(f"brought back {conversation.id} ({conversation.title!r})")


def _registry(settings: Settings) -> Any:
    from voxserve.engines.registry import EngineRegistry

    return EngineRegistry(settings)


def _library(settings: Settings) -> Any:
    from voxserve.voices.library import VoiceLibrary
    from voxserve.voices.store import VoiceStore

    registry = _registry(settings)
    reserved = {voice.id for voice in registry.all_voices()} | set(settings.voice_aliases)
    store = VoiceStore(settings.data_path / "voices")
    return VoiceLibrary(store, settings, reserved, registry=registry)


def _fields(options: dict[str, Any]) -> dict[str, Any]:
    fields = {key: value for key, value in options.items() if value is not None}
    if "tags" in fields:
        fields["tags"] = [tag.strip() for tag in fields["tags"].split(",") if tag.strip()]
    if "speed" in fields:
        fields["defaults"] = {"speed": fields.pop("speed")}
    return fields


def _read(path: Path | None) -> bytes | None:
    return path.read_bytes() if path else None


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except ValidationError as error:  # an option out of its range
        first = error.errors()[0]
        raise click.BadParameter(first["msg"], param_hint=str(first["loc"][0])) from error
    except VoxserveError as error:
        raise click.ClickException(error.message) from error
