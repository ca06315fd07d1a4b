// The moonwire chat page: one WebSocket to scripts/chat.lua, whose JSON
// protocol is docs/chat-protocol.md. No framework, no build step.
//
// The page keeps what the user wants (a nick, a set of rooms) apart from what
// the server has granted on this connection (room.joined), so that after a
// reconnect it can ask for all of it again: the nick first, then one join of
// every room it was in, with its position in each room (the offset and epoch
// of what it has), so that the server sends exactly what it missed.
"use strict";

const BACKOFF_BASE_MS = 500;   // first retry after 250 to 500 ms
const BACKOFF_CAP_MS = 30000;  // never wait more than 15 to 30 s
const STABLE_MS = 5000;        // a connection that lived this long resets the backoff
const MAX_ERRORS = 4;          // error notices kept on screen

const $ = (id) => document.getElementById(id);
const ui = {
  status: $("status"), statusText: $("status-text"), countdown: $("countdown"), retryNow: $("retry-now"),
  errors: $("errors"), login: $("login"), loginForm: $("login-form"),
  loginNick: $("login-nick"), loginRooms: $("login-rooms"), chat: $("chat"),
  rooms: $("rooms"), joinForm: $("join-form"), joinRoom: $("join-room"),
  members: $("members"), membersCount: $("members-count"),
  nickForm: $("nick-form"), nickInput: $("nick-input"),
  roomTitle: $("room-title"), logs: $("logs"), roomNote: $("room-note"),
  roomNoteText: $("room-note-text"), roomRejoin: $("room-rejoin"),
  sendForm: $("send-form"), text: $("text"), send: $("send"),
  privateTo: $("private-to"), privateNick: $("private-nick"), privateCancel: $("private-cancel"),
};

const state = {
  nick: null,          // the nick we use: asked for at login, then as the server confirmed it
  rooms: new Map(),    // name -> room (see newRoom)
  current: null,       // the room shown
  privateTo: null,     // a member's nick while writing privately
  ws: null,
  connected: false,    // welcome received on state.ws
  delayed: false,      // the server said its messages to the other servers wait (Redis away)
  attempt: 0,          // reconnect attempts since the last stable connection
  retryTimer: 0,
  retryAt: 0,          // when the next attempt starts
  ticker: 0,           // updates the countdown once a second
  openedAt: 0,
  nextId: 1,
  pending: new Map(),  // request id -> the request, to make sense of its reply or error
};

function make(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text != null) e.textContent = text;
  return e;
}

// --- Connection ---------------------------------------------------------------

function socketUrl() {
  return (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/chat";
}

function connect() {
  clearTimeout(state.retryTimer);
  clearInterval(state.ticker);
  ui.countdown.textContent = "";
  ui.retryNow.hidden = true;
  if (!location.host) {
    setStatus("offline", "open this page through moonwire (http://…), not as a file");
    return;
  }
  setStatus("connecting", state.attempt ? `reconnecting (attempt ${state.attempt + 1})…` : "connecting…");
  const ws = new WebSocket(socketUrl());
  state.ws = ws;
  ws.onopen = () => { state.openedAt = Date.now(); };
  ws.onmessage = (e) => { if (ws === state.ws) receive(e.data); };
  ws.onclose = (e) => { if (ws === state.ws) lost(e); };
  // onerror always comes with a close; the close says what happened.
}

function lost(e) {
  const lived = state.openedAt ? Date.now() - state.openedAt : 0;
  state.ws = null;
  state.connected = false;
  state.openedAt = 0;
  state.pending.clear();
  for (const room of state.rooms.values()) {
    if (room.joined) note(room, "disconnected from the server");
    room.joined = room.synced = room.filling = false;
    room.joinNote = null;
  }
  if (lived >= STABLE_MS) state.attempt = 0;
  // Capped exponential backoff with "equal jitter": half fixed, half random,
  // so that clients dropped together do not all come back together.
  const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** state.attempt);
  const delay = Math.round(ceiling / 2 + Math.random() * ceiling / 2);
  state.attempt++;
  const why = e.code !== 1006 ? `closed by the server (${e.code}${e.reason ? " " + e.reason : ""})`
    : lived ? "connection lost" : "cannot reach the server";
  setStatus("reconnecting", `${why}; reconnecting`);
  ui.retryNow.hidden = false;
  state.retryAt = Date.now() + delay;
  state.retryTimer = setTimeout(connect, delay);
  // The countdown is not in the live region: a screen reader hears the status once.
  const tick = () => { ui.countdown.textContent = `in ${Math.ceil((state.retryAt - Date.now()) / 1000)} s`; };
  tick();
  state.ticker = setInterval(tick, 1000);
  render();
}

