// Speech playback on the audio thread: a pre-allocated Float32 ring buffer, played gaplessly.
//
// The main thread forwards each generation of the reply (see docs/chat.md):
//   {type: "start", generation, sampleRate}       audio_stream_start: a new stream at this rate
//   {type: "audio", generation, pcm: ArrayBuffer}  s16le samples of that generation
//   {type: "end", generation}                      audio_stream_stop: no more audio will come
//   {type: "flush"}                                stop now: drop everything not yet played
// and hears back:
//   {type: "started", generation, delaySamples}    its first sample is being played now
//   {type: "finished", generation, playedSamples, playedMs, flushed}
//
// Samples are resampled to the context's rate as they arrive (linear interpolation, continuous
// across frames), so playing is a plain copy out of the ring. Positions are absolute sample
// counts (written / read since the start), so a generation is just the range [start, end) and
// "how much of it was heard" is a subtraction, even after the ring has wrapped.
// Nothing is allocated per audio quantum.

const BUFFER_SECONDS = 30;
const MAX_GENERATIONS = 16; // generations queued at once (a reply per character, back to back)

function createPlayerState(outputRate) {
  const generations = [];
  for (let i = 0; i < MAX_GENERATIONS; i++) {
    generations.push({
      id: 0, active: false, start: 0, end: 0, ended: false, started: false,
      step: 1, phase: 0, previous: 0,
    });
  }
  return {
    outputRate,
    ring: new Float32Array(Math.ceil(BUFFER_SECONDS * outputRate)),
    written: 0, // absolute count of samples ever written
    read: 0, // absolute count of samples ever played (or flushed)
    generations,
    overflowReported: false,
  };
}

function findGeneration(state, id) {
  for (const generation of state.generations) {
    if (generation.active && generation.id === id) return generation;
  }
  return null;
}

function startGeneration(state, port, id, inputRate) {
  let slot = state.generations.find((generation) => !generation.active);
  if (!slot) {
    port.postMessage({ type: "error", message: "too many generations queued" });
    return;
  }
  slot.id = id;
  slot.active = true;
  slot.start = state.written;
  slot.end = state.written;
  slot.ended = false;
  slot.started = false;
  slot.step = inputRate / state.outputRate; // input samples per output sample
  slot.phase = 0;
  slot.previous = 0;
}

function writeSample(state, port, value) {
  if (state.written - state.read >= state.ring.length) {
    if (!state.overflowReported) {
      port.postMessage({ type: "error", message: "playback buffer full: audio dropped" });
      state.overflowReported = true;
    }
    return;
  }
  state.ring[state.written % state.ring.length] = value;
  state.written += 1;
}

// Linear interpolation over [previous, x0, x1, ...]: an output sample at every `step` of input
// position, `phase` carrying the position over to the next frame so the joins are seamless.
function appendAudio(state, port, id, pcm) {
  const generation = findGeneration(state, id);
  if (!generation || generation.ended) return; // flushed or unknown: stale audio never plays
  if (state.written !== generation.end) return; // a later generation already queued behind it
  const input = new Int16Array(pcm);
  let position = generation.phase;
  while (position < input.length) {
    const index = Math.floor(position);
    const fraction = position - index;
    const before = index === 0 ? generation.previous : input[index - 1] / 32768;
    const after = input[index] / 32768;
    writeSample(state, port, before + (after - before) * fraction);
    position += generation.step;
  }
  generation.phase = position - input.length;
  if (input.length > 0) generation.previous = input[input.length - 1] / 32768;
  generation.end = state.written;
}

function endGeneration(state, id) {
  const generation = findGeneration(state, id);
  if (generation) generation.ended = true;
}

function reportFinished(state, port, generation, flushed) {
  const playedSamples = Math.max(0, Math.min(state.read, generation.end) - generation.start);
  port.postMessage({
    type: "finished",
    generation: generation.id,
    playedSamples,
    playedMs: Math.round((playedSamples / state.outputRate) * 1000),
    flushed,
  });
  generation.active = false;
}

function flush(state, port) {
  for (const generation of state.generations) {
    if (generation.active) reportFinished(state, port, generation, true);
  }
  state.written = state.read;
  state.overflowReported = false;
}

function playInto(state, port, output) {
  const available = state.written - state.read;
  const count = Math.min(available, output.length);
  const ring = state.ring;
  const from = state.read;
  for (let i = 0; i < count; i++) output[i] = ring[(from + i) % ring.length];
  output.fill(0, count);
  state.read += count;

  for (const generation of state.generations) {
    if (!generation.active) continue;
    if (!generation.started && generation.end > generation.start && state.read > generation.start) {
      generation.started = true;
      port.postMessage({ type: "started", generation: generation.id, delaySamples: generation.start - from });
    }
    if (generation.ended && state.read >= generation.end) reportFinished(state, port, generation, false);
  }
}

function handleMessage(state, port, message) {
  if (message.type === "audio") appendAudio(state, port, message.generation, message.pcm);
  else if (message.type === "start") startGeneration(state, port, message.generation, message.sampleRate);
  else if (message.type === "end") endGeneration(state, message.generation);
  else if (message.type === "flush") flush(state, port);
}

registerProcessor(
  "speech-player",
  class extends AudioWorkletProcessor {
    // registerProcessor requires a class; everything it does lives in the functions above.
    constructor() {
      super();
      this.state = createPlayerState(sampleRate);
      this.port.onmessage = (event) => handleMessage(this.state, this.port, event.data);
    }

    process(inputs, outputs) {
      const channels = outputs[0];
      playInto(this.state, this.port, channels[0]);
      for (let c = 1; c < channels.length; c++) channels[c].set(channels[0]);
      return true;
    }
  },
);
