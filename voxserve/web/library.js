// The voice library: every voice listed (searched here, filtered by tag on the server), profiles
// made from an uploaded or recorded clip (the server's clip checks shown as it words them),
// edited, deleted, exported and imported, one at a time or a whole folder of clips.

// ---- state ---------------------------------------------------------------------------------

let libraryVoices = []; // the listing shown
let recordedClip = null; // a Blob recorded in the browser, used when no file is chosen
let recorder = null; // {mediaRecorder, stream, context} while recording

const voiceList = byId("voice-list");
const profileErrors = byId("profile-errors");
const importResults = byId("import-results");

// ---- listing -------------------------------------------------------------------------------

async function refreshLibrary() {
  try {
    const listing = await loadVoiceList(byId("voice-tag").value.trim());
    libraryVoices = listing.voices;
    showLibrary();
  } catch (error) {
    showMessage(voiceList, error.message);
  }
}

function matchesSearch(voice, words) {
  const text = [voice.id, voice.name, voice.description, ...(voice.tags || [])].join(" ").toLowerCase();
  return words.every((word) => text.includes(word));
}

function showLibrary() {
  const words = byId("voice-search").value.toLowerCase().split(/\s+/).filter(Boolean);
  const shown = libraryVoices.filter((voice) => matchesSearch(voice, words));
  voiceList.replaceChildren(...shown.map(voiceItem));
  const engineVoices = voices.voices.filter((voice) => voice.type !== "profile");
  const select = byId("profile-voice");
  const wanted = select.value;
  select.replaceChildren(option("", "none"), ...engineVoices.map((voice) => option(voice.id, voice.id)));
  select.value = wanted;
}

function voiceItem(voice) {
  const details = [voice.engine, (voice.languages || []).join(", "), (voice.tags || []).join(", "), voice.description];
  const item = element("li", {}, [
    element("span", { className: "voice-name", textContent: voice.id }),
    element("span", { className: "hint", textContent: details.filter(Boolean).join(" · ") }),
    button("Try this voice", () => tryVoice(voice)),
  ]);
  item.dataset.voice = voice.id;
  if (voice.type === "profile") {
    item.append(
      button("Edit", () => editProfile(voice)),
      button("Export", () => exportProfile(voice)),
      button("Delete", () => deleteProfile(voice)),
    );
  }
  return item;
}

// A profile with a clip is tried on an engine that clones (its own engine if it names one).
function tryVoice(voice) {
  const cloning = engines.find((engine) => engine.capabilities.cloning && engine.loaded)
    || engines.find((engine) => engine.capabilities.cloning);
  const clone = voice.type === "profile" && voice.has_reference && !voice.voice;
  const engineId = voice.engine || (clone && cloning ? cloning.id : null);
  if (engineId) engineSelect.value = engineId;
  showCapabilities();
  voiceSelect.value = voice.id;
  showVoiceLanguages();
  showTab("playground");
}

async function reloadVoices() {
  voices = await loadVoiceList();
  fillVoices();
  fillSpeakerVoices();
  await refreshLibrary();
}

// ---- profiles ------------------------------------------------------------------------------

async function createProfile() {
  profileErrors.replaceChildren();
  const file = byId("profile-clip").files[0] || recordedClip;
  if (!file) {
    showMessage(profileErrors, "Choose a clip or record one first.");
    return;
  }
  const form = new FormData();
  form.append("name", byId("profile-name").value.trim());
  for (const field of ["tags", "transcript", "voice"]) {
    const value = byId(`profile-${field}`).value.trim();
    if (value) form.append(field, value);
  }
  form.append("audio_sample", file, file.name || "recording.webm");
  try {
    const response = await checked(authorizedFetch("/v1/audio/voices", { method: "POST", body: form }));
    const profile = await response.json();
    showMessage(profileErrors, `Created ${profile.id}.`, "ok");
    await reloadVoices();
  } catch (error) {
    showMessage(profileErrors, error.message); // the server's clip checks: too short, clipped, silent
  }
}

