// The chat page: ask /chat as a stream (Server-Sent Events read with fetch + ReadableStream), show the answer
// as it arrives, then its sources, route and model; rate it through /feedback.
// The page keeps one conversation per tab: the session id the server issued with the first answer, in
// sessionStorage; the server stores its turns, so follow-ups use the earlier ones, and a reload redraws them
// (POST /conversation). "New conversation" starts another session. The API key (when the server needs one) is
// kept for this tab only (sessionStorage).
"use strict";

const $ = (id) => document.getElementById(id);
const conversation = $("conversation");
let sessionId = sessionStorage.getItem("chatbot-session");  // null until the first answer issues one
localStorage.removeItem("chatbot-api-key");  // older pages kept the key across sessions

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("data-") || key.startsWith("aria-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = sessionStorage.getItem("chatbot-api-key");
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

async function post(path, body) {
  const response = await fetch(path, { method: "POST", headers: headers(), body: JSON.stringify(body) });
  let data = {};
  try { data = await response.json(); } catch (e) { data = { error: "bad_reply", message: response.statusText }; }
  if (response.status === 401) $("keybox").hidden = false;
  return { ok: response.ok, status: response.status, data };
}

function scroll() { window.scrollTo(0, document.body.scrollHeight); }

function forgetSession() {
  sessionId = null;
  sessionStorage.removeItem("chatbot-session");
}

function sourceList(sources) {
  if (!sources.length) return null;
  const list = el("ol", { class: "sources", "data-testid": "sources" });
  for (const s of sources) {
    const title = s.source && /^https?:\/\//.test(s.source)
      ? el("a", { href: s.source, target: "_blank", rel: "noopener", textContent: s.title || s.id })
      : el("span", { textContent: s.title || s.id });
    list.append(el("li", {}, title, el("span", { class: "score", textContent: ` (${s.score.toFixed(2)})` })));
  }
  return list;
}

function rating(traceId) {
  const box = el("div", { class: "rate", "data-testid": "rate" }, "Helpful?");
  const ack = el("span", { class: "ack", "data-testid": "ack" });
  const up = el("button", { type: "button", title: "Good answer", textContent: "▲", "aria-label": "Thumbs up", "data-testid": "thumbs-up" });
  const down = el("button", { type: "button", title: "Bad answer", textContent: "▼", "aria-label": "Thumbs down", "data-testid": "thumbs-down" });
  if (!traceId) { up.disabled = down.disabled = true; ack.textContent = "(no trace id: rating unavailable)"; }
  const send = async (value, button) => {
    up.disabled = down.disabled = true;
    const result = await post("/feedback", { trace_id: traceId, rating: value });
    if (result.ok) {
      button.classList.add("chosen");
      ack.textContent = value === "up" ? "Thanks, noted" : "Thanks, we'll use this to improve";
    } else {
      ack.classList.add("failed");
      ack.textContent = `Not recorded: ${result.data.message || result.data.error}`;
      up.disabled = down.disabled = false;
    }
  };
  up.addEventListener("click", () => send("up", up));
  down.addEventListener("click", () => send("down", down));
  box.append(up, down, ack);
  return box;
}

function meta(a) {
  return el("div", { class: "meta", "data-testid": "meta" },
    el("span", {}, "route ", el("b", { textContent: a.route })),
    el("span", {}, "provider ", el("b", { textContent: a.provider })),
    el("span", {}, "model ", el("b", { textContent: a.model })),
    el("span", { textContent: `${Math.round(a.latency_ms)} ms` }),
    a.fallback ? el("span", { title: a.fallback, textContent: "fallback: " + a.fallback }) : null,
    a.blocked ? el("span", { textContent: "blocked by the guardrail" }) : null,
    a.standalone_question && a.standalone_question !== a.question
      ? el("span", { class: "standalone", "data-testid": "standalone", title: "what retrieval searched",
                     textContent: "retrieved as: " + a.standalone_question }) : null);
}

function showError(text) {
  conversation.append(el("li", { class: "msg error", "data-testid": "error", textContent: text }));
}

function showQuestion(question) {
  conversation.append(el("li", { class: "msg user", "data-testid": "question", textContent: question }));
}

// The rest of an answer under its text: sources, route and model, the rating buttons.
function finishAnswer(item, row) {
  item.classList.toggle("blocked", row.blocked);
  item.append(...[sourceList(row.sources), meta(row), rating(row.trace_id)].filter(Boolean));
}

// A reloaded tab with a stored session: show the conversation's newest turns the server keeps. An id the server
// refuses (another key's, pruned, malformed) is forgotten: the next question starts a new conversation.
async function restore() {
  if (!sessionId || conversation.childElementCount) return;
  $("send").disabled = true;
  try {
    const result = await post("/conversation", { session_id: sessionId });
    if (!result.ok) {
      if (result.data.error === "invalid_session" || result.status === 422) forgetSession();
      else if (result.status !== 401) showError(`Earlier turns not shown: ${result.data.message || result.data.error}`);
      return;
    }
    const turns = result.data.turns;
    if (turns.length && turns[0].turn > 1) {
      conversation.append(el("li", { class: "msg note", "data-testid": "earlier", textContent: "Earlier turns are not shown." }));
    }
    for (const turn of turns) {
      showQuestion(turn.question);
      const item = el("li", { class: "msg bot", "data-testid": "answer" },
        el("div", { class: "text", "data-testid": "answer-text", textContent: turn.answer }));
      finishAnswer(item, turn);
      conversation.append(item);
    }
    scroll();
  } catch (e) {
    showError("Network error: " + e);
  } finally {
    $("send").disabled = false;
  }
}

// Each SSE block ("event: NAME\ndata: JSON") as [name, data]; `buffer` keeps an unfinished block.
function parseEvents(buffer) {
  const blocks = buffer.split("\n\n");
  const rest = blocks.pop();
  const events = blocks.map((block) => {
    let name = "message", data = "";
    for (const line of block.split("\n")) {
      if (line.startsWith("event: ")) name = line.slice(7);
      else if (line.startsWith("data: ")) data += line.slice(6);
    }
    return [name, data ? JSON.parse(data) : {}];
  });
  return [events, rest];
}

// Ask with "stream": true; the answer's text grows with each delta event, the rest comes with the final one.
async function streamAnswer(question) {
  const response = await fetch("/chat", { method: "POST", headers: headers(),
    body: JSON.stringify({ question, ...(sessionId ? { session_id: sessionId } : {}), stream: true }) });
  if (!response.ok || !(response.headers.get("content-type") || "").startsWith("text/event-stream")) {
    let data = {};
    try { data = await response.json(); } catch (e) { data = { error: "bad_reply", message: response.statusText }; }
    if (response.status === 401) $("keybox").hidden = false;
    if (data.error === "invalid_session") forgetSession();
    showError(`${response.status} ${data.error}: ${data.message}`);
    return;
  }
  const text = el("div", { class: "text", "data-testid": "answer-text" });
  const item = el("li", { class: "msg bot streaming", "data-testid": "answer" }, text);
  conversation.append(item);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    let events;
    [events, buffer] = parseEvents(buffer + value);
    for (const [name, data] of events) {
      if (name === "delta") text.textContent += data.text;
      else if (name === "replace") { text.textContent = data.text; item.classList.add("blocked"); }
      else if (name === "final") {
        if (data.session_id) { sessionId = data.session_id; sessionStorage.setItem("chatbot-session", sessionId); }
        text.textContent = data.answer;
        finishAnswer(item, data);
      } else if (name === "error") showError(`${data.error}: ${data.message}`);
      scroll();
    }
  }
  item.classList.remove("streaming");
}

