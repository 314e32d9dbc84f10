"""Chatterbox's checkpoint loaded: T3, S3Gen, the voice encoder, the tokenizer, the built-in
voice's conditionals, and the Perth watermarker; and a reference clip turned into conditionals.

Upstream's ``ChatterboxTTS.from_local`` builds T3 from the fixed 520M Llama configuration and
S3Gen at its fixed size. A checkpoint directory here may also hold (``random_model`` writes
them, for tests):

- ``t3_llama.json``: a Llama configuration registered in Chatterbox's table of them
  (``LLAMA_CONFIGS``) under its name, from our code, before T3 is built with it;
- ``s3gen.json``: the arguments of S3Gen's flow encoder, flow estimator and HiFT-GAN, built
  smaller in their place.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from voxserve.errors import EngineUnavailableError

SAMPLE_RATE = 24000
"""S3Gen's output rate (``S3GEN_SR``)."""
FILES = ("ve.safetensors", "t3_cfg.safetensors", "s3gen.safetensors", "tokenizer.json", "conds.pt")
T3_LLAMA = "t3_llama.json"
"""An optional ``{"name": ..., "config": {...}}``: the Llama T3 is built as."""
S3GEN_PARTS = "s3gen.json"
"""An optional ``{"encoder": {...}, "estimator": {...}, "vocoder": {...}}``: S3Gen's parts'
arguments."""
ENCODER_SECONDS = 6
"""Of the reference, what T3 hears as its speech prompt (upstream's ``ENC_COND_LEN``)."""
DECODER_SECONDS = 10
"""Of the reference, what S3Gen continues from (upstream's ``DEC_COND_LEN``)."""


@dataclass
class Model:
    t3: Any
    s3gen: Any
    voice_encoder: Any
    tokenizer: Any
    default_voice: Any
    """The checkpoint's built-in voice (``conds.pt``): ``Conditionals``."""
    watermarker: Any
    device: str


def load_model(settings: Any, device: str) -> Model:
    """The checkpoint ``settings.model_path`` names, on ``device``."""
    from voxserve.engines.chatterbox import compat

    compat.install()
    import perth
    import torch
    from chatterbox.models.t3 import T3
    from chatterbox.models.t3.llama_configs import LLAMA_CONFIGS
    from chatterbox.models.t3.modules.t3_config import T3Config
    from chatterbox.models.tokenizers import EnTokenizer
    from chatterbox.models.voice_encoder import VoiceEncoder
    from chatterbox.tts import Conditionals
    from safetensors.torch import load_file

    if perth.PerthImplicitWatermarker is None:  # resemble-perth hides why: say it
        raise EngineUnavailableError(
            "resemble-perth's watermarker did not import (it needs torchaudio and pkg_resources)",
            code="engine_not_installed",
        )
    directory = checkpoint_directory(settings)
    hp = T3Config.english_only()
    if (llama := directory / T3_LLAMA).is_file():
        described = json.loads(llama.read_text())
        LLAMA_CONFIGS[described["name"]] = described["config"]
        hp.llama_config_name = described["name"]
    voice_encoder = VoiceEncoder()
    voice_encoder.load_state_dict(load_file(directory / "ve.safetensors"))
    t3 = T3(hp)
    state = load_file(directory / "t3_cfg.safetensors")
    t3.load_state_dict(state["model"][0] if "model" in state else state)
    parts = directory / S3GEN_PARTS
    s3gen = build_s3gen(json.loads(parts.read_text()) if parts.is_file() else None)
    s3gen.load_state_dict(load_file(directory / "s3gen.safetensors"), strict=False)
    default_voice = Conditionals.load(directory / "conds.pt", map_location=torch.device("cpu"))
    return Model(
        t3=t3.to(device).eval(),
        s3gen=s3gen.to(device).eval(),
        voice_encoder=voice_encoder.to(device).eval(),
        tokenizer=EnTokenizer(str(directory / "tokenizer.json")),
        default_voice=default_voice.to(device),
        watermarker=perth.PerthImplicitWatermarker(device=device),
        device=device,
    )


