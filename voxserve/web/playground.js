// The playground: an engine and its voices, only the options that engine honours (its
// capabilities in /v1/models), speech streamed as SSE (PCM deltas played as they come, words
// highlighted as they are heard), then a waveform, downloads in every format, and the request as
// curl and Python.

// ---- state ---------------------------------------------------------------------------------

let engines = []; // /v1/models entries
let voices = { voices: [], aliases: {} }; // /v1/audio/voices
let lastRequest = null; // the body of the last spoken request, for downloads and code
let lastSpeech = null; // {words, samples} of the last request, for tests
let voicesLoaded = false;

const form = byId("speech-form");
const inputBox = byId("input");
const engineSelect = byId("engine");
const voiceSelect = byId("voice");
const languageSelect = byId("language");
const speedInput = byId("speed");
const speakButton = byId("speak");
const statusLine = byId("status");
const errorList = byId("errors");
const spokenText = byId("spoken");

// ---- options -------------------------------------------------------------------------------

function chosenEngine() {
  return engines.find((engine) => engine.id === engineSelect.value) || engines[0];
}

function voicesOf(engineId) {
  // A profile names its engine only when it needs one: it can be spoken by the default engine.
  // An engine that lists no voices before it loads is offered every voice (the server resolves
  // a name on the engine asked for).
  const own = voices.voices.filter((voice) => voice.engine === engineId);
  return own.length ? voices.voices.filter((voice) => !voice.engine || voice.engine === engineId) : voices.voices;
}

function fillVoices() {
  const engine = chosenEngine();
  const wanted = voiceSelect.value;
  voiceSelect.replaceChildren();
  for (const voice of voicesOf(engine.id)) {
    const label = voice.type === "profile" ? `${voice.id} (profile)` : voice.id;
    voiceSelect.append(option(voice.id, voice.description ? `${label} — ${voice.description}` : label));
  }
  for (const [alias, target] of Object.entries(voices.aliases || {})) {
    voiceSelect.append(option(alias, `${alias} → ${target}`));
  }
  if ([...voiceSelect.options].some((item) => item.value === wanted)) voiceSelect.value = wanted;
  showVoiceLanguages();
}

function showVoiceLanguages() {
  const voice = voices.voices.find((item) => item.id === voiceSelect.value);
  const languages = (voice && voice.languages) || [];
  byId("voice-languages").textContent = languages.length ? `speaks ${languages.join(", ")}` : "";
}

// Only what the chosen engine declares it honours is shown (and sent).
function showCapabilities() {
  const capabilities = chosenEngine().capabilities;
  const [slowest, fastest] = capabilities.speed_range || [1, 1];
  byId("speed-field").hidden = slowest === fastest;
  speedInput.min = slowest;
  speedInput.max = fastest;
  speedInput.value = Math.min(fastest, Math.max(slowest, Number(speedInput.value)));
  byId("speed-value").textContent = Number(speedInput.value).toFixed(2);
  const languages = capabilities.languages || [];
  byId("language-field").hidden = languages.length < 2;
  languageSelect.replaceChildren(option("", "voice's own"), ...languages.map((code) => option(code, code)));
  byId("instructions-field").hidden = !capabilities.instructions;
  byId("temperature-field").hidden = !capabilities.sampling;
  byId("seed-field").hidden = !capabilities.sampling;
  byId("engine-options-field").hidden = !capabilities.engine_options;
  fillVoices();
}

function speechBody() {
  const capabilities = chosenEngine().capabilities;
  const body = { model: chosenEngine().id, input: inputBox.value, voice: voiceSelect.value };
  const visible = (id) => !byId(id).hidden;
  if (visible("speed-field") && Number(speedInput.value) !== 1) body.speed = Number(speedInput.value);
  if (visible("language-field") && languageSelect.value) body.language = languageSelect.value;
  if (visible("instructions-field") && byId("instructions").value) body.instructions = byId("instructions").value;
  if (capabilities.sampling) {
    const sampling = {};
    if (byId("temperature").value) sampling.temperature = Number(byId("temperature").value);
    if (byId("seed").value) sampling.seed = Number(byId("seed").value);
    if (Object.keys(sampling).length) body.sampling = sampling;
  }
  if (visible("engine-options-field") && byId("engine-options").value) {
    body.engine_options = JSON.parse(byId("engine-options").value);
  }
  return body;
}

async function loadPlayground() {
  try {
    [engines, voices] = await Promise.all([loadEngines(), loadVoiceList()]);
    engineSelect.replaceChildren(...engines.map((engine) => option(engine.id, engine.id)));
    const loaded = engines.find((engine) => engine.loaded);
    if (loaded) engineSelect.value = loaded.id;
    showCapabilities();
  } catch (error) {
    showMessage(errorList, `Could not load engines and voices: ${error.message}`);
  }
  voicesLoaded = true;
}

// ---- speaking ------------------------------------------------------------------------------

function showWords(words) {
  const spans = words.map((word, index) =>
    element("span", { className: "word", textContent: word.word, id: `word-${index}` }),
  );
  spokenText.replaceChildren(...spans.flatMap((span) => [span, " "]));
  return spans;
}

