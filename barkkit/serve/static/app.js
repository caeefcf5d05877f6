// barkkit's page: plain JavaScript against the server's own API (nothing from another host).
"use strict";

const $ = (id) => document.getElementById(id);
const keyInput = $("api-key");
keyInput.value = localStorage.getItem("barkkit-api-key") || "";
keyInput.addEventListener("change", () => { localStorage.setItem("barkkit-api-key", keyInput.value); loadVoices(); });

function authHeaders(extra = {}) {
  const key = keyInput.value.trim();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

// An API failure as one readable line: OpenAI's {"error": {"message"}} when there is one.
async function errorMessage(response) {
  const text = await response.text();
  try { return JSON.parse(text).error.message || text; } catch (_) { return text || `HTTP ${response.status}`; }
}

function showError(element, message) {
  element.textContent = message;
  element.hidden = !message;
}

async function checkHealth() {
  const pill = $("health");
  try {
    const response = await fetch("/health");
    if (response.ok) {
      const body = await response.json();
      pill.textContent = `ready · ${body.model} · ${body.mode}`;
      pill.className = "pill ok";
      return;
    }
    pill.textContent = await errorMessage(response);
    pill.className = "pill bad";
  } catch (error) {
    pill.textContent = "server unreachable";
    pill.className = "pill bad";
  }
  setTimeout(checkHealth, 3000);
}

async function loadVoices(selected) {
  const select = $("voice");
  const response = await fetch("/v1/audio/voices", { headers: authHeaders() });
  if (!response.ok) { showError($("generate-error"), await errorMessage(response)); return; }
  const listing = await response.json();
  const keep = selected || select.value;
  select.querySelectorAll("optgroup").forEach((group) => group.remove());
  const groups = {};
  for (const voice of listing.voices) {
    if (!groups[voice.source]) {
      groups[voice.source] = document.createElement("optgroup");
      groups[voice.source].label = voice.source;
      select.appendChild(groups[voice.source]);
    }
    const option = new Option(voice.name, voice.id);
    groups[voice.source].appendChild(option);
  }
  if (keep) select.value = keep;
}

function speechRequest(format) {
  const body = { model: "bark", input: $("text").value, response_format: format };
  if ($("voice").value) body.voice = $("voice").value;
  if ($("seed").value !== "") body.seed = Number($("seed").value);
  if ($("mode").value) body.mode = $("mode").value;
  if ($("speed").value !== "" && Number($("speed").value) !== 1) body.speed = Number($("speed").value);
  for (const input of document.querySelectorAll("[data-option]")) {
    const raw = input.value.trim();
    if (raw === "") continue;
    const name = input.dataset.option;
    body[name] = name === "fine_temp" && /^(none|argmax)$/i.test(raw) ? null : Number(raw);
  }
  return body;
}

// Server-sent events from a fetch body: yields each event's parsed JSON.
async function* events(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block.split("\n").filter((line) => line.startsWith("data: ")).map((line) => line.slice(6)).join("\n");
      if (data) yield JSON.parse(data);
    }
  }
}

