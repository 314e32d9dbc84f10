"""Audio layer: float32 mono frames -> fades and resampling -> incremental encoding."""

from voxserve.audio.decode import decode_audio, decode_pcm16
from voxserve.audio.dsp import (
    StreamResampler,
    apply_fades,
    float_to_int16,
    float_to_pcm16,
    silence,
    trim_leading_silence,
)
from voxserve.audio.encode import AUDIO_FORMATS, AudioEncoder, create_encoder, format_for_path
from voxserve.audio.frames import AudioChunk
from voxserve.audio.wav import fix_wav_header

__all__ = [
    "AUDIO_FORMATS",
    "AudioChunk",
    "AudioEncoder",
    "StreamResampler",
    "apply_fades",
    "create_encoder",
    "format_for_path",
    "decode_audio",
    "decode_pcm16",
    "fix_wav_header",
    "float_to_int16",
    "float_to_pcm16",
    "silence",
    "trim_leading_silence",
]
