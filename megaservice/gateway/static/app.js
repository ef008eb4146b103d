// The chat page of a megaservice: plain JS, no build step, nothing loaded from elsewhere.
//
// Questions go to the megaservice's OpenAI-compatible route, streamed:
//   POST /v1/chat/completions {messages, stream: true}
//   -> chat.completion.chunk events (the tokens), a last chunk with `sources`, then [DONE];
//      a guardrail's refusal is a chunk with `finish_reason: "content_filter"`.
// Documents go to the pipeline's dataprep through the megaservice (/v1/dataprep/ingest|get|delete).
"use strict";

(() => {
  const config = JSON.parse(document.getElementById("config").textContent || "{}");
  const HISTORY_MESSAGES = 12; // the conversation sent with each question (small models have small contexts)

  const $ = (id) => document.getElementById(id);
  const messagesBox = $("messages");
  const form = $("composer");
  const question = $("question");
  const sendButton = $("send");
  const stopButton = $("stop");

  let history = []; // [{role, content}] of the answered turns (refused ones left out)
  let controller = null; // aborts the answer being streamed

  $("title").textContent = config.name || "megaservice";
  $("subtitle").textContent = config.description || "";
  document.title = `${config.name || "megaservice"} · chat`;

  // -- small DOM helpers -----------------------------------------------------------------------

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function scrollDown() {
    messagesBox.scrollTop = messagesBox.scrollHeight;
  }

  function basename(path) {
    if (!path) return "unknown document";
    const parts = String(path).split(/[\\/]/);
    return parts[parts.length - 1] || String(path);
  }

  function errorText(status, body) {
    if (body && typeof body === "object") {
      if (typeof body.detail === "string") return body.detail;
      if (Array.isArray(body.detail)) return body.detail.map((d) => d.msg || JSON.stringify(d)).join("; ");
      if (body.error && body.error.message) return body.error.message;
      if (typeof body.message === "string") return body.message;
    }
    if (typeof body === "string" && body) return body;
    return `HTTP ${status}`;
  }

  // -- the conversation ------------------------------------------------------------------------

  function addUserMessage(text) {
    $("empty")?.remove();
    const row = element("div", "message user");
    row.appendChild(element("div", "bubble", text));
    messagesBox.appendChild(row);
    scrollDown();
  }

  function addAssistantMessage() {
    const row = element("div", "message assistant streaming");
    row.dataset.testid = "assistant";
    const bubble = element("div", "bubble");
    const answer = element("div", "answer");
    answer.dataset.testid = "answer";
    bubble.appendChild(answer);
    row.appendChild(bubble);
    messagesBox.appendChild(row);
    scrollDown();
    return { row, bubble, answer };
  }

  function showSources(view, sources) {
    if (!sources || !sources.length) return;
    const box = element("div", "sources");
    box.dataset.testid = "sources";
    box.appendChild(element("div", "sources-title", sources.length === 1 ? "Source" : "Sources"));
    const list = element("ol", "sources-list");
    for (const source of sources) {
      const item = element("li", "source");
      item.dataset.testid = "source";
      const details = element("details");
      const summary = element("summary");
      summary.appendChild(element("span", "source-name", basename(source.source)));
      const where = [];
      if (source.page !== null && source.page !== undefined) where.push(`page ${source.page}`);
      if (source.chunk !== null && source.chunk !== undefined) where.push(`chunk ${source.chunk}`);
      if (where.length) summary.appendChild(element("span", "source-where", where.join(" · ")));
      details.appendChild(summary);
      details.appendChild(element("blockquote", "source-text", source.text || ""));
      item.title = source.source || "";
      item.appendChild(details);
      list.appendChild(item);
    }
    box.appendChild(list);
    view.bubble.appendChild(box);
  }

  function markRefused(view, by) {
    let badge = view.bubble.querySelector(".badge");
    if (!badge) {
      view.row.classList.add("refused");
      badge = element("div", "badge");
      badge.dataset.testid = "refused";
      view.bubble.insertBefore(badge, view.answer);
    }
    badge.textContent = by ? `Refused by the ${by}` : "Refused by a guardrail";
  }

  function showError(view, text) {
    view.row.classList.add("failed");
    const box = element("div", "error", text);
    box.dataset.testid = "error";
    view.bubble.appendChild(box);
  }

  // Split a text/event-stream into events as the bytes arrive.
  async function* events(body) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.search(/\r?\n\r?\n/)) >= 0) {
        const raw = buffer.slice(0, cut);
        buffer = buffer.slice(cut).replace(/^\r?\n\r?\n/, "");
        const event = { name: "message", data: [] };
        for (const line of raw.split(/\r?\n/)) {
          if (line.startsWith("data:")) event.data.push(line.slice(5).replace(/^ /, ""));
          else if (line.startsWith("event:")) event.name = line.slice(6).trim();
        }
        if (event.data.length) yield { name: event.name, data: event.data.join("\n") };
      }
    }
  }

  async function ask(text) {
    const messages = [...history.slice(-HISTORY_MESSAGES), { role: "user", content: text }];
    addUserMessage(text);
    const view = addAssistantMessage();
    controller = new AbortController();
    setBusy(true);
    let answer = "";
    let refused = false;
    let failed = false;
    try {
      const response = await fetch("/v1/chat/completions", {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
        body: JSON.stringify({ model: config.name, messages, stream: true }),
        signal: controller.signal,
      });
      if (!response.ok) {
        let body = null;
        try {
          body = await response.json();
        } catch {
          body = null;
        }
        failed = true;
        showError(view, errorText(response.status, body));
        return;
      }
      for await (const event of events(response.body)) {
        if (event.data === "[DONE]") break;
        let chunk;
        try {
          chunk = JSON.parse(event.data);
        } catch {
          continue;
        }
        if (event.name === "error" || chunk.object === "error") {
          failed = true;
          showError(view, errorText(chunk.code || 502, chunk));
          break;
        }
        if (Array.isArray(chunk.sources)) showSources(view, chunk.sources);
        const choice = chunk.choices && chunk.choices[0];
        if (!choice) continue;
        const delta = choice.delta || {};
        if (typeof delta.content === "string" && delta.content) {
          answer += delta.content;
          view.answer.textContent = answer.trimStart();
          scrollDown();
        }
        if (delta.refusal || choice.finish_reason === "content_filter") {
          markRefused(view, chunk.refused_by);
          refused = true;
        }
      }
    } catch (error) {
      if (error.name === "AbortError") {
        view.row.classList.add("stopped");
        view.bubble.appendChild(element("div", "note muted small", "Stopped."));
      } else {
        failed = true;
        showError(view, `The answer could not be read: ${error.message}`);
      }
    } finally {
      view.row.classList.remove("streaming");
      if (!answer && !refused && !failed && !view.row.classList.contains("stopped")) {
        view.answer.textContent = "(no answer)";
      }
      if (answer && !refused && !failed) {
        history.push({ role: "user", content: text }, { role: "assistant", content: answer.trim() });
      }
      controller = null;
      setBusy(false);
      scrollDown();
    }
  }

  function setBusy(busy) {
    sendButton.disabled = busy;
    stopButton.hidden = !busy;
    document.body.classList.toggle("busy", busy);
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = question.value.trim();
    if (!text || controller) return;
    question.value = "";
    autosize();
    ask(text);
  });

  question.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });

  function autosize() {
    question.style.height = "auto";
    question.style.height = `${Math.min(question.scrollHeight, 200)}px`;
  }
  question.addEventListener("input", autosize);

  stopButton.addEventListener("click", () => controller?.abort());

  $("new-chat").addEventListener("click", () => {
    controller?.abort();
    history = [];
    messagesBox.replaceChildren();
    const empty = element("div", "empty");
    empty.id = "empty";
    empty.appendChild(element("h2", "", "Ask about your documents"));
    empty.appendChild(element("p", "muted", "A new conversation: earlier questions are forgotten."));
    messagesBox.appendChild(empty);
    question.focus();
  });

  // -- documents -------------------------------------------------------------------------------

  const panel = $("documents-panel");
  const fileInput = $("file");
  const drop = $("drop");

  if (!config.dataprep) {
    panel.classList.add("disabled");
    drop.hidden = true;
    $("refresh").hidden = true;
    $("documents-note").textContent = "This pipeline has no dataprep service: documents cannot be uploaded here.";
  } else {
    fileInput.addEventListener("change", () => {
      if (fileInput.files.length) upload(fileInput.files[0]);
      fileInput.value = "";
    });
    drop.addEventListener("dragover", (event) => {
      event.preventDefault();
      drop.classList.add("over");
    });
    drop.addEventListener("dragleave", () => drop.classList.remove("over"));
    drop.addEventListener("drop", (event) => {
      event.preventDefault();
      drop.classList.remove("over");
      if (event.dataTransfer.files.length) upload(event.dataTransfer.files[0]);
    });
    $("refresh").addEventListener("click", listDocuments);
    listDocuments();
  }

  function upload(file) {
    const box = $("upload");
    const bar = $("upload-progress");
    const status = $("upload-status");
    const percent = $("upload-percent");
    box.hidden = false;
    box.className = "upload";
    $("upload-name").textContent = file.name;
    bar.value = 0;
    percent.textContent = "0%";
    status.textContent = "Uploading…";
    drop.classList.add("busy");

    const body = new FormData();
    body.append("files", file, file.name);
    const request = new XMLHttpRequest();
    request.open("POST", "/v1/dataprep/ingest");
    request.upload.addEventListener("progress", (event) => {
      if (!event.lengthComputable) return;
      const done = Math.round((event.loaded / event.total) * 100);
      bar.value = done;
      percent.textContent = `${done}%`;
      if (done >= 100) status.textContent = "Reading and indexing the document…";
    });
    request.addEventListener("load", () => {
      drop.classList.remove("busy");
      let answer = null;
      try {
        answer = JSON.parse(request.responseText);
      } catch {
        answer = request.responseText;
      }
      if (request.status >= 200 && request.status < 300) {
        bar.value = 100;
        percent.textContent = "100%";
        box.classList.add("done");
        status.textContent = `Ingested ${file.name}. Ask about it.`;
        listDocuments();
      } else {
        box.classList.add("failed");
        status.textContent = `Upload failed (${request.status}): ${errorText(request.status, answer)}`;
      }
    });
    request.addEventListener("error", () => {
      drop.classList.remove("busy");
      box.classList.add("failed");
      status.textContent = "Upload failed: the megaservice could not be reached.";
    });
    request.send(body);
  }

  function documentName(item) {
    if (typeof item === "string") return item;
    return item.name || item.file_name || item.source || item.id || JSON.stringify(item);
  }

  async function listDocuments() {
    const list = $("documents");
    const note = $("documents-note");
    try {
      const response = await fetch("/v1/dataprep/get", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: "{}",
      });
      const body = await response.json();
      if (!response.ok) {
        note.textContent = `The list could not be read: ${errorText(response.status, body)}`;
        return;
      }
      const items = Array.isArray(body) ? body : body.files || body.data || [];
      list.replaceChildren();
      for (const item of items) {
        const name = documentName(item);
        const row = element("li", "document");
        row.appendChild(element("span", "document-name", basename(name)));
        row.title = name;
        const remove = element("button", "ghost small", "Delete");
        remove.type = "button";
        remove.addEventListener("click", () => removeDocument(name));
        row.appendChild(remove);
        list.appendChild(row);
      }
      note.textContent = items.length ? "" : "No documents yet.";
    } catch (error) {
      note.textContent = `The list could not be read: ${error.message}`;
    }
  }

  async function removeDocument(name) {
    const response = await fetch("/v1/dataprep/delete", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ file_path: name }),
    });
    if (!response.ok) {
      let body = null;
      try {
        body = await response.json();
      } catch {
        body = null;
      }
      $("documents-note").textContent = `Could not delete ${basename(name)}: ${errorText(response.status, body)}`;
    }
    listDocuments();
  }

  question.focus();
})();