function setStatus(name, text) {
  ui.status.dataset.state = name;
  ui.statusText.textContent = text;
  const online = name === "connected" || name === "delayed";
  ui.send.disabled = !online;
  ui.text.placeholder = online ? "Write a message" : "Not connected…";
}

// Connected: green, or amber while the server's messages to the rest of the
// cluster wait for it (a say then shows as delayed until it comes back).
function showConnected() {
  if (state.delayed) setStatus("delayed", "connected; delivery delayed: the server waits for the rest of the cluster");
  else setStatus("connected", "connected");
}

// Sends a request with a fresh id; returns the id, or null when offline.
function request(msg) {
  if (!state.connected) {
    showError({ code: "offline", message: "not connected to the server: nothing was sent (it reconnects on its own)" });
    return null;
  }
  msg.id = state.nextId++;
  state.pending.set(msg.id, msg);
  state.ws.send(JSON.stringify(msg));
  return msg.id;
}

// A room as a join names it: with our position once we have one, so that
// the history that comes with the join is what we missed.
function joinItem(room) {
  return room.epoch !== null ? { room: room.name, since: room.offset, epoch: room.epoch } : room.name;
}

function joinWanted() {
  const items = [...state.rooms.values()].filter((r) => r.want && !r.joined).map(joinItem);
  if (items.length) request({ type: "join", rooms: items });
}

const itemName = (item) => (typeof item === "string" ? item : item.room);

// --- Messages from the server ---------------------------------------------------

const handlers = {
  welcome() {
    state.connected = true;
    state.delayed = false; // a delayed server says so right after the welcome
    showConnected();
    ui.retryNow.hidden = true;
    request({ type: "nick", nick: state.nick });
    joinWanted();
  },
  nick_set(m) {
    state.nick = m.nick;
    ui.nickInput.value = m.nick;
    if (m.old && m.old !== m.nick) {
      for (const room of state.rooms.values()) renameMember(room, m.old, m.nick);
      note(currentRoom(), `you are now known as ${m.nick}`);
    }
  },
  joined(m) {
    const room = roomFor(m.room);
    room.joined = room.want = true;
    room.synced = false; // until its history comes
    room.members = m.members.slice();
    const cur = currentRoom();
    if (!cur || (!cur.joined && !cur.want)) state.current = room.name;
    // Told below the room's history, which comes next: what was said before
    // we came goes above the news that we came.
    room.joinNote = `you joined ${room.name} as ${m.nick}`;
  },
  history(m) {
    const room = state.rooms.get(m.room);
    if (!room) return;
    // After a first history, a history that is not a recovery lost something.
    if (m.epoch !== undefined) {
      if (room.known && m.epoch !== room.epoch) {
        note(room, "the server's history of this room started over: earlier messages may be missing");
        restart(room, m.epoch);
      } else if (room.known && !m.recovered) {
        note(room, "some messages from while you were away are no longer kept");
      }
      room.epoch = m.epoch;
    }
    if (m.truncated) note(room, "older messages were left out of this history");
    for (const x of m.messages) roomMessage(room, x, true);
    // Everything up to the room's last offset is now on screen or gone for good.
    if (m.offset !== undefined) advance(room, m.offset);
    room.synced = room.known = true;
    room.filling = false;
    if (room.joinNote) {
      note(room, room.joinNote);
      room.joinNote = null;
    }
  },
  left(m) { removeRoom(m.room); },
  say(m) { const room = state.rooms.get(m.room); if (room) roomMessage(room, m, false); },
  // Our say comes back like everyone's, with its offset; a delayed one
  // (waiting for the cluster) shows as pending until then.
  sent(m) {
    if (!m.delayed) return;
    const req = state.pending.get(m.ref);
    const room = state.rooms.get(m.room);
    if (req && room) addPending(room, req.text);
    if (!state.delayed) { state.delayed = true; showConnected(); }
  },
  delivery(m) {
    state.delayed = Boolean(m.delayed);
    if (state.connected) showConnected();
  },
  private(m) { const room = state.rooms.get(m.room); if (room) addMessage(room, m); },
  members(m) { const room = state.rooms.get(m.room); if (room) room.members = m.members.slice(); },
  presence(m) { const room = state.rooms.get(m.room); if (room) roomMessage(room, m, false); },
  pong() {},
  error(m) {
    showError(m);
    const req = m.ref != null ? state.pending.get(m.ref) : undefined;
    if (!req) return;
    if (req.type === "join") {
      // A room's own failure names it; one for the whole request (nick_required) does not.
      const names = (req.rooms || [req.room]).map(itemName);
      const badNames = [];
      for (const name of m.room ? [failedName(m.room, names)] : names) {
        const room = state.rooms.get(name);
        if (!room || room.joined) continue;
        if (m.code === "bad_room") {
          // No join of that name can work: the room goes, its name back to the join field to fix.
          removeRoom(name);
          badNames.push(name);
          continue;
        }
        room.want = false;
        note(room, `could not join: ${m.message}`);
      }
      if (badNames.length) {
        ui.joinRoom.value = badNames.join(", ");
        ui.joinRoom.focus();
        remember();
      }
    } else if (req.type === "leave" && m.code === "not_in_room") {
      removeRoom(m.room || req.room);
    } else if (req.type === "nick") {
      ui.nickInput.value = state.nick || "";
    } else if ((req.type === "say" || req.type === "private") && ui.text.value === "") {
      ui.text.value = req.text; // give the refused text back to fix it
    }
  },
};

