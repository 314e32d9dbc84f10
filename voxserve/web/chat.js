// voxserve voice chat: the browser side of /v1/chat/ws (protocol: docs/chat.md).
//
// Microphone -> mic-worklet.js (16 kHz Int16, 20 ms frames) -> binary WebSocket frames up.
// Binary frames down ([uint32 LE generation][s16le PCM]) -> player-worklet.js (ring buffer) -> speakers.
// The player tells us when a generation starts being heard and when it ends (or is flushed), and we
// pass that on as playback_started / playback_finished so the server can resume listening and cut
// an interrupted reply to what was actually heard.

// ---- state ---------------------------------------------------------------------------------

const VOICE_THRESHOLD = 0.02; // mic RMS above which a frame counts as speech (client-side timing)
const MAX_ERRORS_SHOWN = 5;

let socket = null;
let reconnectDelayMs = 500;

let audioContext = null;
let playerNode = null;
let micNode = null;
let micStream = null;

let wantListening = false; // the user pressed the voice button
let serverListening = false; // the server takes microphone audio now
let thinking = false; // a turn was sent and no reply audio is heard yet

const generations = new Map(); // id -> {character, logItem, text, playing, heard}
const interruptedGenerations = new Set(); // ids whose late frames are dropped
const metricsRows = new Map(); // generation id -> <tr>

let lastVoiceAt = 0; // performance.now() of the last mic frame above the threshold
let turnStartedAt = 0; // end of the user's speech (or the typed message) of the pending turn

let voices = []; // from GET /v1/audio/voices
let characters = []; // as the server last confirmed them
let conversationId = conversationInAddress(); // the conversation shown; saved ones go in the URL

const debug = { micFramesCaptured: 0, micFramesSent: 0, messagesSent: [] }; // for tests

const elements = {
  connection: document.getElementById("connection"),
  voiceButton: document.getElementById("voice-button"),
  voiceLabel: document.getElementById("voice-label"),
  micLevel: document.getElementById("mic-level"),
  state: document.getElementById("state"),
  partial: document.getElementById("partial"),
  stopButton: document.getElementById("stop-button"),
  resetButton: document.getElementById("reset-button"),
  log: document.getElementById("log"),
  textForm: document.getElementById("text-form"),
  textInput: document.getElementById("text-input"),
  errors: document.getElementById("errors"),
  charactersForm: document.getElementById("characters-form"),
  characters: document.getElementById("characters"),
  addCharacter: document.getElementById("add-character"),
  policy: document.getElementById("policy"),
  characterTemplate: document.getElementById("character-template"),
  metrics: document.getElementById("metrics"),
  conversations: document.getElementById("conversations"),
};

// ---- WebSocket -----------------------------------------------------------------------------

function chatUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/v1/chat/ws`;
}

function connect() {
  setConnection("connecting", "connecting…");
  socket = openSocket(chatUrl());
  socket.binaryType = "arraybuffer";
  socket.onopen = () => {
    reconnectDelayMs = 500;
    setConnection("open", "connected");
    // After a reconnect (or a reload), carry on the saved conversation this page shows.
    if (conversationInAddress()) send({ type: "resume", conversation_id: conversationInAddress() });
    if (wantListening) send({ type: "start_listening" });
  };
  socket.onmessage = (event) => {
    if (typeof event.data === "string") handleMessage(JSON.parse(event.data));
    else handleAudioFrame(event.data);
  };
  socket.onclose = () => {
    setConnection("closed", "disconnected, retrying…");
    serverListening = false;
    flushPlayback(); // a new connection starts with nothing stale in the speakers
    updateState();
    setTimeout(connect, reconnectDelayMs);
    reconnectDelayMs = Math.min(reconnectDelayMs * 2, 10000);
  };
}

function send(message) {
  debug.messagesSent.push(message);
  if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(message));
}

function handleMessage(message) {
  switch (message.type) {
    case "ready":
      characters = message.characters || [];
      renderCharacters(characters);
      if (message.conversation_id !== conversationId) showConversation(message);
      break;
    case "listening":
      serverListening = Boolean(message.active);
      break;
    case "transcript_partial":
      elements.partial.textContent = message.text;
      break;
    case "transcript_final":
      elements.partial.textContent = "";
      addLogItem("user", "You", message.text);
      startTurn(lastVoiceAt || performance.now());
      break;
    case "assistant_text":
      showAssistantText(message);
      break;
    case "audio_stream_start":
      startGenerationAudio(message);
      break;
    case "audio_stream_stop":
      if (playerNode) playerNode.port.postMessage({ type: "end", generation: message.generation });
      break;
    case "tts_interrupt":
      interruptedGenerations.add(message.generation);
      flushPlayback();
      break;
    case "metrics":
      showMetrics(message.generation, message);
      rememberConversation(); // the turn is saved now
      break;
    case "error":
      showError(`${message.code || "error"}: ${message.message || ""}`);
      if (message.code === "conversation_not_found") history.replaceState(null, "", location.pathname);
      thinking = false;
      break;
    default:
      break; // messages this page does not know are ignored: the protocol may grow
  }
  updateState();
}

// ---- playback ------------------------------------------------------------------------------

function generationEntry(id, character) {
  let entry = generations.get(id);
  if (!entry) {
    entry = { character: character || "Assistant", logItem: null, text: "", playing: false, heard: false };
    generations.set(id, entry);
  }
  if (character) entry.character = character;
  return entry;
}

function startGenerationAudio(message) {
  const id = message.generation;
  if (interruptedGenerations.has(id)) return;
  generationEntry(id, message.character);
  if (playerNode) {
    playerNode.port.postMessage({ type: "start", generation: id, sampleRate: message.sample_rate });
  }
}

function handleAudioFrame(data) {
  if (data.byteLength < 4 || !playerNode) return;
  const id = new DataView(data).getUint32(0, true);
  if (interruptedGenerations.has(id) || !generations.has(id)) return;
  const pcm = data.slice(4, 4 + ((data.byteLength - 4) & ~1)); // whole 16-bit samples only
  playerNode.port.postMessage({ type: "audio", generation: id, pcm }, [pcm]);
}

function flushPlayback() {
  if (playerNode) playerNode.port.postMessage({ type: "flush" });
}

function handlePlayerMessage(message) {
  const entry = generations.get(message.generation);
  if (message.type === "started") {
    if (entry) entry.playing = true;
    thinking = false;
    send({ type: "playback_started", generation: message.generation });
    recordHeardLatency(message.generation, message.delaySamples);
  } else if (message.type === "finished") {
    if (entry) {
      entry.playing = false;
      if (message.flushed && entry.logItem) entry.logItem.classList.add("interrupted");
    }
    send({ type: "playback_finished", generation: message.generation, played_ms: message.playedMs });
  } else if (message.type === "error") {
    showError(`playback: ${message.message}`);
  }
  updateState();
}

// From the pending turn's start to the moment its first sample leaves the speakers.
function recordHeardLatency(generation, delaySamples) {
  if (!turnStartedAt) return;
  const outputLatency = audioContext.outputLatency || audioContext.baseLatency || 0;
  const delay = Math.max(0, delaySamples || 0) / audioContext.sampleRate + outputLatency;
  const heardMs = performance.now() + delay * 1000 - turnStartedAt;
  turnStartedAt = 0;
  showMetrics(generation, { heard: heardMs });
}

// ---- microphone ----------------------------------------------------------------------------

async function setupAudio() {
  audioContext = new AudioContext({ latencyHint: "interactive" });
  await Promise.all([
    audioContext.audioWorklet.addModule("mic-worklet.js"),
    audioContext.audioWorklet.addModule("player-worklet.js"),
  ]);
  playerNode = new AudioWorkletNode(audioContext, "speech-player", {
    numberOfInputs: 0,
    numberOfOutputs: 1,
    outputChannelCount: [1],
  });
  playerNode.port.onmessage = (event) => handlePlayerMessage(event.data);
  playerNode.connect(audioContext.destination);
  return { sampleRate: audioContext.sampleRate };
}

async function startMicrophone() {
  if (micNode) return;
  micStream = await navigator.mediaDevices.getUserMedia({
    audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 },
  });
  const source = audioContext.createMediaStreamSource(micStream);
  micNode = new AudioWorkletNode(audioContext, "mic-capture", { numberOfInputs: 1, numberOfOutputs: 1 });
  micNode.port.onmessage = (event) => handleMicFrame(event.data);
  source.connect(micNode);
  micNode.connect(audioContext.destination); // silent output; keeps the node pulled by the graph
}

function handleMicFrame(message) {
  debug.micFramesCaptured += 1;
  elements.micLevel.style.width = `${Math.min(100, message.level * 400)}%`;
  if (message.level > VOICE_THRESHOLD) lastVoiceAt = performance.now();
  if (wantListening && serverListening && socket && socket.readyState === WebSocket.OPEN) {
    socket.send(message.pcm);
    debug.micFramesSent += 1;
  }
}

async function toggleListening() {
  if (wantListening) {
    wantListening = false;
    send({ type: "stop_listening" });
    elements.micLevel.style.width = "0";
    updateState();
    return;
  }
  try {
    await audioContext.resume();
    await startMicrophone();
  } catch (error) {
    showError(`microphone: ${error.message}`);
    return;
  }
  wantListening = true;
  serverListening = true; // until the server says otherwise; its "listening" message wins
  lastVoiceAt = 0;
  send({ type: "start_listening" });
  updateState();
}

// ---- conversation --------------------------------------------------------------------------

function startTurn(at) {
  turnStartedAt = at;
  thinking = true;
}

function sendText(text) {
  addLogItem("user", "You", text);
  audioContext.resume();
  startTurn(performance.now());
  send({ type: "text", text });
}

function interrupt() {
  for (const id of generations.keys()) interruptedGenerations.add(id); // late frames never play
  flushPlayback();
  thinking = false;
  send({ type: "interrupt" });
  updateState();
}

function reset() {
  interrupt();
  send({ type: "reset" });
  elements.log.replaceChildren();
  elements.partial.textContent = "";
  turnStartedAt = 0;
}

function showAssistantText(message) {
  const entry = generationEntry(message.generation, message.character);
  if (!entry.logItem) entry.logItem = addLogItem("assistant", entry.character, "");
  entry.text = message.final ? message.text : `${entry.text} ${message.text}`.trim();
  entry.logItem.querySelector(".text").textContent = entry.text;
}

function addLogItem(role, who, text) {
  const item = document.createElement("li");
  item.className = role;
  const name = document.createElement("span");
  name.className = "who";
  name.textContent = who;
  const body = document.createElement("span");
  body.className = "text";
  body.textContent = text;
  item.append(name, body);
  elements.log.append(item);
  elements.log.scrollTop = elements.log.scrollHeight;
  return item;
}

// ---- saved conversations -------------------------------------------------------------------

function conversationInAddress() {
  return new URLSearchParams(location.hash.slice(1)).get("conversation");
}

function rememberConversation() {
  if (conversationInAddress() !== conversationId) {
    history.replaceState(null, "", `#conversation=${conversationId}`);
    loadConversations();
  }
}

