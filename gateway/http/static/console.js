// The capmesh console: plain browser JavaScript over the gateway's HTTP API (no build step, no CDN).
"use strict";

const $ = (selector) => document.querySelector(selector);
const keyInput = $("#api-key");
keyInput.value = localStorage.getItem("capmesh.apiKey") || "";
keyInput.addEventListener("change", () => { localStorage.setItem("capmesh.apiKey", keyInput.value); restartWatches(); });

function authHeaders(extra = {}) {
  const key = keyInput.value.trim();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: authHeaders(options.headers || {}) });
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { const body = await response.json(); message = (body.error && body.error.message) || body.message || message; } catch (_) { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}

// Server-Sent Events over fetch, so that the Authorization header can be sent (EventSource cannot).
function sse(path, options, onEvent, lastEventId) {
  const controller = new AbortController();
  const headers = authHeaders({ Accept: "text/event-stream", ...(options.headers || {}) });
  if (lastEventId) headers["Last-Event-ID"] = lastEventId;
  const done = (async () => {
    const response = await api(path, { ...options, headers, signal: controller.signal });
    if (options.onResponse) options.onResponse(response);
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done: finished } = await reader.read();
      if (finished) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const event = { id: null, event: "message", data: [] };
        for (const line of block.split("\n")) {
          if (line.startsWith(":")) continue;
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
          if (field === "data") event.data.push(text);
          else if (field === "id") event.id = text;
          else if (field === "event") event.event = text;
        }
        if (event.data.length) onEvent(event.data.join("\n"), event);
      }
    }
  })();
  return { controller, done };
}

// ---------------------------------------------------------------------------------- capabilities
const RANDOM_WEIGHTS_NOTE = "random weights: the output is noise (a tiny test model)";
const STATE_CLASS = { BACKEND_STATE_AVAILABLE: "ok", BACKEND_STATE_ERROR: "bad", BACKEND_STATE_UNAVAILABLE: "bad" };

function renderCapabilities(capabilities) {
  const list = $("#capabilities");
  list.replaceChildren();
  if (!capabilities.length) {
    const empty = document.createElement("li");
    empty.className = "muted";
    empty.textContent = "No capability backends registered.";
    list.append(empty);
  }
  for (const capability of capabilities) {
    const item = document.createElement("li");
    item.dataset.capability = capability.capability;
    item.dataset.state = capability.state;
    const dot = document.createElement("span");
    dot.className = `dot ${STATE_CLASS[capability.state] || ""}`;
    dot.title = capability.state;
    const name = document.createElement("strong");
    name.textContent = capability.capability;
    item.append(dot, name, ` — ${(capability.state || "").replace("BACKEND_STATE_", "").toLowerCase()}`);
    for (const status of capability.backends || []) {
      const backend = document.createElement("div");
      backend.className = "backend";
      const b = status.backend || {};
      const models = (b.loadedModels || []).join(", ");
      backend.textContent = `${b.backendId || b.address} · ${(status.state || "").replace("BACKEND_STATE_", "").toLowerCase()}`
        + ` · in flight ${status.inFlight || 0}` + (models ? ` · loaded: ${models}` : "");
      if ((b.labels || {}).random_weights === "true") {
        const note = document.createElement("span");
        note.className = "note random-weights";
        note.textContent = RANDOM_WEIGHTS_NOTE;
        backend.append(note);
      }
      // An old error of a backend that is AVAILABLE again explains nothing any more.
      if (status.lastError && status.state !== "BACKEND_STATE_AVAILABLE") {
        const error = document.createElement("div");
        error.className = "error-text";
        error.textContent = `last error: ${status.lastError}`;
        backend.append(error);
      }
      item.append(backend);
    }
    list.append(item);
  }
}

