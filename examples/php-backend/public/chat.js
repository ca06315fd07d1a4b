// The chat page of the PHP example: one WebSocket to moonwire
// (scripts/chat.lua, docs/chat-protocol.md) with a token from token.php.
// Before each connection it asks the PHP side for a fresh token (its
// session cookie goes with the request); moonwire checks the token and
// takes the nick from it. Announcements the admin page pushes come as
// room messages of type "announcement".
"use strict";

const $ = (id) => document.getElementById(id);
const main = $("chat");
const ROOM = main.dataset.room;
const WS_URL = `${location.protocol === "https:" ? "wss" : "ws"}://${location.hostname}:${main.dataset.wsPort}/chat`;
let ws = null;
let attempt = 0;
let members = [];
const seen = new Set(); // "epoch offset" of the room messages shown: a reconnect's history repeats some


function status(state, text) {
  $("status").dataset.state = state;
  $("status").textContent = text;
  $("send").disabled = state !== "connected";
}

function line(cls, parts) {
  const li = document.createElement("li");
  li.className = cls;
  for (const [c, text] of parts) {
    const span = document.createElement("span");
    span.className = c;
    span.textContent = text;
    li.append(span, " ");
  }
  $("log").append(li);
  $("log").scrollTop = $("log").scrollHeight;
}

function showMembers() {
  $("members").replaceChildren(...members.map((n) => {
    const li = document.createElement("li");
    li.textContent = n;
    return li;
  }));
}

function roomMessage(m) {
  if (m.offset !== undefined) {
    const key = `${m.epoch} ${m.offset}`;
    if (seen.has(key)) return;
    seen.add(key);
  }
  if (m.type === "say") line("msg", [["from", m.from], ["text", m.text]]);
  else if (m.type === "announcement") line("announcement", [["from", `${m.from} (via ${m.via})`], ["text", m.text]]);
  else if (m.type === "presence") {
    if (m.event === "join" && !members.includes(m.nick)) members = [...members, m.nick].sort();
    if (m.event === "leave") members = members.filter((n) => n !== m.nick);
    showMembers();
    line("note", [["text", `${m.nick} ${m.event === "join" ? "joined" : "left"}`]]);
  }
}

const handlers = {
  welcome() { status("connected", "connected"); attempt = 0; },
  joined(m) { members = m.members.slice(); showMembers(); },
  history(m) { for (const x of m.messages) if (x.type !== "presence") roomMessage(x); },
  say: roomMessage,
  announcement: roomMessage,
  presence: roomMessage,
  error(m) { line("error", [["code", m.code], ["text", m.message]]); },
};

async function connect() {
  status("connecting", "connecting…");
  let res;
  try {
    res = await fetch("/token.php", { credentials: "same-origin", cache: "no-store" });
  } catch {
    return retry("cannot reach the PHP backend");
  }
  if (res.status === 401) {
    location.href = "/index.php"; // the session is gone: log in again
    return;
  }
  const { token } = await res.json();
  ws = new WebSocket(`${WS_URL}?room=${encodeURIComponent(ROOM)}&token=${encodeURIComponent(token)}`);
  ws.onmessage = (e) => {
    const m = JSON.parse(e.data);
    if (handlers[m.type]) handlers[m.type](m);
  };
  ws.onclose = (e) => {
    ws = null;
    retry(e.code === 1006 ? "connection lost" : `closed (${e.code} ${e.reason})`);
  };
}

function retry(why) {
  const delay = Math.min(30000, 500 * 2 ** attempt++) * (0.5 + Math.random() / 2);
  status("reconnecting", `${why}; reconnecting in ${Math.ceil(delay / 1000)} s`);
  setTimeout(connect, delay);
}

$("send-form").onsubmit = (e) => {
  e.preventDefault();
  const text = $("text").value;
  if (!ws || !text.trim()) return;
  ws.send(JSON.stringify({ type: "say", room: ROOM, text }));
  $("text").value = "";
};

connect();