function showConversation(ready) {
  conversationId = ready.conversation_id;
  elements.log.replaceChildren();
  for (const turn of ready.history || []) {
    if (turn.speaker === "user") addLogItem("user", "You", turn.text);
    else addLogItem("assistant", turn.speaker, turn.text);
  }
  if (ready.history && ready.history.length) rememberConversation();
  else history.replaceState(null, "", location.pathname);
  elements.conversations.value = conversationInAddress() ? conversationId : "";
}

async function loadConversations() {
  try {
    const response = await authorizedFetch("/v1/chat/conversations?limit=30");
    if (!response.ok) return; // saving is off on this server: the picker stays "New"
    const options = (await response.json()).data.map((saved) => {
      const option = document.createElement("option");
      option.value = saved.id;
      option.textContent = `${saved.title || "untitled"} (${saved.turns})`;
      return option;
    });
    elements.conversations.replaceChildren(elements.conversations.options[0], ...options);
    elements.conversations.value = conversationInAddress() || "";
  } catch (error) {
    showError(`conversations: ${error.message}`);
  }
}

function pickConversation() {
  const picked = elements.conversations.value;
  if (!picked) reset();
  else send({ type: "resume", conversation_id: picked });
}

function showError(text) {
  const item = document.createElement("li");
  item.textContent = text;
  elements.errors.append(item);
  while (elements.errors.children.length > MAX_ERRORS_SHOWN) elements.errors.firstChild.remove();
}

