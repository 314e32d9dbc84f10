// TTS playground: POST /v1/audio/speech and play the answer in an <audio> element.
// The response is read as a stream and handed to the element once complete (plus the time to the
// first byte, which is the server's time to first audio).

// ---- state ---------------------------------------------------------------------------------

let currentUrl = null; // object URL of the audio now in the player
let voicesLoaded = false; // for tests

const form = document.getElementById("speech-form");
const inputBox = document.getElementById("input");
const voiceSelect = document.getElementById("voice");
const formatSelect = document.getElementById("format");
const speedInput = document.getElementById("speed");
const speedValue = document.getElementById("speed-value");
const speakButton = document.getElementById("speak");
const player = document.getElementById("player");
const statusLine = document.getElementById("status");
const errorList = document.getElementById("errors");

// ---- functions -----------------------------------------------------------------------------

function showError(text) {
  const item = document.createElement("li");
  item.textContent = text;
  errorList.replaceChildren(item);
}

async function loadVoices() {
  try {
    const response = await authorizedFetch("/v1/audio/voices");
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const body = await response.json();
    for (const voice of body.voices || []) {
      const option = document.createElement("option");
      option.value = voice.id;
      option.textContent = voice.description ? `${voice.id} — ${voice.description}` : voice.id;
      voiceSelect.append(option);
    }
    for (const alias of Object.keys(body.aliases || {})) {
      const option = document.createElement("option");
      option.value = alias;
      option.textContent = `${alias} → ${body.aliases[alias]}`;
      voiceSelect.append(option);
    }
  } catch (error) {
    showError(`Could not load voices: ${error.message}`);
  }
  voicesLoaded = true;
}

async function errorMessage(response) {
  try {
    const body = await response.json();
    return (body.error && body.error.message) || `HTTP ${response.status}`;
  } catch {
    return `HTTP ${response.status}`;
  }
}

async function speak() {
  speakButton.disabled = true;
  errorList.replaceChildren();
  statusLine.textContent = "synthesizing…";
  const started = performance.now();
  try {
    const response = await authorizedFetch("/v1/audio/speech", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({
        input: inputBox.value,
        voice: voiceSelect.value || undefined,
        response_format: formatSelect.value,
        speed: Number(speedInput.value),
      }),
    });
    if (!response.ok) throw new Error(await errorMessage(response));
    const reader = response.body.getReader();
    const chunks = [];
    let firstByteMs = null;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      if (firstByteMs === null) firstByteMs = performance.now() - started;
      chunks.push(value);
    }
    const blob = new Blob(chunks, { type: response.headers.get("Content-Type") || "audio/mpeg" });
    if (currentUrl) URL.revokeObjectURL(currentUrl);
    currentUrl = URL.createObjectURL(blob);
    player.src = currentUrl;
    const totalMs = performance.now() - started;
    statusLine.textContent = `first audio ${Math.round(firstByteMs ?? totalMs)} ms, complete ${Math.round(totalMs)} ms, ${blob.size} bytes`;
    await player.play().catch(() => {}); // autoplay may be refused; the controls still work
  } catch (error) {
    statusLine.textContent = "";
    showError(error.message);
  } finally {
    speakButton.disabled = false;
  }
}

// ---- start-up ------------------------------------------------------------------------------

speedInput.oninput = () => { speedValue.textContent = Number(speedInput.value).toFixed(2); };
form.onsubmit = (event) => {
  event.preventDefault();
  speak();
};
window.voxserveReady = ensureAccess().then(loadVoices).then(() => ({ voices: voiceSelect.options.length }));