// The room a join's error names: the server cuts a long name short with "…".
function failedName(named, asked) {
  if (asked.includes(named) || !named.endsWith("…")) return named;
  return asked.find((n) => n.startsWith(named.slice(0, -1))) || named;
}

function receive(data) {
  let m;
  try {
    m = JSON.parse(data);
  } catch {
    showError({ code: "bad_reply", message: "the server sent something that is not JSON" });
    return;
  }
  const handler = handlers[m.type];
  if (handler) handler(m);
  // A join or leave of several rooms has a reply per room: keep those until the next connection.
  const req = m.ref != null ? state.pending.get(m.ref) : undefined;
  if (req && req.type !== "join" && req.type !== "leave") state.pending.delete(m.ref);
  render();
}

// --- Rooms and members ------------------------------------------------------------

function newRoom(name) {
  const log = make("ol", "log");
  log.dataset.room = name;
  log.setAttribute("role", "log");
  log.setAttribute("aria-live", "polite");
  log.setAttribute("aria-label", `Messages in ${name}`);
  log.hidden = true;
  log.tabIndex = 0;
  ui.logs.append(log);
  // The position: the room's messages carry an offset (1, 2, 3... with no
  // gaps) within an epoch. offset: every message up to it is on screen (or
  // no longer kept); shown: the offsets on screen, so that a message that
  // comes twice (in a history and live) shows once; last: the highest shown.
  // synced: the join's history came, so a gap in the offsets is a loss to
  // fill; known: a history came once (a later one that is not a recovery
  // means something was lost). stick: the list follows new messages while
  // it is scrolled to the bottom.
  const room = {
    name, want: false, joined: false, members: [], log, unread: 0, stick: true,
    epoch: null, offset: 0, shown: new Set(), last: 0, synced: false, filling: false, known: false,
    pending: [], // our delayed says not yet back: { text, li }
    joinNote: null, // "you joined ...", shown once the join's history is
  };
  log.onscroll = () => { room.stick = log.scrollHeight - log.scrollTop - log.clientHeight < 40; };
  return room;
}

function roomFor(name) {
  let room = state.rooms.get(name);
  if (!room) {
    room = newRoom(name);
    state.rooms.set(name, room);
  }
  return room;
}

function currentRoom() { return state.rooms.get(state.current) || null; }