async function editProfile(voice) {
  const description = window.prompt(`Description of ${voice.id}:`, voice.description || "");
  if (description === null) return;
  const tags = window.prompt(`Tags of ${voice.id} (comma-separated):`, (voice.tags || []).join(", "));
  if (tags === null) return;
  const changes = { description, tags: tags.split(",").map((tag) => tag.trim()).filter(Boolean) };
  try {
    await sendJson(`/v1/audio/voices/${encodeURIComponent(voice.id)}`, "PATCH", changes);
    await reloadVoices();
  } catch (error) {
    showMessage(profileErrors, error.message);
  }
}

async function deleteProfile(voice) {
  if (!window.confirm(`Delete the voice profile ${voice.id}?`)) return;
  try {
    await checked(authorizedFetch(`/v1/audio/voices/${encodeURIComponent(voice.id)}`, { method: "DELETE" }));
    await reloadVoices();
  } catch (error) {
    showMessage(profileErrors, error.message);
  }
}

async function exportProfile(voice) {
  try {
    const response = await checked(authorizedFetch(`/v1/audio/voices/${encodeURIComponent(voice.id)}/export`));
    const named = /filename="?([^";]+)"?/.exec(response.headers.get("Content-Disposition") || "");
    saveBlob(await response.blob(), named ? named[1] : `${voice.id}.zip`);
  } catch (error) {
    showMessage(profileErrors, error.message);
  }
}

// ---- imports -------------------------------------------------------------------------------

async function importPackage(file) {
  const form = new FormData();
  form.append("package", file, file.name);
  try {
    const response = await checked(authorizedFetch("/v1/audio/voices/import", { method: "POST", body: form }));
    showMessage(importResults, `Imported ${(await response.json()).id}.`, "ok");
    await reloadVoices();
  } catch (error) {
    showMessage(importResults, error.message);
  }
}

async function importFolder(files) {
  const form = new FormData();
  for (const file of files) form.append("files", file, file.webkitRelativePath || file.name);
  try {
    const response = await checked(authorizedFetch("/v1/audio/voices/import-folder", { method: "POST", body: form }));
    const { results } = await response.json();
    importResults.replaceChildren(
      ...results.map((result) => element("li", {
        className: result.reason ? "error" : "ok",
        textContent: `${result.file}: ${result.outcome}${result.reason ? ` (${result.reason})` : ""}`,
      })),
    );
    await reloadVoices();
  } catch (error) {
    showMessage(importResults, error.message);
  }
}

// ---- recording -----------------------------------------------------------------------------

async function toggleRecording() {
  if (recorder) {
    recorder.mediaRecorder.stop();
    return;
  }
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    const context = new AudioContext();
    const analyser = context.createAnalyser();
    context.createMediaStreamSource(stream).connect(analyser);
    const mediaRecorder = new MediaRecorder(stream);
    const pieces = [];
    mediaRecorder.ondataavailable = (event) => pieces.push(event.data);
    mediaRecorder.onstop = () => {
      recordedClip = new Blob(pieces, { type: mediaRecorder.mimeType });
      byId("recorded").textContent = `recorded ${Math.round(recordedClip.size / 1024)} KB`;
      for (const track of stream.getTracks()) track.stop();
      context.close();
      recorder = null;
      byId("record").textContent = "Record";
      byId("level").value = 0;
    };
    recorder = { mediaRecorder, stream, context };
    mediaRecorder.start();
    byId("record").textContent = "Stop";
    showLevel(analyser);
  } catch (error) {
    showMessage(profileErrors, `Cannot record: ${error.message}`);
  }
}

// The live level: the peak of the latest block of samples, redrawn each frame while recording.
function showLevel(analyser) {
  const block = new Float32Array(analyser.fftSize);
  function step() {
    if (!recorder) return;
    analyser.getFloatTimeDomainData(block);
    let peak = 0;
    for (const sample of block) peak = Math.max(peak, Math.abs(sample));
    byId("level").value = peak;
    requestAnimationFrame(step);
  }
  step();
}

// ---- start-up ------------------------------------------------------------------------------

byId("voice-search").oninput = showLibrary;
byId("voice-tag").onchange = refreshLibrary;
byId("record").onclick = toggleRecording;
byId("profile-form").onsubmit = (event) => {
  event.preventDefault();
  createProfile();
};
byId("package-file").onchange = (event) => event.target.files[0] && importPackage(event.target.files[0]);
byId("folder-files").onchange = (event) => event.target.files.length && importFolder(event.target.files);
window.voxserveReady.then(refreshLibrary);