let capabilityWatch = null;
function watchCapabilities() {
  const state = $("#watch-state");
  capabilityWatch = sse("/v1/capabilities:watch", {}, (data, event) => {
    if (event.event === "error") { state.textContent = `watch failed: ${JSON.parse(data).message}`; return; }
    state.textContent = "live";
    renderCapabilities(JSON.parse(data).capabilities || []);
  });
  capabilityWatch.done.catch(async (error) => {
    if (error.name === "AbortError") return;
    state.textContent = `reconnecting (${error.message})`;
    try { renderCapabilities((await (await api("/v1/capabilities")).json()).capabilities || []); } catch (_) { /* shown above */ }
  }).finally(() => { if (!capabilityWatch.controller.signal.aborted) setTimeout(watchCapabilities, 3000); });
}

// ------------------------------------------------------------------------------------------ jobs
const jobRows = new Map();
const jobWatches = new Map();
const FINAL = new Set(["JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED"]);

function jobRow(jobId) {
  if (jobRows.has(jobId)) return jobRows.get(jobId);
  const row = document.createElement("tr");
  row.dataset.job = jobId;
  row.innerHTML = "<td class=id></td><td class=method></td><td class=state></td><td><progress max=100 value=0></progress> <span class=percent></span></td><td><button class=cancel>cancel</button></td>";
  row.querySelector(".id").textContent = jobId.slice(0, 10);
  row.querySelector(".id").title = jobId;
  row.querySelector(".cancel").addEventListener("click", () => api(`/v1/operations/${jobId}:cancel`, { method: "POST", body: "{}", headers: { "Content-Type": "application/json" } }).catch((e) => alert(e.message)));
  $("#jobs tbody").prepend(row);
  $("#jobs-empty").hidden = true;
  jobRows.set(jobId, row);
  return row;
}

function showJob(jobId, { method, state, percent, stage }) {
  const row = jobRow(jobId);
  if (method) { row.querySelector(".method").textContent = method.split("/").pop(); row.querySelector(".method").title = method; }
  if (state) { row.dataset.state = state; row.querySelector(".state").textContent = state.replace("JOB_STATE_", "").toLowerCase(); }
  if (percent !== undefined) {
    row.querySelector("progress").value = percent;
    row.querySelector(".percent").textContent = `${Math.round(percent)}%${stage ? " " + stage : ""}`;
  }
  if (state && FINAL.has(state)) row.querySelector(".cancel").hidden = true;  // nothing left to cancel
}

function watchJob(jobId, onEvent) {
  if (jobWatches.has(jobId)) return jobWatches.get(jobId);
  let lastId = null;
  const run = () => sse(`/v1/jobs/${jobId}/events`, {}, (data, event) => {
    if (event.event === "error") return;
    lastId = event.id || lastId;
    const jobEvent = JSON.parse(data).event || {};
    const progress = jobEvent.progress || {};
    showJob(jobId, { state: jobEvent.state, percent: jobEvent.state === "JOB_STATE_SUCCEEDED" ? 100 : progress.percent, stage: progress.stage });
    if (onEvent) onEvent(jobEvent);
  }, lastId);
  const watch = run();
  jobWatches.set(jobId, watch);
  return watch;
}

async function refreshJobs() {
  try {
    const body = await (await api("/v1/operations?page_size=25")).json();
    for (const operation of body.operations || []) {
      const metadata = operation.metadata || {};
      const jobId = metadata.jobId || operation.name.replace("operations/", "");
      const progress = metadata.progress || {};
      showJob(jobId, { method: metadata.method, state: metadata.state, percent: metadata.state === "JOB_STATE_SUCCEEDED" ? 100 : progress.percent, stage: progress.stage });
      if (!FINAL.has(metadata.state)) watchJob(jobId);
    }
  } catch (_) { /* no job service yet: the table stays as it is */ }
}

async function submitJob(method, request, labels = {}) {
  const response = await api("/v1/jobs", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ method, request, labels }) });
  const operation = (await response.json()).operation;
  const jobId = operation.metadata.jobId;
  showJob(jobId, { method, state: operation.metadata.state, percent: 0 });
  return jobId;
}

