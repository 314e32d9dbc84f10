"""Randomly initialised Higgs Audio V2 checkpoints, saved in the layout the engine loads.

For tests and benchmarks where the real weights are absent (nothing is downloaded): the real
architecture, at the published size or a tiny one, with a byte-level text tokenizer that holds the
special tokens Higgs uses, and the published checkpoint's chat template. Random weights speak noise,
but every code path (prompts, generation, the delay pattern, the codec) runs for real.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from voxserve.engines.higgs import torchaudio_compat
from voxserve.engines.higgs.prompts import CHAT_TEMPLATE

SPECIAL_TOKENS = (
    "<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
    "<|eot_id|>", "<|scene_desc_start|>", "<|scene_desc_end|>", "<|audio_bos|>", "<|audio_eos|>",
    "<|audio_out_bos|>", "<|AUDIO|>", "<|AUDIO_OUT|>", "<|reserved_special_token_6|>", "<|pad|>",
)  # fmt: skip

# bosonai/higgs-audio-v2-generation-3B-base's config.json (a Llama-3.2-3B backbone with a second,
# audio FFN per layer) and bosonai/higgs-audio-v2-tokenizer's: 8 codebooks of 1024 codes at 25 Hz.
FULL_MODEL = {
    "vocab_size": 128256, "hidden_size": 3072, "intermediate_size": 8192, "num_hidden_layers": 28,
    "num_attention_heads": 24, "num_key_value_heads": 8, "head_dim": 128,
    "max_position_embeddings": 2048, "num_codebooks": 8,
}  # fmt: skip
FULL_CODEC = {
    "target_bandwidths": [0.5, 1, 1.5, 2], "codebook_size": 1024, "codebook_dim": 64,
    "acoustic_model_config": {
        "encoder_hidden_size": 64, "decoder_hidden_size": 1024, "hidden_size": 256,
        "downsampling_ratios": [8, 5, 4, 2, 3], "upsampling_ratios": [8, 5, 4, 2, 3],
    },
    "semantic_model_config": {},  # HuBERT base
}  # fmt: skip
# The same shapes where they matter (25 Hz frames, 960 samples each, HuBERT at 16 kHz), a few
# hundred thousand parameters in all: fast enough for unit tests on a laptop CPU.
TINY_MODEL = {
    "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "head_dim": 8, "max_position_embeddings": 4096, "num_codebooks": 4,
}  # fmt: skip
TINY_CODEC = {
    "target_bandwidths": [0.6], "codebook_size": 64, "codebook_dim": 8,
    "acoustic_model_config": {
        "encoder_hidden_size": 2, "decoder_hidden_size": 64, "hidden_size": 8,
        "downsampling_ratios": [8, 5, 4, 2, 3], "upsampling_ratios": [8, 5, 4, 2, 3],
    },
    "semantic_model_config": {
        "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
        "intermediate_size": 32, "conv_dim": [8] * 7, "num_conv_pos_embeddings": 16,
        "num_conv_pos_embedding_groups": 2,
    },
}  # fmt: skip
SIZES = {"full": (FULL_MODEL, FULL_CODEC), "tiny": (TINY_MODEL, TINY_CODEC)}


@dataclass(frozen=True)
class CheckpointPaths:
    model: Path
    audio_tokenizer: Path

    def settings(self) -> dict[str, str]:
        """The engine settings that point at this checkpoint."""
        return {"model_path": str(self.model), "audio_tokenizer_path": str(self.audio_tokenizer)}


def build_checkpoint(
    directory: str | Path,
    *,
    size: Literal["tiny", "full"] = "tiny",
    endless: bool = False,
    seed: int = 0,
    device: str = "cpu",
    dtype: str = "float32",
) -> CheckpointPaths:
    """Build, save and return the paths of a random checkpoint (model dir and codec dir).

    ``endless``: the model never ends its audio stream, so generation runs to its token limit,
    for timing a known amount of compute and for tests that need long output. ``device`` and
    ``dtype`` are where and how the model is initialised (a GPU makes the full size quick).
    """
    torchaudio_compat.install()
    import torch
    from transformers import (
        DacFeatureExtractor,
        HiggsAudioV2Config,
        HiggsAudioV2ForConditionalGeneration,
        HiggsAudioV2Processor,
    )
    from transformers.models.higgs_audio_v2_tokenizer import (
        configuration_higgs_audio_v2_tokenizer as codec_configuration,
    )
    from transformers.models.higgs_audio_v2_tokenizer import (
        modeling_higgs_audio_v2_tokenizer as codec_modeling,
    )

    model_shape, codec_shape = SIZES[size]
    paths = CheckpointPaths(Path(directory) / "model", Path(directory) / "audio_tokenizer")
    torch.manual_seed(seed)
    tokenizer = byte_tokenizer()
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}

    codec_config = codec_configuration.HiggsAudioV2TokenizerConfig(**codec_shape)
    with torch.device(device):
        codec_modeling.HiggsAudioV2TokenizerModel(codec_config).save_pretrained(
            paths.audio_tokenizer
        )
    # Reloaded so that its name_or_path, which the processor saves, is the directory.
    codec = codec_modeling.HiggsAudioV2TokenizerModel.from_pretrained(paths.audio_tokenizer)

    codebook = codec_config.codebook_size
    config = HiggsAudioV2Config(
        **{"vocab_size": len(tokenizer), **model_shape},
        codebook_size=codebook + 2,  # the codes, then stream begin and end
        audio_stream_bos_id=codebook,
        audio_stream_eos_id=codebook + 1,
        audio_token_id=ids["<|AUDIO_OUT|>"],
        audio_bos_token_id=ids["<|audio_out_bos|>"],
        audio_delay_token_id=ids["<|reserved_special_token_6|>"],
        bos_token_id=ids["<|begin_of_text|>"],
        eos_token_id=ids["<|eot_id|>"],
        pad_token_id=ids["<|pad|>"],
    )
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, dtype))
    try:
        with torch.device(device):
            model = HiggsAudioV2ForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(default_dtype)
    if endless:
        _never_end_stream(model)
    model.save_pretrained(paths.model)
    processor = HiggsAudioV2Processor(
        DacFeatureExtractor(
            sampling_rate=codec_config.sample_rate, hop_length=codec_config.hop_length
        ),
        tokenizer,
        codec,
        chat_template=CHAT_TEMPLATE,
        audio_stream_bos_id=config.audio_stream_bos_id,
        audio_stream_eos_id=config.audio_stream_eos_id,
    )
    processor.save_pretrained(paths.model)
    return paths


def byte_tokenizer() -> Any:
    """A tokenizer with one token per byte, plus Higgs' special tokens (CSM's among them): no
    vocabulary file."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    backend = Tokenizer(models.BPE(vocab={char: i for i, char in enumerate(alphabet)}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(list(SPECIAL_TOKENS))
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|begin_of_text|>",
        eos_token="<|eot_id|>",
        pad_token="<|pad|>",
    )


def _never_end_stream(model: Any) -> None:
    """Make the end-of-stream code's logit hugely negative in every state, with weights alone.

    One residual channel is reserved: every embedding writes a constant into it and no layer writes
    to it, so after the final norm it is large and positive wherever the model is; the audio head
    reads it with a large negative weight for the end code of each codebook, and nothing else.
    """
    import torch

    channel = 0
    config = model.config
    with torch.no_grad():
        backbone = model.model
        for linear in backbone.layers.modules():
            if isinstance(linear, torch.nn.Linear) and linear.out_features == config.hidden_size:
                linear.weight[channel] = 0.0
        backbone.embed_tokens.weight[:, channel] = 1.0
        # Audio embeddings are summed over the codebooks: each adds its share of the constant.
        backbone.embed_audio_tokens.embed_audio_tokens.weight[:, channel] = (
            1.0 / config.num_codebooks
        )
        head = model.audio_lm_head.weight.view(config.num_codebooks, config.codebook_size, -1)
        head[:, :, channel] = 0.0
        head[:, config.audio_stream_eos_id, channel] = -100.0
