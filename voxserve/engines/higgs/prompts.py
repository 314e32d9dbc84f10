"""Higgs Audio V2 prompts: who speaks, in what scene, after which examples; then the tokens.

The conventions are those of Boson AI's generation examples, in the chat format of the
transformers port: a system message, then the scene as its own ``scene`` message (rendered between
``<|scene_desc_start|>`` and ``<|scene_desc_end|>``), then user turns (text) and assistant turns
(audio only). A voice is given three ways:

- a description, a ``SPEAKER0: deep, calm male voice`` line in the scene;
- a reference clip with its transcript, as an in-context example: a user turn says the transcript,
  an assistant turn holds the clip's codes; the model goes on in that voice;
- a reference clip without transcript, placed in the scene itself (``SPEAKER0: <audio>``).

Dialogue text tags its lines ``[SPEAKER0] ... [SPEAKER1] ...``; each tag gets its own voice.
Earlier chunks of the same long text come back as example turns, so the voice stays the same.

Audio in a prompt is held as codes, never waveforms: references are encoded once, and generated
chunks are reused as they came out of the model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import torch

SYSTEM_MESSAGE = "Generate audio following instruction."
MULTI_SPEAKER_SYSTEM_MESSAGE = (
    "You are an AI assistant designed to convert text into speech.\n"
    "If the user's message includes a [SPEAKER*] tag, do not read out the tag and generate speech "
    "for the following text, using the specified voice.\n"
    "If no speaker tag is present, select a suitable voice on your own."
)
# Boson's examples give dialogue speakers without a reference or description these, alternating.
DEFAULT_SPEAKER_DESCRIPTIONS = ("feminine", "masculine")
SPEAKER_TAG = re.compile(r"\[(SPEAKER\d+)\]")

# The chat template of the converted checkpoints; transformers does not ship it, and a checkpoint
# that lacks one gets this.
CHAT_TEMPLATE = """{{- bos_token }}
{%- if messages[0]['role'] == 'system' %}
    {%- if messages[0]['content'] is string %}
        {%- set system_message = messages[0]['content']|trim %}
    {%- elif messages[0]['content'] is iterable and messages[0]['content'][0]['type'] == 'text' %}
        {%- set system_message = messages[0]['content'][0]['text']|trim %}
    {%- else %}
        {{- raise_exception("System message content must be a string or contain text type!") }}
    {%- endif %}
    {%- set messages = messages[1:] %}
{%- else %}
    {{- raise_exception("A system message is required but not provided!") }}
{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}
{{- system_message }}
{%- if messages and messages[0]['role'] == 'scene' %}
    {{- "\\n\\n<|scene_desc_start|>\\n" }}
    {%- if messages[0]['content'] is string %}
        {{- messages[0]['content'] | trim }}
    {%- elif messages[0]['content'] is iterable %}
        {%- for content_item in messages[0]['content'] %}
            {%- if content_item['type'] == 'text' %}
                {%- set text_content = content_item['text'] | trim %}
                {{- text_content }}
                {%- if loop.first and not loop.last %}
                    {{- "\\n\\n" }}
                {%- endif %}
                {%- if not loop.first and not loop.last
                      and messages[0]['content'][loop.index]['type'] != 'audio' %}
                    {{- "\\n" }}
                {%- endif %}
            {%- elif content_item['type'] == 'audio' %}
                {{- ' <|audio_out_bos|><|AUDIO_OUT|><|audio_eos|>' }}
                {%- if not loop.last %}
                    {{- "\\n" }}
                {%- endif %}
            {%- endif %}
        {%- endfor %}
    {%- endif %}
    {{- "\\n<|scene_desc_end|>" }}
    {%- set messages = messages[1:] %}
{%- endif %}
{{- "<|eot_id|>" }}
{%- for message in messages %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}
    {%- if message['role'] == 'assistant' %}
        {%- if message['content'] is not iterable or message['content'][0]['type'] != 'audio' %}
            {{- raise_exception("Assistant messages must contain audio content only!") }}
        {%- endif %}
        {{- '<|audio_out_bos|><|AUDIO_OUT|><|audio_eos|>' }}
    {%- else %}
        {%- if message['content'] is string %}
            {{- message['content'] | trim }}
        {%- elif message['content'] is iterable %}
            {%- for content_item in message['content'] %}
                {%- if content_item['type'] == 'text' %}
                    {{- content_item['text'] | trim }}
                {%- elif content_item['type'] == 'audio' and message['role'] == 'user' %}
                    {{- raise_exception("User messages cannot contain audio content!") }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
    {%- endif %}
    {{- '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n<|audio_out_bos|>' }}
{%- endif %}
"""


@dataclass(frozen=True, eq=False)
class Spoken:
    """Audio codes (codebooks x frames) and, where known, the text they say."""

    codes: torch.Tensor
    text: str | None = None


@dataclass(frozen=True)
class SpeakerVoice:
    """How one speaker should sound."""

    tag: str | None = None
    """``SPEAKER0``...; None for the one voice of a single-speaker prompt."""
    description: str | None = None
    reference: Spoken | None = None


@dataclass
class Conversation:
    """Chat messages, and the codes of their audio items in the order the template renders them."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    audio: list[torch.Tensor] = field(default_factory=list)

    def say(self, role: str, text: str) -> None:
        self.messages.append({"role": role, "content": [{"type": "text", "text": text}]})

    def play(self, codes: torch.Tensor) -> None:
        self.messages.append({"role": "assistant", "content": [{"type": "audio"}]})
        self.audio.append(codes)


@dataclass(frozen=True)
class PromptTokens:
    input_ids: torch.Tensor
    """Text token ids, shape (length,), ending with ``<|audio_out_bos|>``."""
    audio: torch.Tensor | None
    """The prompt's audio as delay-pattern columns, shape (columns, codebooks); None: none."""


def speaker_tags(text: str) -> list[str]:
    """Dialogue tags in order of first appearance."""
    return list(dict.fromkeys(SPEAKER_TAG.findall(text)))


def build_conversation(
    text: str,
    *,
    scene: str | None = None,
    speakers: list[SpeakerVoice] | tuple[SpeakerVoice, ...] = (),
    history: list[Spoken] | tuple[Spoken, ...] = (),
) -> Conversation:
    """The conversation that asks for ``text`` to be spoken; see the module docstring."""
    dialogue = any(speaker.tag for speaker in speakers)
    conversation = Conversation()
    conversation.say("system", MULTI_SPEAKER_SYSTEM_MESSAGE if dialogue else SYSTEM_MESSAGE)

    scene_items: list[dict[str, Any]] = []
    if scene and scene.strip():
        scene_items.append({"type": "text", "text": scene.strip()})
    scene_audio: list[torch.Tensor] = []
    for index, speaker in enumerate(speakers):
        tag = speaker.tag or "SPEAKER0"
        reference = speaker.reference
        if reference is not None and not reference.text:
            scene_items.append({"type": "text", "text": f"{tag}:"})
            scene_items.append({"type": "audio"})
            scene_audio.append(reference.codes)
        elif speaker.description:
            scene_items.append({"type": "text", "text": f"{tag}: {speaker.description}"})
        elif reference is None and speaker.tag:
            default = DEFAULT_SPEAKER_DESCRIPTIONS[index % len(DEFAULT_SPEAKER_DESCRIPTIONS)]
            scene_items.append({"type": "text", "text": f"{tag}: {default}"})
    if scene_items:
        conversation.messages.append({"role": "scene", "content": scene_items})
        conversation.audio.extend(scene_audio)  # the scene renders before every turn

    for speaker in speakers:
        reference = speaker.reference
        if reference is not None and reference.text:
            said = f"[{speaker.tag}] {reference.text}" if speaker.tag else reference.text
            conversation.say("user", said)
            conversation.play(reference.codes)
    for spoken in history:
        conversation.say("user", spoken.text or "")
        conversation.play(spoken.codes)
    conversation.say("user", text)
    return conversation


def render(processor: Any, conversation: Conversation) -> PromptTokens:
    """Token ids and delay-pattern audio columns for a ``HiggsAudioV2Processor``.

    Does what the processor's ``__call__`` does with waveforms, from codes: each audio placeholder
    becomes as many audio tokens as the clip has delay-pattern columns.
    """
    text = processor.apply_chat_template(
        conversation.messages, tokenize=False, add_generation_prompt=True
    )
    pieces = text.split(processor.audio_token)
    if len(pieces) != len(conversation.audio) + 1:
        raise ValueError(
            f"the chat template rendered {len(pieces) - 1} audio placeholders for "
            f"{len(conversation.audio)} clips"
        )
    columns = [delay_pattern(processor, codes) for codes in conversation.audio]
    expanded = [pieces[0]]
    for clip, piece in zip(columns, pieces[1:], strict=True):
        expanded.append(processor.get_audio_tokens(len(clip)) + piece)
    # The template writes the begin-of-text token itself.
    encoded = processor.tokenizer("".join(expanded), add_special_tokens=False, return_tensors="pt")
    return PromptTokens(encoded.input_ids[0], torch.cat(columns) if columns else None)


def delay_pattern(processor: Any, codes: torch.Tensor) -> torch.Tensor:
    """Codes (codebooks x frames) framed by stream begin and end, in the delay pattern, as
    columns (columns x codebooks)."""
    codebooks = codes.shape[0]
    begin = codes.new_full((codebooks, 1), processor.audio_stream_bos_id)
    end = codes.new_full((codebooks, 1), processor.audio_stream_eos_id)
    framed = torch.cat([begin, codes, end], dim=1)
    return processor.build_delay_pattern(framed[None])[0].transpose(0, 1)