function waitForJob(jobId, status) {
  return new Promise((resolve, reject) => {
    watchJob(jobId, (event) => {
      const progress = event.progress || {};
      if (progress.stage) status.textContent = `${progress.stage} ${Math.round(progress.percent || 0)}%`;
      if (event.type === "JOB_EVENT_TYPE_SUCCEEDED") resolve(event.result || {});
      if (event.type === "JOB_EVENT_TYPE_FAILED") reject(new Error((event.error && event.error.message) || "the job failed"));
      if (event.type === "JOB_EVENT_TYPE_CANCELLED") reject(new Error("the job was cancelled"));
    }).done.catch(reject);
  });
}

async function showArtifactVideo(result, video) {
  const artifact = (result.artifacts || []).find((a) => (a.mimeType || "").startsWith("video/")) || (result.artifacts || [])[0];
  if (!artifact) throw new Error("the job produced no file");
  if (artifact.fileId) {
    const blob = await (await api(`/v1/files/${artifact.fileId}:download`)).blob();
    video.src = URL.createObjectURL(blob);
  } else {
    video.src = `data:${artifact.mimeType};base64,${artifact.inlineData}`;
  }
}

async function upload(file) {
  const form = new FormData();
  form.append("file", file);
  return (await (await api("/v1/files", { method: "POST", body: form })).json()).file;
}

// The gateway flags answers of a random-weight model (x-capmesh-random-weights): say so next to them.
function flagRandomWeights(response, note) {
  const random = response.headers.get("x-capmesh-random-weights") === "true";
  note.hidden = !random;
  note.textContent = random ? RANDOM_WEIGHTS_NOTE : "";
}

// ----------------------------------------------------------------------------------------- forms
function busy(form, status, work) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = form.querySelector("button");
    button.disabled = true;
    status.classList.remove("error-text");
    try { await work(new FormData(form)); } catch (error) { status.textContent = error.message; status.classList.add("error-text"); } finally { button.disabled = false; }
  });
}

async function speech(text, voice) {
  const response = await api("/v1/audio/speech", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ model: "tts-1", input: text, voice: voice || "", response_format: "wav" }) });
  return response.blob();
}

busy($("#speak-form"), $("#speak-status"), async (data) => {
  $("#speak-status").textContent = "speaking…";
  const audio = $("#speak-audio");
  audio.src = URL.createObjectURL(await speech(data.get("text"), data.get("voice")));
  $("#speak-status").textContent = "done";
  audio.play().catch(() => { /* autoplay may be refused; the controls are there */ });
});

const chatHistory = [];
busy($("#chat-form"), $("#chat-status"), async (data) => {
  const log = $("#chat-log");
  const text = data.get("message");
  chatHistory.push({ role: "user", content: text });
  const mine = document.createElement("div");
  mine.className = "user";
  mine.textContent = `you: ${text}`;
  const theirs = document.createElement("div");
  theirs.className = "assistant";
  theirs.textContent = "assistant: ";
  log.append(mine, theirs);
  $("#chat-form").reset();
  $("#chat-status").textContent = "streaming…";
  let answer = "";
  const stream = sse("/v1/chat/completions", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ model: data.get("model") || "", messages: chatHistory, stream: true }), onResponse: (response) => flagRandomWeights(response, $("#chat-note")) }, (payload) => {
    if (payload === "[DONE]") return;
    const chunk = JSON.parse(payload);
    if (chunk.error) throw new Error(chunk.error.message);
    const delta = (chunk.choices[0] || {}).delta || {};
    if (delta.content) { answer += delta.content; theirs.textContent = `assistant: ${answer}`; log.scrollTop = log.scrollHeight; }
  });
  await stream.done;
  chatHistory.push({ role: "assistant", content: answer });
  $("#chat-status").textContent = "done";
});