async function ask(event) {
  event.preventDefault();
  const input = $("question");
  const question = input.value.trim();
  if (!question) return;
  showQuestion(question);
  input.value = "";
  $("send").disabled = true;
  scroll();
  try {
    await streamAnswer(question);
  } catch (e) {
    showError("Network error: " + e);
  } finally {
    $("send").disabled = false;
    input.focus();
    scroll();
  }
}

async function status() {
  const s = $("status");
  try {
    const h = await (await fetch("/health", { headers: headers() })).json();
    if (h.ready === undefined) {  // a server with an API key says only status and version without it
      s.textContent = `server ${h.status} (v${h.version}): enter the API key`;
      s.className = "status down";
      $("keybox").hidden = false;
      return;
    }
    const what = [h.backend, h.model_uri, h.model_version ? "v" + h.model_version : null].filter(Boolean).join(" · ");
    s.textContent = h.ready ? `ready — ${what}` : (h.loading ? "loading the model…" : `not ready: ${h.load_error}`);
    s.className = "status " + (h.ready ? "ready" : "down");
    if (h.api_key_required && !sessionStorage.getItem("chatbot-api-key")) $("keybox").hidden = false;
    if (!h.ready) setTimeout(status, 2000);
  } catch (e) { s.textContent = "server unreachable"; s.className = "status down"; setTimeout(status, 5000); }
}

$("ask").addEventListener("submit", ask);
$("new").addEventListener("click", () => {
  forgetSession();
  conversation.replaceChildren();
  $("question").focus();
});
$("savekey").addEventListener("click", () => {
  sessionStorage.setItem("chatbot-api-key", $("apikey").value);
  $("keybox").hidden = true;
  status();
  restore();
});
status();
restore();
