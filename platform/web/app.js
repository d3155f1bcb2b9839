// Ember's chat page: plain JavaScript against the server's own API (no framework, no build step).
"use strict";
const $ = (id) => document.getElementById(id);
const state = { key: localStorage.getItem("ember-key") || "", session: null, busy: null, me: null };

// Answers are Markdown. Everything is HTML-escaped first; the few constructs below then add their own tags,
// so nothing the model writes can become markup or script. Links only to http(s); [n] marks cite passages.
function escapeHtml(s) {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;").replace(/'/g, "&#39;");
}

function inline(s) {
  const codes = [];
  s = s.replace(/`([^`\n]+)`/g, (_, c) => { codes.push(c); return `\u0000${codes.length - 1}\u0000`; });
  s = s.replace(/\*\*([^*\n]+)\*\*/g, "<strong>$1</strong>")
    .replace(/(^|[^*\w])\*([^*\n]+)\*(?!\w)/g, "$1<em>$2</em>")
    .replace(/\[([^\]\n]+)\]\((https?:\/\/[^\s)]+)\)/g, '<a href="$2" rel="noopener noreferrer" target="_blank">$1</a>')
    .replace(/\[(\d{1,3}(?:,\s*\d{1,3})*)\]/g, '<span class="cite-ref">[$1]</span>');
  return s.replace(/\u0000(\d+)\u0000/g, (_, i) => `<code>${codes[+i]}</code>`);
}

function renderMarkdown(text) {
  const lines = escapeHtml(text).split("\n");
  const out = [];
  let list = null, para = [], fence = null;
  const flush = () => {
    if (para.length) { out.push(`<p>${inline(para.join("\n"))}</p>`); para = []; }
    if (list) { out.push(`</${list}>`); list = null; }
  };
  for (const line of lines) {
    if (fence !== null) {
      if (/^\s*```/.test(line)) { out.push(`<pre><code>${fence.join("\n")}</code></pre>`); fence = null; }
      else fence.push(line);
      continue;
    }
    if (/^\s*```/.test(line)) { flush(); fence = []; continue; }
    const heading = line.match(/^(#{1,4})\s+(.*)$/);
    const item = line.match(/^\s*(?:([-*+])|(\d+)[.)])\s+(.*)$/);
    if (heading) { flush(); out.push(`<h${heading[1].length + 2}>${inline(heading[2])}</h${heading[1].length + 2}>`); }
    else if (item) {
      if (para.length) { out.push(`<p>${inline(para.join("\n"))}</p>`); para = []; }
      const kind = item[1] ? "ul" : "ol";
      if (list !== kind) { if (list) out.push(`</${list}>`); out.push(`<${kind}>`); list = kind; }
      out.push(`<li>${inline(item[3])}</li>`);
    } else if (!line.trim()) flush();
    else { if (list) { out.push(`</${list}>`); list = null; } para.push(line); }
  }
  if (fence !== null) out.push(`<pre><code>${fence.join("\n")}</code></pre>`);  // still streaming
  flush();
  return out.join("");
}

function setText(el, text) {
  el.dataset.raw = text;
  el.innerHTML = renderMarkdown(text);
}

function headers(extra = {}) {
  return state.key ? { ...extra, Authorization: `Bearer ${state.key}` } : extra;
}

async function api(path, options = {}) {
  const r = await fetch(path, { ...options, headers: headers(options.headers || {}) });
  if (r.status === 401) { $("key-box").hidden = false; }
  if (!r.ok) {
    let message = `${r.status} ${r.statusText}`;
    try { message = (await r.json()).error.message; } catch (e) { /* not JSON */ }
    throw new Error(message);
  }
  return r;
}

async function loadCollections(select) {
  const data = (await (await api("/v1/collections")).json()).data;
  const box = $("collection");
  const current = select || box.value;
  box.innerHTML = "";
  box.append(new Option("(no documents: plain chat)", ""));
  for (const c of data) {
    const option = new Option(`${c.name} (${c.documents} docs)`, c.name);
    option.dataset.access = c.access || "owner";
    box.append(option);
  }
  if ([...box.options].some((o) => o.value === current)) box.value = current;
  else if (data.length) box.value = data[0].name;
  showRights();
}

// Who is signed in (a team server) and what they may do: viewers get no upload box, and editors may add
// documents only to collections they own or were granted write on (or to a new one).
async function loadMe() {
  state.me = await (await api("/v1/me")).json();
  const who = $("whoami");
  who.hidden = !state.me.team;
  who.textContent = state.me.team ? `Signed in as ${state.me.name || "admin key"} (${state.me.role})` : "";
}

function showRights() {
  if (!state.me) return;
  const writable = [...$("collection").options].some((o) => ["owner", "write"].includes(o.dataset.access));
  $("upload-box").hidden = !(state.me.can_create_collections || writable);
  $("new-collection").hidden = !state.me.can_create_collections;
}

async function loadSessions() {
  const data = (await (await api("/v1/sessions")).json()).data;
  const list = $("sessions");
  list.innerHTML = "";
  for (const s of data) {
    const li = document.createElement("li");
    li.textContent = s.title;
    li.title = s.collection ? `${s.title} — ${s.collection}` : s.title;
    li.dataset.id = s.id;
    li.className = s.id === state.session ? "active" : "";
    li.onclick = () => openSession(s.id);
    list.append(li);
  }
}

async function openSession(id) {
  const s = await (await api(`/v1/sessions/${encodeURIComponent(id)}`)).json();
  state.session = s.id;
  $("messages").innerHTML = "";
  if (s.collection) await loadCollections(s.collection);
  for (const m of s.messages) {
    const div = addMessage(m.role, m.content);
    if (m.citations) showCitations(div, m.citations);
  }
  loadSessions();
}

function addMessage(role, text) {
  const div = document.createElement("div");
  div.className = `msg ${role}`;
  const body = document.createElement("div");
  body.className = "text";
  if (role === "assistant") setText(body, text); else body.textContent = text;
  div.append(body);
  $("messages").append(div);
  div.scrollIntoView({ block: "end" });
  return div;
}

function showCitations(div, citations) {
  if (!citations || !citations.length) return;
  const box = document.createElement("div");
  box.className = "citations";
  // the passages the answer cites as [n] first, marked; then the others it was given
  const ordered = [...citations].sort((x, y) => (y.cited ? 1 : 0) - (x.cited ? 1 : 0) || x.n - y.n);
  for (const c of ordered) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = c.cited ? "citation cited" : "citation";
    const file = c.source.split("/").pop();
    b.textContent = `[${c.n}] ${file} · ${c.location}`;
    b.title = `similarity ${c.relevance.toFixed(2)}, characters ${c.start}–${c.end}`;
    b.onclick = () => openPassage(c);
    box.append(b);
  }
  div.append(box);
}

function openPassage(c) {
  $("passage-title").textContent = `[${c.n}] ${c.source.split("/").pop()}`;
  const page = c.page ? `page ${c.page} · ` : "";
  $("passage-where").textContent = `${c.location} · ${page}characters ${c.start}–${c.end} · similarity ${c.relevance.toFixed(2)}`;
  $("passage-text").textContent = c.text;
  $("passage").showModal();
}

async function ask(question) {
  const collection = $("collection").value;
  if (!state.session) {
    const s = await (await api("/v1/sessions", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ title: "New chat", collection: collection || null }),
    })).json();
    state.session = s.id;
  }
  addMessage("user", question);
  const div = addMessage("assistant", "");
  const text = div.querySelector(".text");
  const controller = new AbortController();
  state.busy = controller;
  $("send").disabled = true; $("stop").hidden = false;
  try {
    const model = collection ? `ember-rag:${collection}` : await defaultModel();
    const body = { model, stream: true, session_id: state.session, messages: [{ role: "user", content: question }] };
    const r = await api("/v1/chat/completions", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
      signal: controller.signal,
    });
    const reader = r.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, cut); buffer = buffer.slice(cut + 2);
        if (!event.startsWith("data: ")) continue;
        const data = event.slice(6);
        if (data === "[DONE]") continue;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message);
        const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
        if (delta && delta.content) { setText(text, (text.dataset.raw || "") + delta.content); div.scrollIntoView({ block: "end" }); }
        if (chunk.citations) showCitations(div, chunk.citations);
      }
    }
    div.dataset.done = "true";
  } catch (e) {
    if (e.name !== "AbortError") { div.classList.add("error"); text.textContent = `${text.dataset.raw || ""}\n${e.message}`; }
    div.dataset.done = "true";
  } finally {
    state.busy = null;
    $("send").disabled = false; $("stop").hidden = true;
    loadSessions();
  }
}

let modelName = null;
async function defaultModel() {
  if (!modelName) modelName = (await (await api("/health")).json()).model;
  return modelName;
}

async function upload() {
  const files = $("file").files;
  const name = $("new-collection").value.trim() || $("collection").value;
  const status = $("upload-status");
  if (!files.length) { status.textContent = "Choose one or more files first."; return; }
  if (!name) { status.textContent = "Name a new collection first."; return; }
  const form = new FormData();
  for (const f of files) form.append("file", f);
  status.textContent = `Uploading ${files.length} file(s)…`;
  try {
    let job = await (await api(`/v1/collections/${encodeURIComponent(name)}/files`, { method: "POST", body: form })).json();
    status.textContent = "Indexing…";
    while (job.status === "queued" || job.status === "running") {
      await new Promise((r) => setTimeout(r, 300));
      job = await (await api(`/v1/collections/${encodeURIComponent(name)}/jobs/${job.id}`)).json();
    }
    if (job.status === "failed") throw new Error(job.error);
    const skipped = job.skipped.map((s) => `\nskipped ${s.file}: ${s.reason}`).join("");
    status.textContent = `Indexed ${job.added.length + job.updated.length} file(s), ${job.chunks} chunks.${skipped}`;
    status.dataset.done = "true";
    $("file").value = ""; $("new-collection").value = "";
    await loadCollections(name);
  } catch (e) {
    status.textContent = `Upload failed: ${e.message}`;
  }
}

$("ask").onsubmit = (ev) => {
  ev.preventDefault();
  const q = $("question").value.trim();
  if (!q || state.busy) return;
  $("question").value = "";
  ask(q);
};
$("question").onkeydown = (ev) => {
  if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); $("ask").requestSubmit(); }
};
$("stop").onclick = () => state.busy && state.busy.abort();
$("upload").onclick = upload;
$("new-chat").onclick = () => { state.session = null; $("messages").innerHTML = ""; loadSessions(); };
$("save-key").onclick = () => {
  state.key = $("api-key").value.trim();
  localStorage.setItem("ember-key", state.key);
  $("key-box").hidden = true;
  init();
};

async function init() {
  try { await loadMe(); await loadCollections(); await loadSessions(); } catch (e) { $("upload-status").textContent = e.message; }
}
init();
