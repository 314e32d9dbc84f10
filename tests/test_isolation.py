"""The suite keeps out of the user's own files: every test's data lands in a temporary directory."""

from __future__ import annotations

import gc
import os
import pwd
from pathlib import Path

from tests.fakes import FakeEngine, make_synthesizer
from voxserve.config import Settings, load_settings

# From the password database, not HOME, which the session's isolated_home fixture moves.
REAL_HOME = Path(pwd.getpwuid(os.getuid()).pw_dir)
REAL_DATA_DIR = REAL_HOME / ".local" / "share" / "voxserve"
REAL_CONFIG_DIR = REAL_HOME / ".config" / "voxserve"


def test_a_fake_synthesizer_gets_a_data_directory_of_its_own():
    first, second = make_synthesizer(FakeEngine()), make_synthesizer(FakeEngine())
    path = first.settings.data_path
    assert not path.is_relative_to(REAL_DATA_DIR)
    assert path.is_dir() and path != second.settings.data_path
    del first
    gc.collect()
    assert not path.exists()  # removed with its synthesizer


def test_default_settings_resolve_into_the_sessions_temporary_home(isolated_home: Path):
    for settings in (Settings(), load_settings()):
        assert settings.data_path.is_relative_to(isolated_home)
        assert not settings.data_path.is_relative_to(REAL_DATA_DIR)
    assert not Path("~/.config/voxserve").expanduser().is_relative_to(REAL_CONFIG_DIR)