def build_s3gen(parts: dict[str, dict[str, Any]] | None = None) -> Any:
    """S3Gen, its flow encoder, flow estimator and vocoder built with ``parts``' arguments when
    given (a checkpoint's ``s3gen.json``)."""
    from chatterbox.models.s3gen import S3Gen
    from chatterbox.models.s3gen.decoder import ConditionalDecoder
    from chatterbox.models.s3gen.f0_predictor import ConvRNNF0Predictor
    from chatterbox.models.s3gen.hifigan import HiFTGenerator
    from chatterbox.models.s3gen.transformer.upsample_encoder import UpsampleConformerEncoder

    s3gen = S3Gen()
    if parts:
        s3gen.flow.encoder = UpsampleConformerEncoder(**parts["encoder"])
        s3gen.flow.decoder.estimator = ConditionalDecoder(**parts["estimator"])
        s3gen.mel2wav = HiFTGenerator(**parts["vocoder"], f0_predictor=ConvRNNF0Predictor())
    return s3gen


def checkpoint_directory(settings: Any) -> Path:
    """A local directory holding ``FILES``, or the Hub repository's snapshot: from the Hugging
    Face cache, or fetched when ``allow_downloads`` is on."""
    local = Path(settings.model_path).expanduser()
    if local.is_dir():
        missing = [name for name in FILES if not (local / name).is_file()]
        if missing:
            raise _not_found(settings, f"{local} lacks {', '.join(missing)}")
        return local
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HFValidationError

    try:
        paths = [
            hf_hub_download(
                settings.model_path, name, local_files_only=not settings.allow_downloads
            )
            for name in FILES
        ]
    except (OSError, HFValidationError, ValueError) as error:  # not cached, offline, no repo
        raise _not_found(settings, str(error)) from error
    return Path(paths[0]).parent


def _not_found(settings: Any, reason: str) -> EngineUnavailableError:
    default = type(settings).model_fields["model_path"].default
    return EngineUnavailableError(
        f"Chatterbox checkpoint not found at {settings.model_path!r} ({reason}). Download "
        f"{default} (`hf download {default} --local-dir DIR`) and set [engines.chatterbox] "
        "model_path (VOXSERVE_ENGINES__CHATTERBOX__MODEL_PATH) to that directory, or turn "
        "allow_downloads on to fetch it on first use.",
        code="model_not_found",
    )


def conditionals(model: Model, samples: np.ndarray) -> Any:
    """What Chatterbox speaks a voice with, from a clip of it (float32 at 24 kHz), as upstream's
    ``prepare_conditionals`` makes it from a file (its exaggeration is set per call:
    ``with_exaggeration``)."""
    import librosa
    import torch
    from chatterbox.models.t3.modules.cond_enc import T3Cond
    from chatterbox.tts import Conditionals

    s3_rate = 16000
    at_16k = librosa.resample(samples, orig_sr=SAMPLE_RATE, target_sr=s3_rate)
    with torch.inference_mode():
        gen = model.s3gen.embed_ref(
            samples[: DECODER_SECONDS * SAMPLE_RATE], SAMPLE_RATE, device=model.device
        )
        prompt_tokens, _ = model.s3gen.tokenizer.forward(
            [at_16k[: ENCODER_SECONDS * s3_rate]], max_len=model.t3.hp.speech_cond_prompt_len
        )
        speaker = model.voice_encoder.embeds_from_wavs([at_16k], sample_rate=s3_rate)
    t3 = T3Cond(
        speaker_emb=torch.from_numpy(speaker).mean(axis=0, keepdim=True),
        cond_prompt_speech_tokens=torch.atleast_2d(prompt_tokens),
        emotion_adv=0.5 * torch.ones(1, 1, 1),
    ).to(device=model.device)
    return Conditionals(t3, gen)


def with_exaggeration(voice: Any, exaggeration: float) -> Any:
    """``voice``'s T3 conditioning with another exaggeration (a copy: voices are shared)."""
    import torch

    emotion = exaggeration * torch.ones(1, 1, 1, device=voice.t3.speaker_emb.device)
    return replace(voice.t3, emotion_adv=emotion, cond_prompt_speech_emb=None)
