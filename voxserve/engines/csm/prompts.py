"""CSM prompts: a conversation of earlier turns (text and audio), then the text to speak.

CSM's conversation format is its checkpoint's chat template: each turn
``<|begin_of_text|>[speaker]text<|end_of_text|>``, followed, for a turn already spoken, by its
audio (one ``<|AUDIO|>`` token a Mimi frame) and ``<|audio_eos|>``; the last turn is the text to
speak, and generation goes on from its end in that speaker's voice. A voice is given two ways:

- a speaker id alone: ``[0]`` and ``[1]``, CSM's two conversational speakers (the engine's
  voices ``csm_0`` and ``csm_1``);
- a reference clip and its transcript, as an earlier turn of the speaker (cloning).

Audio in a prompt is held as codes, never waveforms: a reference is encoded once, and generated
turns are fed back as the model sampled them (the model itself would encode waveforms at every
call). The prompt reaches the model as embeddings (``generation.embed``).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from itertools import count
from typing import Any

import torch

VOICE_SPEAKERS = {"csm_0": 0, "csm_1": 1}
"""The engine's own voices: CSM's speaker ids."""

# The rendering part of sesame/csm-1b's chat template (its checks left out), for a checkpoint
# that lacks one: the random ones of tests and benchmarks.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- bos_token }}{{- '[' + message['role'] + ']' }}{{- message['content'][0]['text'] }}"
    "{{- eos_token }}"
    "{%- if message['content']|length > 1 %}{{- '<|AUDIO|><|audio_eos|>' }}{%- endif %}"
    "{%- endfor %}"
)


@dataclass(frozen=True)
class Turn:
    """A turn already spoken: who, what, and its audio as Mimi codes."""

    speaker: int
    text: str
    codes: torch.Tensor
    """Frames x codebooks, on the CPU."""
    voice: Hashable = None
    """The voice it was spoken in (``voice_key``): the same voice keeps its speaker id."""

    @property
    def frames(self) -> int:
        return len(self.codes)


@dataclass(frozen=True)
class CsmPrompt:
    """A rendered prompt: its token ids, and the codes of its audio tokens, in order."""

    input_ids: torch.Tensor
    """(tokens,): text tokens, one audio token per frame of each earlier turn."""
    audio: torch.Tensor | None
    """(frames, codebooks): every earlier turn's codes, concatenated; None without any."""
    speaker: int
    """Who speaks the new text."""

    def __len__(self) -> int:
        return len(self.input_ids)


def voice_key(voice: str, reference_audio: str | None) -> Hashable:
    """What a turn was spoken in: an engine voice, or a clip to clone (a profile's own)."""
    return (voice, reference_audio)


def speaker_for(voice: str, key: Hashable, history: Sequence[Turn]) -> int:
    """The speaker id a voice speaks as: ``csm_0`` and ``csm_1`` their own; a cloned voice the id
    it had earlier in the conversation, else the lowest id no other voice there has (0 when it
    speaks alone)."""
    if voice in VOICE_SPEAKERS:
        return VOICE_SPEAKERS[voice]
    for turn in reversed(history):
        if turn.voice == key:
            return turn.speaker
    taken = {turn.speaker for turn in history}
    return next(speaker for speaker in count() if speaker not in taken)


def render(processor: Any, turns: Sequence[Turn], speaker: int, text: str) -> CsmPrompt:
    """``text`` for ``speaker`` after ``turns`` (oldest first), in the checkpoint's chat format."""
    conversation = [
        {"role": str(turn.speaker), "content": [{"type": "text", "text": turn.text},
                                                {"type": "audio"}]}
        for turn in turns
    ]  # fmt: skip
    conversation.append({"role": str(speaker), "content": [{"type": "text", "text": text}]})
    rendered = processor.apply_chat_template(conversation, tokenize=False)
    # One audio token a frame, as the processor expands them for the waveforms it is given.
    pieces = rendered.split(processor.audio_token)
    if len(pieces) != len(turns) + 1:
        raise ValueError("the chat template placed audio other than once per earlier turn")
    expanded = pieces[0] + "".join(
        processor.audio_token * turn.frames + piece
        for turn, piece in zip(turns, pieces[1:], strict=True)
    )
    input_ids = processor.tokenizer(expanded, add_special_tokens=False, return_tensors="pt")
    audio = torch.cat([turn.codes for turn in turns]) if turns else None
    return CsmPrompt(input_ids.input_ids[0], audio, speaker)
