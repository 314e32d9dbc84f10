"""A randomly initialised Chatterbox checkpoint, for tests and benchmarks (CPU, offline).

The real classes throughout: S3Gen with a one-block flow encoder and estimator and a narrow
HiFT-GAN (``s3gen.json``; its speech tokenizer and speaker encoder at their real size, 130M
parameters, stored in float16 to halve the file), the voice encoder, and T3 on a one-layer Llama
registered by ``t3_llama.json`` (the Perceiver resampler fixes its width at 1024: ~35M
parameters). ``size="full"`` builds both at the published size instead (T3 on Chatterbox's own
520M Llama, S3Gen's 264M, no json files: what the GPU bench runs when real weights are absent);
``"full-s3gen"`` the tiny T3 with the published S3Gen (a decode takes seconds on two cores: one
test runs it).
The tokenizer spells text letter by letter, with Chatterbox's special tokens where
T3 expects them (stop 0, start 255). The built-in voice is made from a tone, through the same
code that clones a clip. Speech never ends by itself (a random T3 rarely samples its stop
token): output runs to the engine's token cap.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import numpy as np

from voxserve.engines.chatterbox.loading import (
    S3GEN_PARTS,
    SAMPLE_RATE,
    T3_LLAMA,
    Model,
    build_s3gen,
    conditionals,
)

TINY_LLAMA = {
    "vocab_size": 8,  # unused: T3 has its own embeddings and heads
    "max_position_embeddings": 4096,
    "hidden_size": 1024,
    "intermediate_size": 256,
    "num_hidden_layers": 1,
    "num_attention_heads": 16,
    "num_key_value_heads": 16,
    "head_dim": 64,
    "attn_implementation": "sdpa",
    "tie_word_embeddings": False,
    "hidden_act": "silu",
    "attention_bias": False,
    "mlp_bias": False,
    "rms_norm_eps": 1e-05,
    "rope_theta": 500000.0,
    "model_type": "llama",
    "use_cache": True,
}

SMALL_S3GEN = {
    "encoder": {  # S3Gen's own, but one block of a quarter the width
        "output_size": 512, "attention_heads": 2, "linear_units": 256, "num_blocks": 1,
        "dropout_rate": 0.0, "positional_dropout_rate": 0.0, "attention_dropout_rate": 0.0,
        "normalize_before": True, "input_layer": "linear", "pos_enc_layer_type": "rel_pos_espnet",
        "selfattention_layer_type": "rel_selfattn", "input_size": 512, "use_cnn_module": False,
        "macaron_style": False,
    },
    "estimator": {
        "in_channels": 320, "out_channels": 80, "causal": True, "channels": [64],
        "dropout": 0.0, "attention_head_dim": 32, "n_blocks": 1, "num_mid_blocks": 1,
        "num_heads": 2, "act_fn": "gelu",
    },
    "vocoder": {  # S3Gen's HiFT-GAN: the same rates and kernels, 64 channels instead of 512
        "sampling_rate": SAMPLE_RATE, "base_channels": 64, "upsample_rates": [8, 5, 3],
        "upsample_kernel_sizes": [16, 11, 7], "source_resblock_kernel_sizes": [7, 7, 11],
        "source_resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
    },
}  # fmt: skip


SIZES = ("tiny", "full-s3gen", "full")


def build_checkpoint(directory: Path, seed: int = 0, size: str = "tiny") -> Path:
    """Write a checkpoint of ``size`` (one of SIZES) into ``directory`` (which it returns)."""
    if size not in SIZES:
        raise ValueError(f"size should be one of {', '.join(SIZES)}, not {size!r}")
    from voxserve.engines.chatterbox import compat

    compat.install()
    import torch
    from chatterbox.models.t3 import T3
    from chatterbox.models.t3.llama_configs import LLAMA_CONFIGS
    from chatterbox.models.t3.modules.t3_config import T3Config
    from chatterbox.models.voice_encoder import VoiceEncoder
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    hp = T3Config.english_only()  # its Llama: the published 520M
    if size != "full":
        name = "voxserve_random_1_layer"
        LLAMA_CONFIGS[name] = TINY_LLAMA
        (directory / T3_LLAMA).write_text(json.dumps({"name": name, "config": TINY_LLAMA}))
        hp.llama_config_name = name
    s3gen_parts = SMALL_S3GEN if size == "tiny" else None  # None: S3Gen's own sizes
    if s3gen_parts:
        (directory / S3GEN_PARTS).write_text(json.dumps(s3gen_parts))
    t3, s3gen, voice_encoder = T3(hp).eval(), build_s3gen(s3gen_parts).eval(), VoiceEncoder().eval()
    save_file(_tensors(t3), directory / "t3_cfg.safetensors")
    save_file(_tensors(voice_encoder), directory / "ve.safetensors")
    save_file(_tensors(s3gen, torch.float16), directory / "s3gen.safetensors")
    _write_tokenizer(directory / "tokenizer.json")
    model = Model(t3, s3gen, voice_encoder, None, None, None, "cpu")
    conditionals(model, tone(1.5)).save(directory / "conds.pt")
    return directory


def tone(seconds: float) -> np.ndarray:
    """A voiced-like tone at 24 kHz: 140 Hz, its loudness swaying three times a second."""
    time = np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    sway = 1 + 0.5 * np.sin(2 * np.pi * 3 * time)
    return (0.3 * np.sin(2 * np.pi * 140 * time) * sway).astype(np.float32)


def _tensors(module, floats=None) -> dict:
    """A module's state, contiguous and unshared (safetensors stores no views), floats as
    ``floats`` when given."""
    return {
        key: (value.to(floats) if floats is not None and value.is_floating_point() else value)
        .contiguous()
        .clone()
        for key, value in module.state_dict().items()
    }


def _write_tokenizer(path: Path) -> None:
    from tokenizers import Tokenizer
    from tokenizers.models import BPE

    letters = [c for c in string.printable if not c.isspace()]
    vocab = {"[STOP]": 0, "[UNK]": 1, "[SPACE]": 2, "[START]": 255}
    vocab |= {letter: index for index, letter in enumerate(letters, 3)}
    tokenizer = Tokenizer(BPE(vocab, [], unk_token="[UNK]"))
    tokenizer.add_special_tokens(["[STOP]", "[UNK]", "[SPACE]", "[START]"])
    tokenizer.save(str(path))
