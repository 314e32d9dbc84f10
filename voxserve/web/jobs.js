// The Books tab: an audiobook or podcast made from an uploaded file as a job (POST /v1/jobs),
// its progress live from /v1/jobs/{id}/events, pause, resume and cancel, and the book and its
// chapters to download (each as soon as it is made). Loaded after studio.js.

// ---- state ---------------------------------------------------------------------------------

const jobList = byId("job-list");
const jobErrors = byId("job-errors");
const followedJobs = new Set(); // job ids whose events are being read

// ---- functions -----------------------------------------------------------------------------

function jobActions(job) {
  const actions = [];
  const post = (verb) => () =>
    sendJson(`/v1/jobs/${job.id}/${verb}`, "POST", {}).then(refreshJobs, (error) =>
      showMessage(jobErrors, error.message),
    );
  if (job.status === "queued" || job.status === "running") {
    actions.push(button("Pause", post("pause")), button("Cancel", post("cancel")));
  } else if (job.status === "paused" || job.status === "failed") {
    actions.push(button("Resume", post("resume")), button("Cancel", post("cancel")));
  }
  const format = job.options.response_format;
  if (job.status === "done") {
    const book = `/v1/jobs/${job.id}/audio`;
    actions.push(button(`Download ${format}`, () => downloadJobFile(book, `book.${format}`)));
  }
  // A chapter is there to download as soon as it is made, before the book is done.
  for (const chapter of job.status === "cancelled" ? [] : job.chapters) {
    const url = `/v1/jobs/${job.id}/chapters/${chapter.number}/audio`;
    const name = `${chapter.number} ${chapter.title}.${format}`;
    actions.push(button(chapter.title, () => downloadJobFile(url, name)));
  }
  return actions;
}

function jobItem(job) {
  const progress = job.progress || {};
  const total = progress.pieces_total || 0;
  const bar = element("progress", { max: total || 1, value: progress.pieces_done || 0 });
  const running = job.status === "running" && progress.eta_seconds;
  const eta = running ? `, about ${Math.round(progress.eta_seconds)} s left` : "";
  const done = total ? ` ${progress.pieces_done}/${total} pieces` : "";
  const said = `${job.filename}: ${job.status}${done}${eta}`;
  const actions = element("div", { className: "actions" }, jobActions(job));
  const item = element("li", {}, [element("span", { textContent: said }), bar, actions]);
  item.dataset.job = job.id;
  item.dataset.status = job.status;
  if (job.error) item.append(element("p", { className: "hint", textContent: job.error }));
  return item;
}

function showJob(job) {
  const item = jobItem(job);
  const shown = jobList.querySelector(`[data-job="${job.id}"]`);
  if (shown) shown.replaceWith(item);
  else jobList.prepend(item);
}

async function followJob(id) {
  if (followedJobs.has(id)) return;
  followedJobs.add(id);
  try {
    const response = await checked(authorizedFetch(`/v1/jobs/${id}/events`));
    await readEvents(response, showJob);
  } catch (error) {
    showMessage(jobErrors, error.message);
  } finally {
    followedJobs.delete(id);
  }
}

async function refreshJobs() {
  const body = await getJson("/v1/jobs");
  for (const job of body.data) {
    showJob(job);
    if (job.status === "queued" || job.status === "running") followJob(job.id);
  }
}

async function downloadJobFile(url, name) {
  try {
    saveBlob(await (await checked(authorizedFetch(url))).blob(), name);
  } catch (error) {
    showMessage(jobErrors, error.message);
  }
}

async function startJob(event) {
  event.preventDefault();
  jobErrors.replaceChildren();
  const file = byId("book-file").files[0];
  if (!file) return showMessage(jobErrors, "choose a text, Markdown, EPUB or script file");
  const form = new FormData();
  form.append("file", file);
  form.append("voice", byId("book-voice").value);
  form.append("response_format", byId("book-format").value);
  const music = byId("book-music").files[0];
  if (music) form.append("music", music);
  try {
    const made = await checked(authorizedFetch("/v1/jobs", { method: "POST", body: form }));
    const job = await made.json();
    showJob(job);
    followJob(job.id);
  } catch (error) {
    showMessage(jobErrors, error.message);
  }
}

async function fillBookVoices() {
  const body = await loadVoiceList();
  byId("book-voice").replaceChildren(...body.voices.map((voice) => option(voice.id, voice.id)));
}

// ---- start-up ------------------------------------------------------------------------------

byId("book-form").onsubmit = startJob;
window.voxserveReady
  .then(fillBookVoices)
  .then(refreshJobs)
  .catch((error) => showMessage(jobErrors, error.message));