function base64Bytes(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

function wavBlob(pcm, rate) {
  const header = new DataView(new ArrayBuffer(44));
  const text = (offset, s) => { for (let i = 0; i < s.length; i++) header.setUint8(offset + i, s.charCodeAt(i)); };
  text(0, "RIFF"); header.setUint32(4, 36 + pcm.length, true); text(8, "WAVE");
  text(12, "fmt "); header.setUint32(16, 16, true); header.setUint16(20, 1, true); header.setUint16(22, 1, true);
  header.setUint32(24, rate, true); header.setUint32(28, rate * 2, true); header.setUint16(32, 2, true);
  header.setUint16(34, 16, true); text(36, "data"); header.setUint32(40, pcm.length, true);
  return new Blob([header.buffer, pcm], { type: "audio/wav" });
}

function setProgress(event) {
  const bar = $("progress");
  const within = event.total ? event.done / event.total : 0;
  const stepShare = { "bark.semantic": 0.0, "bark.coarse": 0.25, "bark.fine": 0.75, encodec: 0.95 }[event.step] ?? 0;
  const sentence = Math.min(1, stepShare + within * 0.25);
  bar.value = Math.min(1, (event.sentences_done + (event.sentences_done < event.sentences ? sentence : 0)) / event.sentences);
  $("progress-text").textContent =
    `sentence ${Math.min(event.sentences_done + 1, event.sentences)} of ${event.sentences} · ${event.step}`;
}

let lastSeed = null;

async function generate() {
  const button = $("generate");
  showError($("generate-error"), "");
  if (!$("text").value.trim()) { showError($("generate-error"), "Type some words to speak first."); return; }
  button.disabled = true;
  $("progress").hidden = false;
  $("progress").value = 0;
  $("progress-text").textContent = "queued…";
  const started = performance.now();
  try {
    const body = { ...speechRequest("pcm"), stream_format: "sse", progress: true };
    const response = await fetch("/v1/audio/speech", {
      method: "POST", headers: authHeaders({ "Content-Type": "application/json" }), body: JSON.stringify(body),
    });
    if (!response.ok) throw new Error(await errorMessage(response));
    lastSeed = response.headers.get("X-Barkkit-Seed");
    const chunks = [];
    let rate = 24000;
    for await (const event of events(response)) {
      if (event.type === "barkkit.progress") setProgress(event);
      else if (event.type === "speech.audio.delta") chunks.push(base64Bytes(event.audio));
      else if (event.type === "speech.audio.done") rate = event.sample_rate || rate;
      else if (event.type === "error") throw new Error(event.error.message);
    }
    const pcm = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
    let offset = 0;
    for (const chunk of chunks) { pcm.set(chunk, offset); offset += chunk.length; }
    showResult(pcm, rate, (performance.now() - started) / 1000);
  } catch (error) {
    showError($("generate-error"), error.message);
  } finally {
    button.disabled = false;
    $("progress").hidden = true;
    $("progress-text").textContent = "";
  }
}

function showResult(pcm, rate, seconds) {
  const samples = new Int16Array(pcm.buffer, pcm.byteOffset, pcm.length >> 1);
  const floats = Float32Array.from(samples, (s) => s / 32768);
  const url = URL.createObjectURL(wavBlob(pcm, rate));
  $("player").src = url;
  $("download").href = url;
  $("result").hidden = false;
  $("result-info").textContent =
    `${(floats.length / rate).toFixed(2)} s of audio in ${seconds.toFixed(1)} s · seed ${lastSeed}`;
  drawWaveform($("waveform"), floats);
  drawSpectrogram($("spectrogram"), floats, rate);
}

async function downloadOther() {
  const format = $("download-format").value;
  const body = speechRequest(format);
  if (lastSeed !== null) body.seed = Number(lastSeed);  // the same seed: the same speech, in another format
  const response = await fetch("/v1/audio/speech", {
    method: "POST", headers: authHeaders({ "Content-Type": "application/json" }), body: JSON.stringify(body),
  });
  if (!response.ok) { showError($("generate-error"), await errorMessage(response)); return; }
  const link = document.createElement("a");
  link.href = URL.createObjectURL(await response.blob());
  link.download = `speech.${format}`;
  link.click();
}

function drawWaveform(canvas, samples) {
  const g = canvas.getContext("2d");
  const { width, height } = canvas;
  g.fillStyle = "#0f1419"; g.fillRect(0, 0, width, height);
  let peak = 0;
  for (const s of samples) peak = Math.max(peak, Math.abs(s));
  const gain = peak > 0 ? 0.95 / peak : 1;  // drawn to the clip's own peak, so quiet speech is still visible
  g.strokeStyle = "#6cb6ff"; g.beginPath();
  const per = Math.max(1, Math.floor(samples.length / width));
  for (let x = 0; x < width; x++) {
    let lo = 1, hi = -1;
    for (let i = x * per; i < Math.min(samples.length, (x + 1) * per); i++) { lo = Math.min(lo, samples[i]); hi = Math.max(hi, samples[i]); }
    if (lo > hi) continue;
    g.moveTo(x + 0.5, (1 - hi * gain) * height / 2); g.lineTo(x + 0.5, (1 - lo * gain) * height / 2 + 1);
  }
  g.stroke();
  g.fillStyle = "#cfd6dd"; g.font = "11px sans-serif"; g.fillText(`peak ${(20 * Math.log10(peak || 1e-9)).toFixed(1)} dBFS`, 6, 14);
}

// In-place radix-2 FFT of re/im (length a power of two).
function fft(re, im) {
  const n = re.length;
  for (let i = 1, j = 0; i < n; i++) {
    let bit = n >> 1;
    for (; j & bit; bit >>= 1) j ^= bit;
    j ^= bit;
    if (i < j) { [re[i], re[j]] = [re[j], re[i]]; [im[i], im[j]] = [im[j], im[i]]; }
  }
  for (let len = 2; len <= n; len <<= 1) {
    const angle = -2 * Math.PI / len;
    for (let i = 0; i < n; i += len) {
      for (let k = 0; k < len / 2; k++) {
        const wr = Math.cos(angle * k), wi = Math.sin(angle * k);
        const ar = re[i + k + len / 2], ai = im[i + k + len / 2];
        const tr = ar * wr - ai * wi, ti = ar * wi + ai * wr;
        re[i + k + len / 2] = re[i + k] - tr; im[i + k + len / 2] = im[i + k] - ti;
        re[i + k] += tr; im[i + k] += ti;
      }
    }
  }
}

function drawSpectrogram(canvas, samples, rate) {
  const g = canvas.getContext("2d");
  const { width, height } = canvas;
  const size = 512, hop = Math.max(128, Math.floor(samples.length / width));
  const columns = Math.max(1, Math.floor((samples.length - size) / hop));
  const image = g.createImageData(width, height);
  const window = Float32Array.from({ length: size }, (_, i) => 0.5 - 0.5 * Math.cos(2 * Math.PI * i / size));
  const spectra = [];
  let top = -Infinity;
  for (let c = 0; c < columns; c++) {
    const re = new Float32Array(size), im = new Float32Array(size);
    for (let i = 0; i < size; i++) re[i] = (samples[c * hop + i] || 0) * window[i];
    fft(re, im);
    const db = new Float32Array(size / 2);
    for (let k = 0; k < size / 2; k++) { db[k] = 10 * Math.log10(re[k] * re[k] + im[k] * im[k] + 1e-12); top = Math.max(top, db[k]); }
    spectra.push(db);
  }
  for (let x = 0; x < width; x++) {
    const db = spectra[Math.min(spectra.length - 1, Math.floor(x * spectra.length / width))];
    for (let y = 0; y < height; y++) {
      const k = Math.floor((height - 1 - y) * (size / 2) / height);
      const level = Math.max(0, Math.min(1, (db[k] - top + 80) / 80));  // an 80 dB range
      const p = (y * width + x) * 4;
      image.data[p] = 255 * Math.min(1, level * 1.6); image.data[p + 1] = 255 * Math.max(0, level * 1.4 - 0.4);
      image.data[p + 2] = 90 + 120 * level * (1 - level); image.data[p + 3] = 255;
    }
  }
  g.putImageData(image, 0, 0);
  g.fillStyle = "#cfd6dd"; g.font = "11px sans-serif"; g.fillText(`0 – ${rate / 2000} kHz`, 6, 14);
}

async function uploadVoice() {
  const file = $("voice-file").files[0];
  const status = $("voice-status");
  if (!file) { status.textContent = "Choose a recording first."; return; }
  const form = new FormData();
  form.append("file", file);
  if ($("voice-name").value.trim()) form.append("name", $("voice-name").value.trim());
  status.textContent = "making the voice…";
  const response = await fetch("/v1/voices", { method: "POST", headers: authHeaders(), body: form });
  if (!response.ok) { status.textContent = await errorMessage(response); status.className = "error"; return; }
  const voice = await response.json();
  status.className = "note";
  status.textContent = `made '${voice.id}' (${voice.duration_s} s of codes, ${voice.semantic_tokens} semantic tokens)`;
  await loadVoices(voice.id);
}

async function detect(file) {
  showError($("detect-error"), "");
  const form = new FormData();
  form.append("file", file);
  const response = await fetch("/v1/audio/detect?spectrum=true", { method: "POST", headers: authHeaders(), body: form });
  if (!response.ok) { showError($("detect-error"), await errorMessage(response)); $("detect-result").hidden = true; return; }
  const result = (await response.json()).data[0];
  if (result.error) { showError($("detect-error"), result.error); $("detect-result").hidden = true; return; }
  if (result.bark_probability === null) {  // too short or too silent to judge: the detector says why
    $("probability").textContent = "no verdict";
    $("verdict").textContent = result.warning || "";
    $("verdict").className = "verdict-not";
  } else {
    const trace = result.encodec_trace == null ? "" : ` (EnCodec trace ${(100 * result.encodec_trace).toFixed(1)}%)`;
    $("probability").textContent = `p(Bark) = ${(100 * result.bark_probability).toFixed(1)}%`;
    $("verdict").textContent = (result.is_bark ? "Bark" : "not Bark") + trace;
    $("verdict").className = result.is_bark ? "verdict-bark" : "verdict-not";
  }
  $("detect-name").textContent = result.path;
  $("detect-result").hidden = false;
  drawSpectrum($("spectrum"), result.spectrum);
}

function drawSpectrum(canvas, spectrum) {
  const g = canvas.getContext("2d");
  const { width, height } = canvas;
  const maxHz = spectrum.hz_per_point * spectrum.prominence_db.length;
  const x = (hz) => hz / maxHz * width;
  g.fillStyle = "#0f1419"; g.fillRect(0, 0, width, height);
  g.setLineDash([4, 4]); g.strokeStyle = "#e5534b"; g.fillStyle = "#e5534b"; g.font = "10px sans-serif";
  for (const hz of spectrum.comb_hz) {
    g.beginPath(); g.moveTo(x(hz), 12); g.lineTo(x(hz), height); g.stroke();
    g.fillText(`${hz / 1000}k`, x(hz) - 8, 10);
  }
  g.setLineDash([]);
  const plot = (values, lo, hi, color) => {
    g.strokeStyle = color; g.beginPath();
    values.forEach((v, i) => {
      const y = height - Math.max(0, Math.min(1, (v - lo) / (hi - lo))) * (height - 16);
      i ? g.lineTo(x(i * spectrum.hz_per_point), y) : g.moveTo(0, y);
    });
    g.stroke();
  };
  plot(spectrum.level_db, -80, 0, "#3d4b59");          // the level, faint
  plot(spectrum.prominence_db, -3, 15, "#6cb6ff");     // how far each bin stands above its neighbourhood
  g.fillStyle = "#cfd6dd"; g.fillText("prominence over the local floor (dB); red: multiples of 600 Hz", 6, height - 6);
}

const drop = $("drop");
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault(); drop.classList.remove("over");
  if (event.dataTransfer.files[0]) detect(event.dataTransfer.files[0]);
});
$("detect-file").addEventListener("change", () => { if ($("detect-file").files[0]) detect($("detect-file").files[0]); });
$("generate").addEventListener("click", generate);
$("download-other").addEventListener("click", downloadOther);
$("voice-upload").addEventListener("click", uploadVoice);
checkHealth();
loadVoices().catch((error) => showError($("generate-error"), error.message));