function highlight(spans, index) {
  for (const span of spans) span.classList.remove("spoken-now");
  if (spans[index]) {
    spans[index].classList.add("spoken-now");
    spans[index].dataset.heard = "true";
  }
}

async function speak() {
  speakButton.disabled = true;
  errorList.replaceChildren();
  spokenText.replaceChildren();
  statusLine.textContent = "synthesizing…";
  const started = performance.now();
  try {
    const body = speechBody();
    const response = await checked(
      authorizedFetch("/v1/audio/speech", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ ...body, response_format: "pcm", stream_format: "sse" }),
      }),
    );
    const sampleRate = Number(response.headers.get("X-Sample-Rate")) || chosenEngine().capabilities.sample_rate;
    const words = [];
    const parts = [];
    let spans = [];
    let startedAt = null;
    let firstAudioMs = null;
    const follow = () => followTimings(words, startedAt, (index) => highlight(spans, index));
    const playback = await startPlayback(sampleRate, (at) => {
      startedAt = at;
      follow();
    });
    await readEvents(response, (event) => {
      if (event.type === "speech.audio.delta") {
        const bytes = base64Bytes(event.audio);
        if (firstAudioMs === null) firstAudioMs = performance.now() - started;
        parts.push(bytes);
        playback.push(bytes);
      } else if (event.type === "speech.audio.words") {
        words.push(...event.words);
        spans = showWords(words);
        if (startedAt !== null) follow();
      } else if (event.type === "error") {
        throw eventError(event);
      }
    });
    playback.end();
    const pcm = joinBytes(parts);
    const samples = new Int16Array(pcm.buffer, 0, Math.floor(pcm.length / 2));
    drawWaveform(byId("waveform"), samples);
    lastRequest = body;
    lastSpeech = { words, samples: samples.length, sampleRate };
    showCode(body);
    byId("downloads").hidden = false;
    const totalMs = performance.now() - started;
    statusLine.textContent = `first audio ${Math.round(firstAudioMs ?? totalMs)} ms, complete ${Math.round(totalMs)} ms, ${(samples.length / sampleRate).toFixed(2)} s`;
  } catch (error) {
    statusLine.textContent = "";
    showMessage(errorList, error.message);
  } finally {
    speakButton.disabled = false;
  }
}

// The same request again in another format: every format the server encodes, exactly as encoded.
async function download(format) {
  try {
    const response = await sendJson("/v1/audio/speech", "POST", { ...lastRequest, response_format: format });
    saveBlob(await response.blob(), `speech.${format}`);
  } catch (error) {
    showMessage(errorList, error.message);
  }
}

async function playSample() {
  try {
    const response = await checked(authorizedFetch(`/v1/audio/voices/${encodeURIComponent(voiceSelect.value)}/sample`));
    const url = URL.createObjectURL(await response.blob());
    const audio = new Audio(url);
    audio.onended = () => URL.revokeObjectURL(url);
    await audio.play();
  } catch (error) {
    showMessage(errorList, `No sample: ${error.message}`);
  }
}

// ---- the request as code -------------------------------------------------------------------

function shellQuote(text) {
  return `'${text.replaceAll("'", "'\\''")}'`;
}

function showCode(body) {
  const json = JSON.stringify({ ...body, response_format: "mp3" });
  const key = apiKey ? ' \\\n  -H "Authorization: Bearer $VOXSERVE_API_KEY"' : "";
  byId("curl-code").textContent =
    `curl ${location.origin}/v1/audio/speech${key} \\\n  -H "Content-Type: application/json" \\\n` +
    `  -d ${shellQuote(json)} \\\n  -o speech.mp3`;
  const { model, voice, input, ...rest } = body;
  const extra = Object.keys(rest).length ? `,\n    extra_body=${JSON.stringify(rest)}` : "";
  byId("python-code").textContent =
    `from openai import OpenAI\n\n` +
    `client = OpenAI(base_url="${location.origin}/v1", api_key=${apiKey ? 'os.environ["VOXSERVE_API_KEY"]' : '"unused"'})\n` +
    `with client.audio.speech.with_streaming_response.create(\n` +
    `    model=${JSON.stringify(model)},\n    voice=${JSON.stringify(voice)},\n    input=${JSON.stringify(input)}${extra},\n` +
    `) as response:\n    response.stream_to_file("speech.mp3")\n`;
  if (apiKey) byId("python-code").textContent = `import os\n${byId("python-code").textContent}`;
  byId("code").hidden = false;
}

// ---- start-up ------------------------------------------------------------------------------

speedInput.oninput = () => { byId("speed-value").textContent = Number(speedInput.value).toFixed(2); };
engineSelect.onchange = showCapabilities;
voiceSelect.onchange = showVoiceLanguages;
byId("sample").onclick = playSample;
for (const button of byId("downloads").querySelectorAll("[data-format]")) {
  button.onclick = () => download(button.dataset.format);
}
for (const button of document.querySelectorAll("[data-copy]")) {
  button.onclick = () => navigator.clipboard.writeText(byId(button.dataset.copy).textContent);
}
form.onsubmit = (event) => {
  event.preventDefault();
  speak();
};
window.voxserveReady = ensureAccess()
  .then(loadPlayground)
  .then(() => ({ voices: voiceSelect.options.length, engines: engines.length }));
