// The dialogue editor: speakers with voices, lines in order, rendered by POST /v1/audio/dialogue
// as SSE (PCM deltas played as they come; a dialogue.turn event after each turn gives its
// timing), the line being heard highlighted.

// ---- state ---------------------------------------------------------------------------------

let dialogueTurns = []; // the timings of the last render, for tests

const speakerList = byId("speakers");
const lineList = byId("lines");
const dialogueStatus = byId("dialogue-status");
const dialogueErrors = byId("dialogue-errors");

// ---- editing -------------------------------------------------------------------------------

function speakerNames() {
  return [...speakerList.querySelectorAll("[name=speaker-name]")].map((input) => input.value.trim()).filter(Boolean);
}

function voiceOptions(select) {
  const wanted = select.value || select.dataset.wanted;
  select.replaceChildren(...voices.voices.map((voice) => option(voice.id, voice.id)));
  if (wanted && [...select.options].some((item) => item.value === wanted)) select.value = wanted;
}

function fillSpeakerVoices() {
  for (const select of speakerList.querySelectorAll("select")) voiceOptions(select);
}

function fillLineSpeakers() {
  const names = speakerNames();
  for (const select of lineList.querySelectorAll("select")) {
    const wanted = select.value || select.dataset.wanted;
    select.replaceChildren(...names.map((name) => option(name, name)));
    if (names.includes(wanted)) select.value = wanted;
  }
}

function addSpeaker(name = "", voice = "") {
  const select = element("select", { name: "speaker-voice" });
  select.dataset.wanted = voice;
  const item = element("li", {}, [
    element("input", { name: "speaker-name", value: name, placeholder: "name", oninput: fillLineSpeakers }),
    select,
    button("Remove", () => {
      item.remove();
      fillLineSpeakers();
    }),
  ]);
  speakerList.append(item);
  voiceOptions(select);
  fillLineSpeakers();
}

function moveLine(item, step) {
  const sibling = step < 0 ? item.previousElementSibling : item.nextElementSibling;
  if (!sibling) return;
  if (step < 0) sibling.before(item);
  else sibling.after(item);
}

function addLine(speaker = "", text = "") {
  const select = element("select", { name: "line-speaker" });
  select.dataset.wanted = speaker;
  const item = element("li", {}, [
    select,
    element("input", { name: "line-text", value: text, placeholder: "what they say" }),
    button("↑", () => moveLine(item, -1)),
    button("↓", () => moveLine(item, 1)),
    button("Remove", () => item.remove()),
  ]);
  lineList.append(item);
  fillLineSpeakers();
}

function dialogueBody() {
  const speakers = {};
  for (const item of speakerList.children) {
    const name = item.querySelector("[name=speaker-name]").value.trim();
    if (name) speakers[name] = item.querySelector("select").value;
  }
  const turns = [...lineList.children]
    .map((item) => ({
      speaker: item.querySelector("select").value,
      text: item.querySelector("[name=line-text]").value.trim(),
    }))
    .filter((turn) => turn.text);
  return { turns, voices: speakers };
}

// ---- rendering -----------------------------------------------------------------------------

function markLine(index) {
  [...lineList.children].forEach((item, position) => item.classList.toggle("current", position === index));
  if (lineList.children[index]) lineList.children[index].dataset.heard = "true";
}

// JSON, or with a music bed a form: the same body in its "dialogue" field, the file in "music".
function dialogueRequest(body) {
  const music = byId("dialogue-music").files[0];
  if (!music) {
    const headers = { "Content-Type": "application/json" };
    return { method: "POST", headers, body: JSON.stringify(body) };
  }
  const form = new FormData();
  form.append("dialogue", JSON.stringify(body));
  form.append("music", music);
  return { method: "POST", body: form };
}

async function renderDialogue() {
  byId("render-dialogue").disabled = true;
  dialogueErrors.replaceChildren();
  dialogueStatus.textContent = "rendering…";
  try {
    const body = { ...dialogueBody(), response_format: "pcm", stream_format: "sse" };
    const response = await checked(authorizedFetch("/v1/audio/dialogue", dialogueRequest(body)));
    const sampleRate = Number(response.headers.get("X-Sample-Rate")) || 24000;
    const turns = []; // {start, end} in seconds, as followTimings takes them
    let startedAt = null;
    const follow = () => followTimings(turns, startedAt, markLine);
    const playback = await startPlayback(sampleRate, (at) => {
      startedAt = at;
      follow();
    });
    await readEvents(response, (event) => {
      if (event.type === "speech.audio.delta") playback.push(base64Bytes(event.audio));
      else if (event.type === "dialogue.turn") {
        turns.push({ ...event, start: event.start_ms / 1000, end: event.end_ms / 1000 });
        if (startedAt !== null) follow();
      } else if (event.type === "error") throw eventError(event);
    });
    playback.end();
    dialogueTurns = turns;
    dialogueStatus.textContent = `${turns.length} turns, ${(turns.at(-1)?.end ?? 0).toFixed(2)} s`;
  } catch (error) {
    dialogueStatus.textContent = "";
    showMessage(dialogueErrors, error.message);
  } finally {
    byId("render-dialogue").disabled = false;
  }
}

// ---- start-up ------------------------------------------------------------------------------

byId("add-speaker").onclick = () => addSpeaker();
byId("add-line").onclick = () => addLine(speakerNames()[0] || "");
byId("render-dialogue").onclick = renderDialogue;
window.voxserveReady.then(() => {
  const [first, second] = voices.voices;
  addSpeaker("Ada", first ? first.id : "");
  addSpeaker("Ben", (second || first || {}).id || "");
  addLine("Ada", "Did you hear the news?");
  addLine("Ben", "Not yet. Tell me everything.");
});