function removeRoom(name) {
  const room = state.rooms.get(name);
  if (!room) return;
  room.log.remove();
  state.rooms.delete(name);
  if (state.current === name) {
    state.current = state.rooms.size ? state.rooms.keys().next().value : null;
    state.privateTo = null;
  }
}

const byteOrder = (a, b) => (a < b ? -1 : a > b ? 1 : 0); // the server's order

function addMember(room, nick) {
  if (!room.members.includes(nick)) room.members = [...room.members, nick].sort(byteOrder);
}

function renameMember(room, old, nick) {
  room.members = room.members.map((n) => (n === old ? nick : n)).sort(byteOrder);
}

// --- The message lists ------------------------------------------------------------

function clock(seconds) {
  const d = new Date(seconds * 1000);
  const t = make("time", "time", d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }));
  t.dateTime = d.toISOString();
  t.title = d.toLocaleString();
  return t;
}

function append(room, li) {
  room.log.append(li);
  follow(room);
}

function follow(room) {
  if (room && room.stick && !room.log.hidden) room.log.scrollTop = room.log.scrollHeight;
}

// --- Positions: offsets and epochs -------------------------------------------------

// A new epoch (the server restarted, or the room's history was lost): the
// offsets start over, and what is on screen stays above what comes.
function restart(room, epoch) {
  room.epoch = epoch;
  room.offset = 0;
  room.last = 0;
  room.shown.clear();
}

// Everything up to offset is accounted for; then as far as there is no gap.
function advance(room, offset) {
  if (offset > room.offset) room.offset = offset;
  while (room.shown.has(room.offset + 1)) room.offset++;
}

// A message of the room (a say or a presence event), live or from a history.
// One with an offset already on screen is skipped. A live one past a gap
// (a message lost on the way) asks for the history since our position.
function roomMessage(room, m, old) {
  if (m.offset !== undefined) {
    if (m.epoch !== room.epoch) {
      if (room.epoch !== null) note(room, "the server's history of this room started over");
      restart(room, m.epoch);
    }
    if (room.shown.has(m.offset)) return;
    room.shown.add(m.offset);
    advance(room, 0);
    if (!old && room.synced && !room.filling && m.offset > room.offset &&
        request({ type: "history", room: room.name, since: room.offset, epoch: room.epoch }) !== null) {
      room.filling = true;
    }
  }
  if (m.type === "say") addMessage(room, m, old);
  else if (m.type === "presence") presenceEvent(room, m, old);
}

// A live presence event changes the member list; from a history it is only
// a note. Our own (our join, our new nick) is told by the replies already.
function presenceEvent(room, m, old) {
  if (!old) {
    if (m.event === "join") addMember(room, m.nick);
    else if (m.event === "leave") room.members = room.members.filter((n) => n !== m.nick);
    else if (m.event === "nick") renameMember(room, m.old, m.nick);
    if (room === currentRoom() && m.event === "leave" && state.privateTo === m.nick) state.privateTo = null;
    if (room === currentRoom() && m.event === "nick" && state.privateTo === m.old) state.privateTo = m.nick;
  }
  if (m.nick === state.nick) return;
  const text = m.event === "join" ? `${m.nick} joined`
    : m.event === "leave" ? `${m.nick} ${m.reason === "disconnected" ? "disconnected" : "left"}`
    : `${m.old} is now known as ${m.nick}`;
  place(room, make("li", "note", text), m);
}

// Puts an item of the log in offset order: after the ones before it, before
// a later one already there (a history that came after live messages).
function place(room, li, m) {
  if (m.offset !== undefined) {
    li.dataset.epoch = m.epoch;
    li.dataset.offset = m.offset;
    if (m.offset < room.last) {
      for (const x of room.log.children) {
        if (x.dataset.epoch === m.epoch && Number(x.dataset.offset) > m.offset) {
          room.log.insertBefore(li, x);
          follow(room);
          return;
        }
      }
    }
    room.last = Math.max(room.last, m.offset);
  }
  append(room, li);
}

// A say of ours that waits for the cluster: shown greyed, tagged "delayed",
// until the say itself comes back (live or in a history).
function addPending(room, text) {
  const li = make("li", "msg mine pending");
  li.append(make("span", "from", state.nick), " ", make("span", "tag", "delayed"), " ", make("span", "text", text));
  append(room, li);
  room.pending.push({ text, li });
}