function showMetrics(generation, values) {
  let row = metricsRows.get(generation);
  if (!row) {
    row = document.createElement("tr");
    for (const key of ["generation", "end_of_speech_to_final", "llm_first_token", "tts_first_audio",
      "total_to_first_audio", "heard"]) {
      const cell = document.createElement("td");
      cell.dataset.key = key;
      row.append(cell);
    }
    row.cells[0].textContent = generation;
    metricsRows.set(generation, row);
    elements.metrics.prepend(row);
  }
  for (const cell of row.cells) {
    const value = values[cell.dataset.key];
    if (typeof value === "number" && cell.dataset.key !== "generation") cell.textContent = Math.round(value);
  }
}

// ---- indicators ----------------------------------------------------------------------------

function setConnection(state, text) {
  elements.connection.dataset.state = state;
  elements.connection.textContent = text;
}

function currentState() {
  for (const entry of generations.values()) if (entry.playing) return "speaking";
  if (thinking) return "thinking";
  if (wantListening && serverListening) return "listening";
  return wantListening ? "waiting" : "idle";
}

function updateState() {
  const state = currentState();
  elements.state.dataset.state = state;
  elements.state.textContent = state;
  elements.voiceButton.setAttribute("aria-pressed", String(wantListening));
  elements.voiceLabel.textContent = wantListening ? "Stop listening" : "Start listening";
}

// ---- characters ----------------------------------------------------------------------------

async function loadVoices() {
  try {
    const response = await authorizedFetch("/v1/audio/voices");
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    voices = (await response.json()).voices || [];
  } catch (error) {
    showError(`voices: ${error.message}`);
  }
  renderCharacters(characters);
}

function addCharacterFields(character) {
  const fields = elements.characterTemplate.content.firstElementChild.cloneNode(true);
  const select = fields.querySelector("[name=voice]");
  const ids = voices.map((voice) => voice.id);
  if (character.voice && !ids.includes(character.voice)) ids.unshift(character.voice);
  for (const id of ids) {
    const option = document.createElement("option");
    const voice = voices.find((v) => v.id === id);
    option.value = id;
    option.textContent = voice && voice.description ? `${id} — ${voice.description}` : id;
    select.append(option);
  }
  fields.querySelector("[name=name]").value = character.name || "";
  select.value = character.voice || ids[0] || "";
  fields.querySelector("[name=persona]").value = character.persona || "";
  fields.querySelector(".remove").onclick = () => fields.remove();
  elements.characters.append(fields);
}

function renderCharacters(list) {
  elements.characters.replaceChildren();
  const shown = list.length ? list : [{ name: "Ava", voice: "", persona: "You are Ava, a friendly, concise assistant." }];
  for (const character of shown) addCharacterFields(character);
}

function readCharacters() {
  return [...elements.characters.querySelectorAll(".character")].map((fields) => ({
    name: fields.querySelector("[name=name]").value.trim(),
    voice: fields.querySelector("[name=voice]").value,
    persona: fields.querySelector("[name=persona]").value.trim(),
    description: "",
  }));
}

// ---- start-up ------------------------------------------------------------------------------

elements.voiceButton.onclick = toggleListening;
elements.stopButton.onclick = interrupt;
elements.resetButton.onclick = reset;
elements.conversations.onchange = pickConversation;
elements.addCharacter.onclick = () => addCharacterFields({ name: "", voice: "", persona: "" });
elements.charactersForm.onsubmit = (event) => {
  event.preventDefault();
  send({ type: "set_characters", characters: readCharacters(), policy: elements.policy.value });
};
elements.textForm.onsubmit = (event) => {
  event.preventDefault();
  const text = elements.textInput.value.trim();
  if (!text) return;
  elements.textInput.value = "";
  sendText(text);
};

window.voxserveDebug = debug;
window.voxserveReady = setupAudio().catch((error) => {
  showError(`audio: ${error.message}`);
  throw error;
});
updateState();
ensureAccess().then(() => {
  loadVoices();
  loadConversations();
  connect();
});
