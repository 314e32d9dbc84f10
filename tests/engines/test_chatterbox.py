"""The Chatterbox engine on a tiny random checkpoint of the real classes (CPU, offline), its
torchaudio stand-in against Kaldi's own fbank, and candidates judged by the real Whisper."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import kaldi_native_fbank as knf
import numpy as np
import pytest
import torch

from tests.engines.conftest import load_chatterbox
from voxserve.audio import StreamResampler
from voxserve.audio.transcribe import WHISPER_SAMPLE_RATE, Transcriber
from voxserve.config import load_settings
from voxserve.engines.base import Engine, SynthesisOptions
from voxserve.engines.chatterbox import ChatterboxEngine
from voxserve.engines.chatterbox.candidates import (
    choose,
    judge,
    shorter_pieces,
    word_error_rate,
)
from voxserve.engines.chatterbox.loading import S3GEN_PARTS
from voxserve.engines.chatterbox.random_model import build_checkpoint
from voxserve.engines.chatterbox.settings import ChatterboxOptions, ChatterboxSettings
from voxserve.engines.higgs.torchaudio_compat import resample
from voxserve.engines.piper import PiperEngine
from voxserve.engines.registry import EngineRegistry
from voxserve.errors import EngineUnavailableError, InvalidRequestError
from voxserve.request import Sampling

RATE = 24000
SAMPLES_PER_FRAME = 480
"""24 kHz audio per 20 ms mel frame."""
TEXT = "The birds sing at dawn."


def variant(engine: ChatterboxEngine, **settings) -> ChatterboxEngine:
    """An engine of other ``settings`` on ``engine``'s loaded model (loading takes seconds)."""
    other = ChatterboxEngine({**engine.settings.model_dump(), **settings})
    other._model = engine._loaded()
    return other


def speak(engine: ChatterboxEngine, text: str = TEXT, **options) -> np.ndarray:
    chunks = [c.samples for c in engine.synthesize(text, SynthesisOptions("chatterbox", **options))]
    return np.concatenate(chunks)


@pytest.fixture(scope="session")
def transcriber() -> Transcriber:
    return Transcriber(ChatterboxSettings().whisper_model)  # the judge: Whisper base, bundled


@pytest.fixture(scope="session")
def piper() -> PiperEngine:
    engine = PiperEngine()
    engine.load()
    return engine


def says(engine: Engine, text: str, voice: str = "joe") -> np.ndarray:
    """``text`` spoken by a real engine (Piper's joe by default), at Chatterbox's rate."""
    chunks = [c for c in engine.synthesize(text, SynthesisOptions(voice))]
    samples = np.concatenate([c.samples for c in chunks])
    return StreamResampler(chunks[0].sample_rate, RATE).process(samples, last=True)


def heard(transcriber: Transcriber, samples: np.ndarray) -> str:
    at_16k = StreamResampler(RATE, WHISPER_SAMPLE_RATE).process(samples, last=True)
    return transcriber.transcribe_samples(at_16k)


# The torchaudio stand-in's parts


def test_fbank_matches_kaldis_own():
    from voxserve.engines.chatterbox.torchaudio_parts import fbank

    rng = np.random.default_rng(5)
    time = np.arange(16000) / 16000
    wave = 0.3 * np.sin(2 * np.pi * 220 * time) + 0.05 * rng.standard_normal(16000)
    options = knf.FbankOptions()
    options.frame_opts.dither = 0.0
    options.frame_opts.samp_freq = 16000
    options.mel_opts.num_bins = 80
    kaldi = knf.OnlineFbank(options)
    kaldi.accept_waveform(16000, wave.tolist())
    kaldi.input_finished()
    expected = np.stack([kaldi.get_frame(index) for index in range(kaldi.num_frames_ready)])
    ours = fbank(torch.tensor(wave, dtype=torch.float32)[None], num_mel_bins=80).numpy()
    assert ours.shape == expected.shape == (98, 80)  # 25 ms frames every 10 ms, edges snipped
    np.testing.assert_allclose(ours, expected, atol=2e-3)


