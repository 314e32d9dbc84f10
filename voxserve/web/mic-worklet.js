// Microphone capture on the audio thread: resample the context's rate to 16 kHz and post
// 20 ms frames of signed 16-bit PCM (320 samples) to the main thread.
//
// Browsers ignore a requested AudioContext sampleRate for microphones, and Firefox refuses to
// connect a microphone to a context of another rate, so the resampling happens here.
//
// Resampling is "integrate and dump": every input sample is added to an accumulator, and each
// time the input position passes the next output instant the accumulator's mean becomes one
// output sample. That is a box filter over each output period, a cheap anti-alias low-pass that
// works for any ratio (48000, 44100, ... to 16000) and keeps no state but three numbers.
//
// Messages out: {type: "frame", pcm: ArrayBuffer (Int16, 320 samples), level: 0..1 RMS}.

const OUTPUT_RATE = 16000;
const FRAME_SAMPLES = 320; // 20 ms at 16 kHz

function createMicState(inputRate) {
  return {
    step: OUTPUT_RATE / inputRate, // output samples per input sample (< 1 when downsampling)
    position: 0, // fraction of the current output period consumed so far
    sum: 0, // input samples accumulated in the current output period
    count: 0,
    frame: new Int16Array(FRAME_SAMPLES),
    filled: 0,
    energy: 0, // sum of squares over the frame, for the level meter / voice detection
  };
}

function pushOutputSample(state, port, value) {
  const clipped = value > 1 ? 1 : value < -1 ? -1 : value;
  state.frame[state.filled] = clipped < 0 ? clipped * 0x8000 : clipped * 0x7fff;
  state.energy += clipped * clipped;
  state.filled += 1;
  if (state.filled === FRAME_SAMPLES) {
    const pcm = state.frame.buffer.slice(0); // one copy per 20 ms frame, transferred
    const level = Math.sqrt(state.energy / FRAME_SAMPLES);
    port.postMessage({ type: "frame", pcm, level }, [pcm]);
    state.filled = 0;
    state.energy = 0;
  }
}

function resampleInto(state, port, input) {
  for (let i = 0; i < input.length; i++) {
    state.sum += input[i];
    state.count += 1;
    state.position += state.step;
    if (state.position >= 1) {
      state.position -= 1;
      pushOutputSample(state, port, state.sum / state.count);
      state.sum = 0;
      state.count = 0;
    }
  }
}

registerProcessor(
  "mic-capture",
  class extends AudioWorkletProcessor {
    // registerProcessor requires a class; everything it does lives in the functions above.
    constructor() {
      super();
      this.state = createMicState(sampleRate);
    }

    process(inputs) {
      const channels = inputs[0];
      if (channels && channels.length > 0) {
        resampleInto(this.state, this.port, channels[0]); // mono: the first channel
      }
      return true;
    }
  },
);
