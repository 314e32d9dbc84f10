// The studio's shared helpers: JSON calls with the server's error messages, the engine and voice
// listings, SSE reading, streamed PCM playback through player-worklet.js, waveforms, and the tabs.
// Loaded after access.js (authorizedFetch, ensureAccess) and before the parts that use them.

// ---- state ---------------------------------------------------------------------------------

let studioAudio = null; // {context, node}: one AudioContext and player for every part
let nextGeneration = 1; // the player's generation ids: one per playback
const playbackListeners = new Map(); // generation -> function(message) for "started"/"finished"

// ---- functions -----------------------------------------------------------------------------

function byId(id) {
  return document.getElementById(id);
}

function element(tag, properties = {}, children = []) {
  const made = Object.assign(document.createElement(tag), properties);
  made.append(...children);
  return made;
}

function option(value, text) {
  return element("option", { value, textContent: text });
}

function button(text, onclick) {
  return element("button", { type: "button", textContent: text, onclick });
}

// The server's own words for a failure: OpenAI's {"error": {"message"}} shape, else the status.
async function errorMessage(response) {
  try {
    const body = await response.json();
    return (body.error && body.error.message) || `HTTP ${response.status}`;
  } catch {
    return `HTTP ${response.status}`;
  }
}

async function checked(responsePromise) {
  const response = await responsePromise;
  if (!response.ok) throw new Error(await errorMessage(response));
  return response;
}

async function getJson(url) {
  return (await checked(authorizedFetch(url))).json();
}

function sendJson(url, method, body) {
  const headers = { "Content-Type": "application/json" };
  return checked(authorizedFetch(url, { method, headers, body: JSON.stringify(body) }));
}

function showMessage(list, text, kind = "error") {
  list.replaceChildren(element("li", { textContent: text, className: kind }));
}

// Engines as /v1/models lists them, each with its declared capabilities.
async function loadEngines() {
  const body = await getJson("/v1/models");
  return body.data.filter((model) => model.capabilities && model.installed !== false);
}

async function loadVoiceList(tag = "") {
  const query = tag ? `?tag=${encodeURIComponent(tag)}` : "";
  return getJson(`/v1/audio/voices${query}`);
}

// Server-sent events of a fetch response, one parsed JSON object at a time.
async function readEvents(response, onEvent) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let pending = "";
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    pending += value;
    let end;
    while ((end = pending.indexOf("\n\n")) >= 0) {
      const block = pending.slice(0, end);
      pending = pending.slice(end + 2);
      const data = block.split("\n").filter((line) => line.startsWith("data:"));
      if (data.length) onEvent(JSON.parse(data.map((line) => line.slice(5)).join("\n")));
    }
  }
}

// An SSE error event's message: {"type": "error", "error": {"message"}} or a flat "message".
function eventError(event) {
  return new Error((event.error && event.error.message) || event.message || "synthesis failed");
}

function base64Bytes(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

async function ensureStudioAudio() {
  if (studioAudio) {
    await studioAudio.context.resume();
    return studioAudio;
  }
  const context = new AudioContext();
  await context.audioWorklet.addModule("player-worklet.js");
  const node = new AudioWorkletNode(context, "speech-player", {
    numberOfInputs: 0,
    numberOfOutputs: 1,
    outputChannelCount: [1],
  });
  node.port.onmessage = (event) => {
    const listener = playbackListeners.get(event.data.generation);
    if (listener) listener(event.data);
  };
  node.connect(context.destination);
  studioAudio = { context, node };
  await context.resume();
  return studioAudio;
}

// A playback of s16le PCM as it arrives. onStart(contextTime) is told when its first sample is
// heard, so that timings (words, turns) can be followed against context.currentTime.
async function startPlayback(sampleRate, onStart, onFinish) {
  const { context, node } = await ensureStudioAudio();
  const generation = nextGeneration++;
  playbackListeners.set(generation, (message) => {
    if (message.type === "started") onStart(context.currentTime + message.delaySamples / context.sampleRate);
    if (message.type === "finished") {
      playbackListeners.delete(generation);
      if (onFinish) onFinish();
    }
  });
  node.port.postMessage({ type: "flush" });
  node.port.postMessage({ type: "start", generation, sampleRate });
  let carry = null; // an odd byte left from the previous delta
  return {
    push(bytes) {
      let data = bytes;
      if (carry) {
        data = new Uint8Array(carry.length + bytes.length);
        data.set(carry);
        data.set(bytes, carry.length);
      }
      const whole = data.length - (data.length % 2);
      carry = whole < data.length ? data.slice(whole) : null;
      const pcm = data.slice(0, whole).buffer;
      node.port.postMessage({ type: "audio", generation, pcm }, [pcm]);
    },
    end() {
      node.port.postMessage({ type: "end", generation });
    },
  };
}

function stopPlayback() {
  if (studioAudio) studioAudio.node.port.postMessage({ type: "flush" });
}

// Follows timed items ({start, end} in seconds) against playback, calling mark(index) for the
// one being heard, until playback has passed the last.
function followTimings(items, startedAt, mark) {
  let current = -1;
  function step() {
    const now = studioAudio.context.currentTime - startedAt;
    let index = current;
    while (index + 1 < items.length && items[index + 1].start <= now) index++;
    if (index !== current) {
      current = index;
      mark(index);
    }
    if (current < items.length - 1 || now < (items.at(-1)?.end ?? 0)) requestAnimationFrame(step);
  }
  requestAnimationFrame(step);
}

function drawWaveform(canvas, samples) {
  const width = (canvas.width = canvas.clientWidth * devicePixelRatio || 600);
  const height = (canvas.height = canvas.clientHeight * devicePixelRatio || 80);
  const drawing = canvas.getContext("2d");
  drawing.clearRect(0, 0, width, height);
  drawing.fillStyle = getComputedStyle(canvas).color;
  const perColumn = Math.max(1, Math.floor(samples.length / width));
  for (let x = 0; x < width; x++) {
    let peak = 0;
    for (let i = x * perColumn; i < (x + 1) * perColumn && i < samples.length; i++) {
      peak = Math.max(peak, Math.abs(samples[i]));
    }
    const bar = Math.max(1, (peak / 32768) * height);
    drawing.fillRect(x, (height - bar) / 2, 1, bar);
  }
}

function joinBytes(parts) {
  const total = parts.reduce((sum, part) => sum + part.length, 0);
  const joined = new Uint8Array(total);
  let offset = 0;
  for (const part of parts) {
    joined.set(part, offset);
    offset += part.length;
  }
  return joined;
}

function saveBlob(blob, name) {
  const link = element("a", { href: URL.createObjectURL(blob), download: name });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
}

function showTab(name) {
  for (const tab of document.querySelectorAll("[data-tab]")) {
    tab.setAttribute("aria-selected", String(tab.dataset.tab === name));
  }
  for (const panel of document.querySelectorAll(".panel")) panel.hidden = panel.id !== name;
}

// ---- start-up ------------------------------------------------------------------------------

for (const tab of document.querySelectorAll("[data-tab]")) {
  tab.onclick = () => showTab(tab.dataset.tab);
}
