"""The blocking client is made from the async one: CI fails when one side is edited alone."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "unasync.py"


def load_script():
    spec = importlib.util.spec_from_file_location("unasync", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_sync_client_is_what_the_script_makes_of_the_async_one():
    checked = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_an_edit_to_one_side_only_is_reported_with_its_diff(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    unasync = load_script()
    target = tmp_path / "_sync.py"
    target.write_text(unasync.TARGET.read_text().replace("def speech(", "def speak(", 1))
    monkeypatch.setattr(unasync, "TARGET", target)
    monkeypatch.setattr(sys, "argv", ["unasync.py", "--check"])
    assert unasync.main() == 1
    diff = capsys.readouterr().out
    assert "-    def speak(" in diff and "+    def speech(" in diff
    monkeypatch.setattr(sys, "argv", ["unasync.py"])
    assert unasync.main() == 0  # written anew: now it matches
    monkeypatch.setattr(sys, "argv", ["unasync.py", "--check"])
    assert unasync.main() == 0


def test_async_code_becomes_blocking_code():
    source = '''"""The async side."""

from collections.abc import AsyncIterator

from voxserve.client._io_async import recv


class AsyncThing:
    async def __aenter__(self) -> AsyncThing:
        return self

    async def frames(self, ws) -> AsyncIterator[bytes]:
        async with self._http.stream("GET", "/") as response:
            await response.aread()
            async for data in response.aiter_bytes():
                yield data
        yield await recv(ws, 1.0)
        await self._audio.aclose()
        raise StopAsyncIteration
'''
    unasync = load_script()
    made = unasync.unasync(source)
    assert made.startswith("# Generated from _async.py by scripts/unasync.py: do not edit.")
    expected = """
from collections.abc import Iterator

from voxserve.client._io_sync import recv


class Thing:
    def __enter__(self) -> Thing:
        return self

    def frames(self, ws) -> Iterator[bytes]:
        with self._http.stream("GET", "/") as response:
            response.read()
            yield from response.iter_bytes()
        yield recv(ws, 1.0)
        self._audio.close()
        raise StopIteration
"""
    assert made == unasync.HEADER + unasync.DOCSTRING + expected  # its own docstring, then code


def test_code_nothing_converts_is_refused():
    source = '"""The async side."""\n\nimport asyncio\n\n\nasync def nap():\n    asyncio.sleep(1)\n'
    with pytest.raises(SystemExit, match="_async.py:3: nothing turns this into blocking code"):
        load_script().unasync(source)