busy($("#image-form"), $("#image-status"), async (data) => {
  const status = $("#image-status");
  status.textContent = "generating…";
  const request = { prompt: data.get("prompt"), n: 1, response_format: "b64_json" };
  if (data.get("size")) request.size = data.get("size");
  const response = await api("/v1/images/generations", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(request) });
  flagRandomWeights(response, $("#image-note"));
  const image = ((await response.json()).data || [])[0];
  if (!image || !image.b64_json) throw new Error("the answer held no image");
  const output = $("#image-output");
  output.src = `data:image/png;base64,${image.b64_json}`;
  output.hidden = false;
  status.textContent = "done";
});

busy($("#talk-form"), $("#talk-status"), async (data) => {
  const status = $("#talk-status");
  status.textContent = "uploading…";
  const portrait = await upload(data.get("portrait"));
  // One job: the talking-head service has the TTS capability speak the text (stage "synthesizing").
  const jobId = await submitJob("/capmesh.talkinghead.v1.TalkingHeadService/StreamGenerateTalkingHead",
    { referenceImage: { fileId: portrait.fileId }, text: data.get("text") }, { source: "console" });
  status.textContent = `job ${jobId} queued`;
  await showArtifactVideo(await waitForJob(jobId, status), $("#talk-video"));
  status.textContent = "done";
});

busy($("#video-form"), $("#video-status"), async (data) => {
  const status = $("#video-status");
  status.textContent = "uploading…";
  const image = await upload(data.get("image"));
  const jobId = await submitJob("/capmesh.videogen.v1.VideoGenService/StreamGenerateVideo",
    { image: { fileId: image.fileId }, prompt: data.get("prompt"), numFrames: Number(data.get("frames")) || 0 }, { source: "console" });
  status.textContent = `job ${jobId} queued`;
  await showArtifactVideo(await waitForJob(jobId, status), $("#video-video"));
  status.textContent = "done";
});

// DocGen: an outline job fills the editable outline; a document job writes it, one step per section.
busy($("#outline-form"), $("#doc-status"), async (data) => {
  const status = $("#doc-status");
  const jobId = await submitJob("/capmesh.docgen.v1.DocGenService/StreamGenerateOutline",
    { query: data.get("query"), maxSections: Number(data.get("sections")) || 0 }, { source: "console" });
  status.textContent = `outline job ${jobId} queued`;
  const result = await waitForJob(jobId, status);
  $("#document-form textarea").value = JSON.stringify((result.response || {}).outline || {}, null, 2);
  status.textContent = "outline ready: edit it, then write the document";
});

busy($("#document-form"), $("#doc-status"), async (data) => {
  const status = $("#doc-status");
  let outline;
  try { outline = JSON.parse(data.get("outline")); } catch (error) { throw new Error(`the outline is not JSON: ${error.message}`); }
  const jobId = await submitJob("/capmesh.docgen.v1.DocGenService/StreamGenerateDocument",
    { outline, format: data.get("format") }, { source: "console" });
  status.textContent = `document job ${jobId} queued`;
  const result = await waitForJob(jobId, status);
  const document = (result.response || {}).document || {};
  if (!document.fileId) throw new Error("the job stored no document");
  const blob = await (await api(`/v1/files/${document.fileId}:download`)).blob();
  const link = $("#doc-download");
  link.href = URL.createObjectURL(blob);
  link.download = document.name || "document";
  link.hidden = false;
  $("#doc-preview").textContent = (document.mimeType || "").startsWith("text/") ? await blob.text() : `${document.name}: ${blob.size} bytes`;
  const sections = ((result.response || {}).sections || []).length;
  status.textContent = `done: ${sections} sections, ${blob.size} bytes`;
});

function restartWatches() {
  if (capabilityWatch) capabilityWatch.controller.abort();
  for (const watch of jobWatches.values()) watch.controller.abort();
  jobWatches.clear();
  watchCapabilities();
  refreshJobs();
}

watchCapabilities();
refreshJobs();
setInterval(refreshJobs, 3000);