function settlePending(room, m) {
  const i = room.pending.findIndex((p) => p.text === m.text);
  if (i < 0) return;
  room.pending[i].li.remove();
  room.pending.splice(i, 1);
}

// A say (from anyone, ours too) or a private.
function addMessage(room, m, old = false) {
  const mine = m.from === state.nick;
  if (mine && m.type === "say") settlePending(room, m);
  const li = make("li", "msg" + (mine ? " mine" : "") + (m.type === "private" ? " private" : ""));
  li.append(clock(m.time), " ");
  const who = m.type === "private" ? `${m.from} → ${m.to}` : m.from;
  li.append(make("span", "from", who), " ");
  if (m.type === "private") li.append(make("span", "tag", "private"), " ");
  li.append(make("span", "text", m.text));
  place(room, li, m);
  if (!old && room !== currentRoom()) room.unread++;
}

function note(room, text) {
  if (room) append(room, make("li", "note", text));
}

// --- Errors -------------------------------------------------------------------------

// Shows an error notice until dismissed. The same code again in a row (a
// burst of rate_limited) updates the newest notice and counts.
function showError(m) {
  const code = m.code || "error";
  const top = ui.errors.firstElementChild;
  if (top && top.dataset.code === code) {
    top.querySelector(".message").textContent = m.message || "";
    const times = Number(top.dataset.times) + 1;
    top.dataset.times = times;
    top.querySelector(".times").textContent = ` ×${times}`;
    return;
  }
  const li = make("li", "error");
  li.dataset.code = code;
  li.dataset.times = 1;
  li.append(make("strong", "code", code), make("span", "times"), " ", make("span", "message", m.message || ""));
  const close = make("button", "link", "dismiss");
  close.type = "button";
  close.setAttribute("aria-label", "Dismiss this error");
  close.onclick = () => li.remove();
  li.append(" ", close);
  ui.errors.prepend(li);
  while (ui.errors.children.length > MAX_ERRORS) ui.errors.lastElementChild.remove();
}

// --- Rendering ----------------------------------------------------------------------

function render() {
  const cur = currentRoom();
  replaceList(ui.rooms, [...state.rooms.values()].map(roomItem));
  for (const room of state.rooms.values()) room.log.hidden = room !== cur;
  if (cur) cur.unread = 0;
  follow(cur);

  ui.roomTitle.textContent = cur ? cur.name : "No room: join one";
  const members = cur && cur.joined ? cur.members : [];
  ui.membersCount.textContent = cur && cur.joined ? `(${members.length})` : "";
  replaceList(ui.members, members.map(memberItem));

  // Offline, the compose form stays (its button disabled) for the reconnect.
  const offline = !state.connected;
  const away = Boolean(cur) && !cur.joined && !offline;
  ui.roomNote.hidden = !away;
  ui.roomRejoin.hidden = !away || cur.want;
  if (away) ui.roomNoteText.textContent = cur.want ? `Joining ${cur.name}…` : `You are not in ${cur.name}.`;
  ui.sendForm.hidden = !cur || away;
  ui.privateTo.hidden = !state.privateTo;
  ui.privateNick.textContent = state.privateTo || "";
  ui.text.setAttribute("aria-label", state.privateTo ? `Private message to ${state.privateTo}` : "Message");
}

// Redraws a list of buttons; the one that had the focus keeps it, so that
// a keyboard user does not lose their place when a message comes in.
function replaceList(list, items) {
  const a = document.activeElement;
  const had = list.contains(a) ? [a.closest("li").dataset.key, a.classList[0]] : null;
  list.replaceChildren(...items);
  if (!had) return;
  const li = items.find((item) => item.dataset.key === had[0]);
  const b = li && li.querySelector(`button.${had[1]}`);
  if (b) b.focus();
}

