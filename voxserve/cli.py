"""The ``voxserve`` command: serve, say, engines, voices."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError
from rich import box
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from voxserve.config import ConfigError, Settings, load_settings
from voxserve.errors import VoxserveError
from voxserve.synthesis.synthesizer import Progress as SynthesisProgress

PROGRESS_MIN_SEGMENTS = 4  # below this, a bar would flash by

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


@main.command()
@click.option("--host", help="Address to listen on [default: 127.0.0.1].")
@click.option("--port", type=int, help="Port to listen on [default: 8880].")
@click.option("--preload/--no-preload", default=None, help="Load the default engine at start.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]))
@click.pass_context
def serve(context: click.Context, **overrides: Any) -> None:
    """Start the HTTP server."""
    import logging

    import uvicorn

    from voxserve.server.app import create_app

    settings = _settings(context, **overrides)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(levelname)s:%(name)s: %(message)s"
    )
    stderr.print(
        f"voxserve on http://{settings.host}:{settings.port}  (default voice: "
        f"{settings.default_voice}, engine: {settings.default_engine})"
    )
    uvicorn.run(
        create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level
    )


@main.command()
@click.argument("text")
@click.option(
    "-o",
    "--output",
    required=True,
    help="Output file (format from its extension), or - for stdout.",
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
@click.pass_context
def say(context: click.Context, text: str, output: str, **options: Any) -> None:
    """Speak TEXT (or - to read standard input) into a file."""
    from voxserve.api import format_for_path, synthesize_to_file
    from voxserve.request import SpeechRequest
    from voxserve.synthesis.synthesizer import Synthesizer

    if text == "-":
        text = sys.stdin.read()
    options["normalize"] = not options.pop("no_normalize")
    if options["response_format"] is None:
        options["response_format"] = (format_for_path(output) if output != "-" else None) or "mp3"
    try:
        request = SpeechRequest(input=text, **{k: v for k, v in options.items() if v is not None})
        synthesizer = Synthesizer(_settings(context))
        if output == "-":
            asyncio.run(_write_stdout(synthesizer, request))
            return
        prepared_total = len(synthesizer.prepare(request).segments)
        with _progress_bar(prepared_total) as on_progress:
            path = synthesize_to_file(
                request, output, synthesizer=synthesizer, progress=on_progress
            )
    except ValidationError as error:
        first = error.errors()[0]
        raise click.BadParameter(first["msg"], param_hint=str(first["loc"][0])) from error
    except VoxserveError as error:
        raise click.ClickException(error.message) from error
    stderr.print(f"wrote {path}")


async def _write_stdout(synthesizer: Any, request: Any) -> None:
    async for data in synthesizer.stream_encoded(request):
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()


@contextlib.contextmanager
def _progress_bar(total: int) -> Iterator[Callable[[SynthesisProgress], None] | None]:
    """A rich progress bar fed by the synthesizer's progress callback (none for short texts)."""
    if total < PROGRESS_MIN_SEGMENTS or not stderr.is_terminal:
        yield None
        return
    columns = (
        TextColumn("speaking"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} segments"),
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
    for name in sorted(ENGINE_CLASSES):
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


@main.command()
@click.pass_context
def voices(context: click.Context) -> None:
    """List voices of every installed engine, and the aliases that point at them."""
    from voxserve.engines.registry import EngineRegistry

    settings = _settings(context)
    registry = EngineRegistry(settings)
    table = Table("voice", "engine", "language", "aliases", "description", box=box.SIMPLE_HEAD)
    aliases: dict[str, list[str]] = {}
    for alias, target in settings.voice_aliases.items():
        aliases.setdefault(target, []).append(alias)
    for voice in registry.all_voices():
        default = " (default)" if voice.id == settings.default_voice else ""
        table.add_row(
            voice.id + default,
            voice.engine,
            voice.language,
            ", ".join(aliases.get(voice.id, [])),
            voice.description,
        )
    Console().print(table)
