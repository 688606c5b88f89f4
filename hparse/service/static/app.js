// hparse web page: upload a photo to POST /v1/parse, draw the parts over it, a legend with per-class toggles,
// and links to the label PNG (pixel = class id) and the overlay with its legend.
"use strict";

const ALPHA = 0.55;
const $ = (id) => document.getElementById(id);
const view = { photo: null, classMap: null, classes: [], enabled: new Set(), width: 0, height: 0 };

function setState(state, message) {
  document.body.dataset.state = state;
  $("status").textContent = message || "";
}

async function loadModels() {
  try {
    const response = await fetch("/v1/models");
    const models = await response.json();
    for (const m of models) {
      const option = document.createElement("option");
      option.value = m.name;
      option.textContent = `${m.name} (${m.label_set}, ${m.classes.length} classes)`;
      $("model").append(option);
    }
  } catch (err) {
    setState("error", `cannot list the models: ${err}`);
  }
}

function loadImage(src) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error("the browser cannot show this image"));
    img.src = src;
  });
}

function base64Blob(b64, type) {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  return new Blob([bytes], { type });
}

async function buildClassMap(masks, width, height) {
  // one class id per pixel, from the binary masks (255 = the class)
  const map = new Uint8Array(width * height);
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  for (const [id, b64] of Object.entries(masks)) {
    const img = await loadImage(`data:image/png;base64,${b64}`);
    ctx.clearRect(0, 0, width, height);
    ctx.drawImage(img, 0, 0);
    const px = ctx.getImageData(0, 0, width, height).data;
    for (let i = 0; i < map.length; i++) if (px[4 * i] > 127) map[i] = Number(id);
  }
  return map;
}

function draw() {
  const canvas = $("view");
  const ctx = canvas.getContext("2d");
  canvas.width = view.width;
  canvas.height = view.height;
  ctx.drawImage(view.photo, 0, 0, view.width, view.height);
  const image = ctx.getImageData(0, 0, view.width, view.height);
  const px = image.data;
  const colour = new Map(view.classes.map((c) => [c.id, c.color]));
  for (let i = 0; i < view.classMap.length; i++) {
    const id = view.classMap[i];
    if (id === 0 || !view.enabled.has(id)) continue;
    const [r, g, b] = colour.get(id);
    px[4 * i] = px[4 * i] * (1 - ALPHA) + r * ALPHA;
    px[4 * i + 1] = px[4 * i + 1] * (1 - ALPHA) + g * ALPHA;
    px[4 * i + 2] = px[4 * i + 2] * (1 - ALPHA) + b * ALPHA;
  }
  ctx.putImageData(image, 0, 0);
}

function showLegend(classes, total) {
  const legend = $("legend");
  legend.replaceChildren();
  for (const c of classes) {
    if (c.id === 0) continue; // background stays the plain photo
    const li = document.createElement("li");
    li.dataset.classId = c.id;
    li.dataset.name = c.name;
    const box = document.createElement("input");
    box.type = "checkbox";
    box.checked = true;
    box.title = `show ${c.name}`;
    box.addEventListener("change", () => {
      if (box.checked) view.enabled.add(c.id);
      else view.enabled.delete(c.id);
      draw();
    });
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = `rgb(${c.color.join(",")})`;
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = c.name;
    const share = document.createElement("span");
    share.className = "share";
    share.textContent = `${((100 * c.pixels) / total).toFixed(1)} %`;
    li.append(box, swatch, name, share);
    legend.append(li);
  }
}

function setAll(on) {
  for (const box of document.querySelectorAll("#legend input")) box.checked = on;
  view.enabled = new Set(on ? view.classes.map((c) => c.id) : []);
  draw();
}

async function parse(file) {
  setState("busy", `parsing ${file.name}...`);
  const query = new URLSearchParams({ model: $("model").value || "", tta: $("tta").checked,
                                      outputs: "label,overlay,masks,json" });
  if (!query.get("model")) query.delete("model");
  const form = new FormData();
  form.append("file", file);
  try {
    const response = await fetch(`/v1/parse?${query}`, { method: "POST", body: form });
    const body = await response.json();
    if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
    await show(file, body);
    setState("done", `${file.name}: ${body.width}x${body.height}, ${body.classes.length - 1} classes besides background`);
  } catch (err) {
    setState("error", `could not parse ${file.name}: ${err.message}`);
  }
}

async function show(file, body) {
  view.photo = await loadImage(URL.createObjectURL(file));
  view.width = body.width;
  view.height = body.height;
  view.classes = body.classes;
  view.enabled = new Set(body.classes.map((c) => c.id));
  view.classMap = await buildClassMap(body.masks_png, body.width, body.height);
  const stem = file.name.replace(/\.[^.]+$/, "");
  const label = $("download-label");
  label.href = URL.createObjectURL(base64Blob(body.label_png, "image/png"));
  label.download = `${stem}_label.png`;
  const overlay = $("download-overlay");
  overlay.href = URL.createObjectURL(base64Blob(body.overlay_jpeg, "image/jpeg"));
  overlay.download = `${stem}_overlay.jpg`;
  showLegend(body.classes, body.width * body.height);
  $("result").hidden = false;
  draw();
}

function wireDrop() {
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files.length) parse(e.dataTransfer.files[0]);
  });
  $("file").addEventListener("change", (e) => { if (e.target.files.length) parse(e.target.files[0]); });
  $("all").addEventListener("click", () => setAll(true));
  $("none").addEventListener("click", () => setAll(false));
}

wireDrop();
loadModels();