function roomItem(room) {
  const li = make("li", "room-item");
  li.dataset.key = room.name;
  const pick = make("button", "room-pick", room.name);
  pick.type = "button";
  if (room.name === state.current) pick.setAttribute("aria-current", "true");
  if (!room.joined) {
    const why = !state.connected ? "offline" : room.want ? "joining…" : "not joined";
    pick.append(make("span", "off", ` (${why})`));
  }
  if (room.unread) {
    const badge = make("span", "badge", String(room.unread));
    badge.setAttribute("aria-label", `${room.unread} unread`);
    pick.append(" ", badge);
  }
  pick.onclick = () => { state.current = room.name; state.privateTo = null; render(); ui.text.focus(); };
  const leave = make("button", "leave", "×");
  leave.type = "button";
  leave.title = `Leave ${room.name}`;
  leave.setAttribute("aria-label", `Leave ${room.name}`);
  leave.onclick = () => {
    if (room.joined) request({ type: "leave", room: room.name });
    else { removeRoom(room.name); render(); }
  };
  li.append(pick, leave);
  return li;
}

function memberItem(nick) {
  const li = make("li");
  li.dataset.key = nick;
  const b = make("button", "member", nick);
  b.type = "button";
  if (nick === state.nick) b.append(make("span", "you", " (you)"));
  b.setAttribute("aria-label", `Write privately to ${nick}${nick === state.nick ? " (you)" : ""}`);
  if (nick === state.privateTo) b.setAttribute("aria-pressed", "true");
  b.onclick = () => { state.privateTo = nick; render(); ui.text.focus(); };
  li.append(b);
  return li;
}

// --- What the user does -------------------------------------------------------------

function roomNames(text) {
  return text.split(",").map((s) => s.trim()).filter(Boolean);
}

function remember() {
  try {
    localStorage.setItem("moonwire.chat", JSON.stringify({ nick: state.nick, rooms: [...state.rooms.keys()] }));
  } catch { /* private mode: nothing to remember */ }
}

ui.loginForm.onsubmit = (e) => {
  e.preventDefault();
  const nick = ui.loginNick.value.trim();
  const names = roomNames(ui.loginRooms.value);
  if (!nick || !names.length) return;
  state.nick = nick;
  ui.nickInput.value = nick;
  for (const name of names) roomFor(name).want = true;
  state.current = names[0];
  remember();
  ui.login.hidden = true;
  ui.chat.hidden = false;
  render();
  connect();
  ui.text.focus();
};

ui.joinForm.onsubmit = (e) => {
  e.preventDefault();
  const names = roomNames(ui.joinRoom.value).filter((n) => !(state.rooms.get(n) || {}).joined);
  if (!names.length) return;
  if (request({ type: "join", rooms: names }) === null) return;
  for (const name of names) roomFor(name).want = true;
  state.current = names[0];
  ui.joinRoom.value = "";
  remember();
  render();
};

ui.roomRejoin.onclick = () => {
  const room = currentRoom();
  if (room && request({ type: "join", rooms: [joinItem(room)] }) !== null) room.want = true;
};

ui.nickForm.onsubmit = (e) => {
  e.preventDefault();
  const nick = ui.nickInput.value.trim();
  if (nick && nick !== state.nick) request({ type: "nick", nick });
};

ui.sendForm.onsubmit = (e) => {
  e.preventDefault();
  const room = currentRoom();
  const text = ui.text.value;
  if (!room || !text.trim()) return;
  const msg = state.privateTo
    ? { type: "private", room: room.name, to: state.privateTo, text }
    : { type: "say", room: room.name, text };
  if (request(msg) !== null) ui.text.value = "";
};

// Error notices coming and going resize the list: keep following the bottom.
new ResizeObserver(() => follow(currentRoom())).observe(ui.logs);
ui.privateCancel.onclick = () => { state.privateTo = null; render(); ui.text.focus(); };
ui.retryNow.onclick = () => { if (!state.ws) connect(); };
// Back online (laptop lid, Wi-Fi): try at once rather than at the end of the wait.
window.addEventListener("online", () => { if (!state.ws && state.nick) connect(); });
window.addEventListener("pagehide", remember);

try {
  const saved = JSON.parse(localStorage.getItem("moonwire.chat") || "null");
  if (saved && saved.nick) ui.loginNick.value = saved.nick;
  if (saved && saved.rooms && saved.rooms.length) ui.loginRooms.value = saved.rooms.join(",");
} catch { /* nothing saved */ }
ui.loginNick.focus();