def test_resample_transform_is_the_function_and_spectrograms_invert():
    from voxserve.engines.chatterbox.torchaudio_parts import (
        InverseSpectrogram,
        Resample,
        Spectrogram,
    )

    wave = torch.sin(torch.arange(4800) * 0.05)[None]
    assert torch.equal(Resample(24000, 16000)(wave), resample(wave, 24000, 16000))
    assert Resample(24000, 16000)(wave).shape == (1, 3200)
    spectrum = Spectrogram(n_fft=512, hop_length=128, power=None)(wave)
    assert spectrum.is_complex() and spectrum.shape == (1, 257, 4800 // 128 + 1)
    back = InverseSpectrogram(n_fft=512, hop_length=128)(spectrum, length=4800)
    torch.testing.assert_close(back, wave, atol=1e-5, rtol=0)
    power = Spectrogram(n_fft=512, hop_length=128)(wave)
    torch.testing.assert_close(power, spectrum.abs() ** 2)


def test_the_watermarker_imports_beside_this_stack(chatterbox_engine: ChatterboxEngine):
    import perth

    assert perth.PerthImplicitWatermarker is not None  # not silently None (pkg_resources)
    assert "torchaudio.compliance.kaldi" in sys.modules


# Settings and options


def test_settings_come_from_voxserve_variables_and_bad_ones_are_refused(tmp_path: Path):
    environ = {
        "HOME": str(tmp_path),
        "VOXSERVE_ENGINES__CHATTERBOX__CFG_WEIGHT": "0.3",
        "VOXSERVE_ENGINES__CHATTERBOX__WATERMARK": "false",
        "VOXSERVE_ENGINES__CHATTERBOX__CANDIDATES": "3",
    }
    settings = EngineRegistry(load_settings(environ=environ)).get("chatterbox").settings
    assert isinstance(settings, ChatterboxSettings)
    assert settings.cfg_weight == 0.3 and settings.watermark is False and settings.candidates == 3
    assert settings.exaggeration == 0.5 and settings.model_path == "ResembleAI/chatterbox"
    with pytest.raises(EngineUnavailableError, match="engines.chatterbox.exaggeration"):
        ChatterboxEngine({"exaggeration": 5})


def test_engine_options_are_checked_and_name_the_field():
    with pytest.raises(InvalidRequestError) as refused:
        ChatterboxEngine.options_from({"exaggeration": 3.0})
    assert refused.value.param == "engine_options.exaggeration"
    with pytest.raises(InvalidRequestError) as refused:
        ChatterboxEngine.options_from({"emotion": 1})
    assert refused.value.param == "engine_options.emotion"


def test_no_checkpoint_is_an_error_saying_where_it_goes(tmp_path: Path):
    engine = ChatterboxEngine({"model_path": str(tmp_path), "device": "cpu"})
    with pytest.raises(EngineUnavailableError, match="lacks ve.safetensors.*model_path"):
        engine.load()


def test_exaggeration_cfg_weight_and_temperature_reach_the_model(chatterbox_engine):
    t3 = chatterbox_engine._loaded().t3
    exaggerations, rows = [], []
    hooks = [
        t3.cond_enc.emotion_adv_fc.register_forward_hook(
            lambda module, args, output: exaggerations.append(float(args[0].flatten()[0]))
        ),
        t3.tfmr.register_forward_pre_hook(
            lambda module, args, kwargs: rows.append(kwargs["inputs_embeds"].shape[0]),
            with_kwargs=True,
        ),
    ]
    try:
        plain = speak(chatterbox_engine)
        assert exaggerations == [0.5] and set(rows) == {2}  # the settings: guided, two rows
        exaggerations.clear(), rows.clear()
        unguided = ChatterboxOptions(exaggeration=1.5, cfg_weight=0.0)
        assert len(speak(chatterbox_engine, engine_options=unguided))
        assert exaggerations == [1.5] and set(rows) == {1}  # upstream crashes at cfg_weight 0
    finally:
        for hook in hooks:
            hook.remove()
    assert np.array_equal(plain, speak(chatterbox_engine))  # the seed setting: repeatable
    cooler = speak(chatterbox_engine, engine_options=ChatterboxOptions(temperature=0.3))
    assert len(cooler) and not np.array_equal(cooler, plain)
    # The request's sampling takes precedence over engine_options' temperature.
    both = ChatterboxOptions(temperature=1.5)
    request = speak(chatterbox_engine, sampling=Sampling(temperature=0.3), engine_options=both)
    assert np.array_equal(request, cooler)


def test_top_k_is_refused_naming_it(chatterbox_engine):
    with pytest.raises(InvalidRequestError) as refused:
        speak(chatterbox_engine, sampling=Sampling(top_k=5))
    assert refused.value.param == "sampling.top_k"


def test_a_clone_is_made_once_per_clip_and_a_long_clip_is_refused(
    chatterbox_engine, reference_wav: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    cloned = speak(chatterbox_engine, reference_audio=str(reference_wav))
    assert len(cloned) and not np.array_equal(cloned, speak(chatterbox_engine))
    made: list[str] = []
    make = chatterbox_engine._conditionals
    monkeypatch.setattr(
        chatterbox_engine, "_conditionals", lambda path: made.append(path) or make(path)
    )
    assert np.array_equal(cloned, speak(chatterbox_engine, reference_audio=str(reference_wav)))
    assert made == []  # not made again
    copy = tmp_path / "copy.wav"
    copy.write_bytes(reference_wav.read_bytes())
    speak(chatterbox_engine, reference_audio=str(copy))
    assert made == [str(copy)]  # another file: made once
    short = variant(chatterbox_engine, max_reference_seconds=1)
    with pytest.raises(InvalidRequestError, match="at most 1 s") as refused:
        speak(short, reference_audio=str(reference_wav))
    assert refused.value.param == "voice"


# Streaming


def streams_every_frame_once(engine: ChatterboxEngine) -> None:
    """Audio comes while tokens are still generated, each mel frame's 20 ms exactly once, and
    no click at a join."""
    seen_at: list[int] = []
    chunks = []
    for chunk in engine.synthesize(TEXT, SynthesisOptions("chatterbox")):
        seen_at.append(engine.stats.tokens)
        chunks.append(chunk.samples)
    tokens = engine.stats.tokens
    assert len(chunks) >= 3 and seen_at[0] < tokens / 2  # the first came early
    assert seen_at == sorted(seen_at) and seen_at[-2] < tokens
    audio = np.concatenate(chunks)
    # No gap and no doubled samples at the joins (S3Gen makes two frames a token, less one where
    # the reference's own frames are odd).
    reference = engine._loaded().default_voice.gen
    odd = reference["prompt_feat"].shape[1] - 2 * reference["prompt_token"].shape[1]
    assert len(audio) == (2 * tokens - odd) * SAMPLES_PER_FRAME
    # Joins crossfaded: no click, the step across each no larger than the clip's usual steps.
    steps = np.abs(np.diff(audio))
    joins = np.cumsum([len(chunk) for chunk in chunks])[:-1]
    assert all(steps[join - 1] <= np.percentile(steps, 99) for join in joins)


def test_audio_streams_while_tokens_are_still_generated(chatterbox_engine):
    streams_every_frame_once(variant(chatterbox_engine, max_new_tokens=40))


def test_the_published_size_s3gen_streams_the_same_way(tmp_path_factory):
    # S3Gen at its real size (264M random parameters: flow encoder, estimator, HiFT-GAN), with
    # the tiny T3: the shapes and caches the real weights meet. A decode takes seconds here.
    path = build_checkpoint(tmp_path_factory.mktemp("chatterbox-s3gen"), size="full-s3gen")
    assert not (path / S3GEN_PARTS).exists()
    engine = load_chatterbox(path, max_new_tokens=18)
    try:
        s3gen = engine._loaded().s3gen
        assert sum(p.numel() for p in s3gen.parameters()) > 250e6
        streams_every_frame_once(engine)
    finally:
        engine.unload()


def test_the_watermark_is_on_streamed_audio_and_can_be_turned_off(chatterbox_engine):
    marked_engine = variant(chatterbox_engine, max_new_tokens=30, watermark=True)
    plain_engine = variant(chatterbox_engine, max_new_tokens=30)
    marked, plain = speak(marked_engine), speak(plain_engine)
    assert len(marked) == len(plain) and not np.array_equal(marked, plain)
    detector = marked_engine._loaded().watermarker
    assert detector.get_watermark(marked, RATE).mean() > 0.9
    assert detector.get_watermark(plain, RATE).mean() < 0.1


def test_a_closed_stream_stops_generating(chatterbox_engine):
    engine = variant(chatterbox_engine, max_new_tokens=60)
    with contextlib.closing(engine.synthesize(TEXT, SynthesisOptions("chatterbox"))) as chunks:
        next(chunks)
    stopped_at = engine.stats.tokens
    assert stopped_at < 20  # the first chunk after 6 tokens, not the cap of 60


# Candidates checked by Whisper


def test_word_error_rate_counts_words_not_punctuation_or_case():
    assert word_error_rate("Hello, world!", "hello world") == 0.0
    assert word_error_rate("the cat sat", "the cat sat down") == pytest.approx(1 / 3)
    assert word_error_rate("the cat sat", "a dog") == 1.0
    assert word_error_rate("", "") == 0.0
    assert shorter_pieces("One here. Two there.", 5) == ["One here.", "Two there."]
    assert shorter_pieces("a b", 40) == ["a b"]


JUDGED_TEXTS = [
    "The river runs down to the sea.",
    "Please close the window before you leave.",
    "My brother bought three books on Friday.",
]
NEAR_MISSES = [  # one or two words changed: what a sampling model's slip sounds like
    "The river runs up to the tree.",
    "Please close the door before you leave.",
    "My mother bought three boats on Friday.",
]


@pytest.fixture(scope="session")
def mixed_takes(piper, kokoro_engine) -> list[dict[str, list[np.ndarray]]]:
    """For each judged text: right takes (Piper's joe and Kokoro's jm_kumo saying it), near
    misses and wrong texts (another sentence), all real speech at Whisper's rate."""

    def both(text: str) -> list[np.ndarray]:
        return [says(piper, text), says(kokoro_engine, text, "jm_kumo")]

    return [
        {
            "right": both(text),
            "near": both(near),
            "wrong": both(JUDGED_TEXTS[(index + 1) % len(JUDGED_TEXTS)]),
        }
        for index, (text, near) in enumerate(zip(JUDGED_TEXTS, NEAR_MISSES, strict=True))
    ]


def test_whisper_picks_a_right_take_whenever_one_exists(mixed_takes, transcriber):
    max_wer = ChatterboxSettings().candidate_max_wer
    for text, takes in zip(JUDGED_TEXTS, mixed_takes, strict=True):
        right, near, wrong = takes["right"], takes["near"], takes["wrong"]
        # A right take wherever it stands among slips and other sentences, from either engine.
        for mix in ([*wrong, *near, right[0]], [right[1], *near, *wrong], [near[0], right[0]]):
            chosen = choose(text, mix, lambda take: heard(transcriber, take), max_wer)
            assert chosen is not None and any(chosen.take is good for good in right), (
                text,
                chosen and chosen.transcript,
            )
        # No right take and nothing close: none is chosen (the engine tries shorter pieces).
        assert choose(text, wrong, lambda take: heard(transcriber, take), max_wer) is None


def test_the_judge_ranks_a_slip_between_the_right_text_and_another(piper, transcriber):
    text = JUDGED_TEXTS[0]
    takes = [says(piper, said) for said in (JUDGED_TEXTS[1], NEAR_MISSES[0], text)]
    judged = judge(text, takes, lambda take: heard(transcriber, take))
    assert [id(item.take) for item in judged] == [id(take) for take in reversed(takes)]
    assert judged[0].wer <= 0.2 and 0.2 < judged[1].wer < 0.8 and judged[2].wer >= 0.8


def test_with_no_good_take_shorter_pieces_then_the_fallback_engine_speak(
    chatterbox_engine, transcriber
):
    # The random model: Whisper never hears the text in its takes.
    engine = variant(chatterbox_engine, candidates=2, fallback_engine="piper")
    text = "The river runs down to the sea. The birds sing at dawn."
    audio = np.concatenate([c.samples for c in engine.synthesize(text, SynthesisOptions("x"))])
    stats = engine.stats
    assert (stats.takes, stats.retries, stats.fallbacks) == (2 + 2 * 2, 1, 2)
    assert word_error_rate(text, heard(transcriber, audio)) <= 0.2  # Piper's, as the fallback


def test_capabilities_are_s3gens_rate_cloning_and_one_call_at_a_time(chatterbox_engine):
    capabilities = chatterbox_engine.capabilities
    assert capabilities.sample_rate == RATE and capabilities.cloning and capabilities.streaming
    assert capabilities.concurrency == 1 and capabilities.speed_range == (1.0, 1.0)
    assert capabilities.languages == ("en",) and capabilities.sampling
