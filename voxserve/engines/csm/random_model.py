"""Randomly initialised CSM checkpoints, saved in the layout the engine loads.

For tests and benchmarks where the real weights are absent (nothing is downloaded): the real
architecture, at sesame/csm-1b's size or a tiny one, with Higgs' byte-level tokenizer (it holds
the special tokens CSM uses) and the published chat template. Random weights speak noise, but
every code path (prompts, context, generation, the Mimi codec) runs for real.

The tiny Mimi keeps the published convolution geometry (kernels, strides, the 12.5 Hz frames of
1920 samples: ``CsmProcessor`` assumes it when it counts a clip's frames) and shrinks only the
channels, the transformers and the number of codebooks. Its random model practically never ends
a stream by itself (an end frame is one code in 64 drawn seven times over), so generation runs to
the engine's frame cap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from voxserve.engines.csm.prompts import CHAT_TEMPLATE
from voxserve.engines.higgs import torchaudio_compat
from voxserve.engines.higgs.random_model import byte_tokenizer

# kyutai/mimi's (and sesame/csm-1b's codec's) defaults are MimiConfig's own; so are CsmConfig's.
FULL = ({}, {}, {})
TINY_CODEC = {
    "hidden_size": 16, "num_filters": 4, "codebook_size": 64, "codebook_dim": 8,
    "vector_quantization_hidden_dimension": 8, "num_quantizers": 8, "num_hidden_layers": 1,
    "intermediate_size": 32, "num_attention_heads": 2, "num_key_value_heads": 2,
    "upsample_groups": 16,
}  # fmt: skip
TINY_BACKBONE = {
    "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2,
}  # fmt: skip
TINY_DEPTH = {
    "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4,
    "num_key_value_heads": 2,
}  # fmt: skip
SIZES = {"full": FULL, "tiny": (TINY_CODEC, TINY_BACKBONE, TINY_DEPTH)}


def build_checkpoint(
    directory: str | Path,
    *,
    size: Literal["tiny", "full"] = "tiny",
    seed: int = 0,
    device: str = "cpu",
    dtype: str = "float32",
) -> Path:
    """Build and save a random checkpoint in ``directory``; returns it (the engine's
    ``model_path``). ``device`` and ``dtype``: where and how the model is initialised (a GPU
    makes the full size quick)."""
    torchaudio_compat.install()  # before transformers, as when loading (``loading.load_runtime``)
    import torch
    from transformers import (
        CsmConfig,
        CsmDepthDecoderConfig,
        CsmForConditionalGeneration,
        CsmProcessor,
        EncodecFeatureExtractor,
        MimiConfig,
    )

    codec_shape, backbone_shape, depth_shape = SIZES[size]
    path = Path(directory)
    torch.manual_seed(seed)
    tokenizer = byte_tokenizer()
    tokenizer.eos_token = "<|end_of_text|>"  # CSM ends each turn's text with it
    audio, audio_end = tokenizer.convert_tokens_to_ids(["<|AUDIO|>", "<|audio_eos|>"])
    codec = MimiConfig(**codec_shape)
    codebooks = codec.num_quantizers
    # The codes, then (as sesame/csm-1b has them) room for the padding code at the end.
    vocab = codec.codebook_size + 3
    hidden = backbone_shape.get("hidden_size", CsmConfig.hidden_size)
    depth = CsmDepthDecoderConfig(
        **depth_shape, num_codebooks=codebooks, vocab_size=vocab, backbone_hidden_size=hidden,
        max_position_embeddings=codebooks + 1,
    )  # fmt: skip
    config = CsmConfig(
        **backbone_shape, num_codebooks=codebooks, vocab_size=vocab,
        text_vocab_size=len(tokenizer), codebook_pad_token_id=vocab - 1, codebook_eos_token_id=0,
        bos_token_id=tokenizer.bos_token_id, pad_token_id=audio, audio_token_id=audio,
        audio_eos_token_id=audio_end,
        depth_decoder_config=depth.to_dict(), codec_config=codec.to_dict(),
    )  # fmt: skip
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, dtype))
    try:
        with torch.device(device):
            model = CsmForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(default_dtype)
    _distinct_codes(model.codec_model)
    model.save_pretrained(path)
    extractor = EncodecFeatureExtractor(feature_size=1, sampling_rate=codec.sampling_rate)
    CsmProcessor(extractor, tokenizer, chat_template=CHAT_TEMPLATE).save_pretrained(path)
    return path


def _distinct_codes(codec: Any) -> None:
    """Give Mimi's codebooks random entries: initialised, every entry is zero, so that every code
    decodes to the same latent and the audio does not depend on the codes at all."""
    import torch
    from transformers.models.mimi.modeling_mimi import MimiEuclideanCodebook

    with torch.no_grad():
        for codebook in codec.modules():
            if isinstance(codebook, MimiEuclideanCodebook):
                codebook.embed_sum.normal_()
                codebook._embed = None  # the cached entries, computed again from embed_sum
