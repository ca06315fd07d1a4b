-- chat.lua: rooms, nicknames, presence, history, private messages, filters
-- and a per-connection rate limit, over a JSON protocol (docs/chat-protocol.md).
--
-- State that must survive a reload lives in moonwire.state.chat (rooms, their
-- members and history) and in conn.data (a connection's nick, rooms and rate
-- bucket); this file only holds code and the configuration it read. A room is
-- the topic "room:<name>": a say is encoded once and published once, and the
-- core shares that one frame among every member.
--
-- Configuration (all optional), in the config file's app table:
--   app = { chat = { history = 50, max_length = 2000, words = {}, mask = "***",
--                    rate = { burst = 10, per_second = 5 }, max_rooms = 20,
--                    room_ttl = 600000 } }
local mw = require "moonwire"
local filters = require "filters"
local ratelimit = require "ratelimit"
local history = require "history"

local encode, decode = mw.json.encode, mw.json.decode
local publish, now = mw.publish, mw.now
local log = mw.log
local type, pairs, next, tostring = type, pairs, next, tostring
local find, lower, format = string.find, string.lower, string.format
local concat, sort = table.concat, table.sort
local os_time, utf8_offset = os.time, utf8.offset

local PROTOCOL = 1
local NICK_MAX = 32
local ROOM_MAX = 64
local REF_MAX = 64
local SWEEP_MS = 60000
-- The write queue bound (limits.max_buffered): a history never makes a join pass it.
local MAX_BUFFERED = (mw.config.limits or {}).max_buffered or 1048576
local NICK_PATTERN = "^[A-Za-z0-9_][A-Za-z0-9_.%-]*$"
local ROOM_PATTERN = "^[A-Za-z0-9_.%-]+$"

-- Configuration ---------------------------------------------------------------

-- A bad value stops the load (so `moonwire --check` and a reload report it).
local function config_error(key, what, got)
  error(format("chat: config app.chat.%s %s (got %s)", key, what, tostring(got)), 0)
end

local function opt_integer(t, key, default, min, max)
  local v = t[key]
  if v == nil then
    return default
  end
  if type(v) ~= "number" or v ~= v // 1 or v < min or v > max then
    config_error(key, format("must be an integer from %d to %d", min, max), v)
  end
  return math.tointeger(v)
end

local function read_config()
  local app_cfg = mw.config.app or {}
  local c = app_cfg.chat
  if c == nil then
    c = {}
  elseif type(c) ~= "table" then
    config_error("", "must be a table", c)
  end
  local cfg = {
    history = opt_integer(c, "history", 50, 0, 10000),
    max_length = opt_integer(c, "max_length", 2000, 1, 1000000),
    max_rooms = opt_integer(c, "max_rooms", 20, 1, 10000),
    room_ttl = opt_integer(c, "room_ttl", 600000, 0, 7 * 24 * 3600 * 1000),
    words = c.words or {},
    mask = c.mask or "***",
    rate = false,
  }
  local ok, err = filters.check_words(cfg.words)
  if not ok then
    config_error("words", err, cfg.words)
  end
  if type(cfg.mask) ~= "string" then
    config_error("mask", "must be a string", cfg.mask)
  end
  local r = c.rate
  if r == nil then
    r = {}
  end
  if r ~= false then
    if type(r) ~= "table" then
      config_error("rate", "must be a table { burst, per_second } or false", r)
    end
    local per_second = r.per_second or 5
    if type(per_second) ~= "number" or not (per_second > 0 and per_second <= 1e6) then
      config_error("rate.per_second", "must be a number above 0", per_second)
    end
    cfg.rate = { burst = opt_integer(r, "burst", 10, 1, 1000000), per_second = per_second }
  end
  return cfg
end

local cfg = read_config()
local chain = filters.chain(cfg)

-- State that survives reloads --------------------------------------------------

-- rooms[name] = { name, topic, count, seq, members = { [conn id] = nick },
--                 nicks = { [lower(nick)] = conn id }, history, empty_since }
local S = mw.state.chat
if S == nil then
  S = { version = 1, rooms = {} }
  mw.state.chat = S
end
local rooms = S.rooms

-- Replies ----------------------------------------------------------------------

local app = {}

-- The ref of the request being handled, for on_error.
local current_ref

local function send(conn, msg)
  local data, err = encode(msg)
  if data == nil then
    log.error("chat: cannot encode a %s message: %s", tostring(msg.type), err)
    return nil, err
  end
  return conn:send(data)
end

local function fail(conn, ref, code, message, room)
  return send(conn, { type = "error", code = code, message = message, ref = ref, room = room })
end

-- Reused for every publish that skips the sender (no table per message).
local skip = {}

local function publish_except(topic, data, conn)
  skip.except = conn
  local n, err = publish(topic, data, skip)
  skip.except = nil
  if n == nil then
    log.error("chat: publish to %s failed: %s", topic, err)
  end
  return n
end

local function publish_event(room, msg, conn)
  local data, err = encode(msg)
  if data == nil then
    log.error("chat: cannot encode a %s event: %s", tostring(msg.event), err)
    return
  end
  publish_except(room.topic, data, conn)
end

-- Rooms and members --------------------------------------------------------------

-- A client-given string cut to at most 64 characters for an error message
-- (on a character boundary, so the reply stays valid UTF-8).
local function clip(str)
  if #str <= 64 then
    return str
  end
  local cut = utf8_offset(str, 65)
  if cut == nil or cut > #str then
    return str
  end
  return str:sub(1, cut - 1) .. "…"
end

local function valid_nick(nick)
  if type(nick) ~= "string" then
    return nil, "bad_field", "nick must be a string"
  end
  if #nick == 0 or #nick > NICK_MAX then
    return nil, "bad_nick", format("a nick is 1 to %d characters long", NICK_MAX)
  end
  if not find(nick, NICK_PATTERN) then
    return nil, "bad_nick", "a nick is letters, digits, '_', '-' and '.', and starts with a letter, digit or '_'"
  end
  return true
end

local function valid_room(name)
  if type(name) ~= "string" then
    return nil, "bad_field", "a room name must be a string"
  end
  if #name == 0 or #name > ROOM_MAX or not find(name, ROOM_PATTERN) then
    return nil, "bad_room", format("a room name is 1 to %d letters, digits, '_', '-' and '.' (got %q)", ROOM_MAX, clip(name))
  end
  return true
end

local function new_room(name)
  local room = {
    name = name,
    topic = "room:" .. name,
    count = 0,
    seq = 0,
    members = {},
    nicks = {},
    history = history.new(),
  }
  rooms[name] = room
  return room
end

local function member_list(room)
  local list, n = {}, 0
  for _, nick in pairs(room.members) do
    n = n + 1
    list[n] = nick
  end
  sort(list)
  return list
end

-- Takes the member out of room; forgets the room at once when room_ttl is 0.
local function remove_member(room, id)
  local nick = room.members[id]
  if nick == nil then
    return nil
  end
  room.members[id] = nil
  if room.nicks[lower(nick)] == id then
    room.nicks[lower(nick)] = nil
  end
  room.count = room.count - 1
  if room.count == 0 then
    if cfg.room_ttl == 0 then
      rooms[room.name] = nil
    else
      room.empty_since = now()
    end
  end
  return nick
end

-- Per-connection state (conn.data), made on first use so connections opened
-- under another app (before a reload to this one) work too.
local function conn_state(conn)
  local d = conn.data
  if d.rooms == nil then
    d.rooms = {} -- [room name] = true
    d.nrooms = 0
  end
  return d
end

-- Requests ---------------------------------------------------------------------------

local handlers = {}

-- The room a request names, or the only room of the connection when it names none.
local function target_room(conn, d, msg, ref)
  local name = msg.room
  if name == nil then
    if d.nrooms == 1 then
      return (next(d.rooms))
    end
    if d.nrooms == 0 then
      fail(conn, ref, "not_in_room", "you are in no room: join one first")
    else
      fail(conn, ref, "missing_field", "'room' is required when you are in several rooms")
    end
    return nil
  end
  if type(name) ~= "string" then
    fail(conn, ref, "bad_field", "'room' must be a string")
    return nil
  end
  if d.rooms[name] and rooms[name] == nil then
    d.rooms[name] = nil -- the room state was lost (a bug elsewhere): forget it
    d.nrooms = d.nrooms - 1
  end
  if not d.rooms[name] then
    fail(conn, ref, "not_in_room", format("you are not in room %q", clip(name)), clip(name))
    return nil
  end
  return name
end

-- The room names of a join or leave: msg.rooms (a list) or msg.room.
local function room_names(conn, msg, ref)
  local list = msg.rooms
  if list == nil then
    if msg.room == nil then
      fail(conn, ref, "missing_field", "'room' (a name) or 'rooms' (a list of names) is required")
      return nil
    end
    return { msg.room }
  end
  if type(list) ~= "table" or #list == 0 then
    fail(conn, ref, "bad_field", "'rooms' must be a non-empty list of room names")
    return nil
  end
  if #list > cfg.max_rooms then
    fail(conn, ref, "too_many_rooms", format("at most %d rooms per connection", cfg.max_rooms))
    return nil
  end
  return list
end

-- Sends the history of room. It is the published frames themselves: no decode,
-- no re-encode. When it would not fit in what is left of the connection's
-- write queue, less a quarter kept for the other replies (a join of many rooms
-- at once), only the newest messages that fit go, with "truncated": true; a
-- "history" request, answered when the queue is empty, fetches them all.
local function send_history(conn, room, ref)
  local h = room.history
  local head = '{"type":"history","room":' .. encode(room.name)
  if ref ~= nil then
    head = head .. ',"ref":' .. encode(ref)
  end
  local queued = conn:buffered() or 0
  -- A quarter of the queue stays free for the other replies of a many-room join.
  local space = MAX_BUFFERED * 3 // 4 - queued - #head - 64
  local body = history.concat(h, ",")
  if queued == 0 or #body <= space then
    return conn:send(head .. ',"messages":[' .. body .. "]}")
  end
  local first, size = h.last + 1, 0
  while first > h.first and size + #h[first - 1] + 1 <= space do
    first = first - 1
    size = size + #h[first] + 1
  end
  return conn:send(head .. ',"truncated":true,"messages":[' .. concat(h, ",", first, h.last) .. "]}")
end

local function join_one(conn, d, name, ref)
  local ok, code, message = valid_room(name)
  if not ok then
    return fail(conn, ref, code, message, type(name) == "string" and clip(name) or nil)
  end
  if d.rooms[name] then
    return fail(conn, ref, "already_in_room", format("you are already in room %q", name), name)
  end
  if d.nrooms >= cfg.max_rooms then
    return fail(conn, ref, "too_many_rooms", format("at most %d rooms per connection", cfg.max_rooms), name)
  end
  local room = rooms[name]
  local key = lower(d.nick)
  if room ~= nil and room.nicks[key] ~= nil then
    return fail(conn, ref, "nick_taken", format("the nick %q is taken in room %q", d.nick, name), name)
  end
  local subscribed, err = conn:subscribe("room:" .. name)
  if not subscribed then
    return fail(conn, ref, "internal", "could not join: " .. tostring(err), name)
  end
  room = room or new_room(name)
  room.members[conn.id] = d.nick
  room.nicks[key] = conn.id
  room.count = room.count + 1
  room.empty_since = nil
  d.rooms[name] = true
  d.nrooms = d.nrooms + 1

  send(conn, { type = "joined", room = name, nick = d.nick, members = member_list(room), ref = ref })
  send_history(conn, room, nil)
  publish_event(room, { type = "presence", room = name, event = "join", nick = d.nick }, conn)
end

local function leave_one(conn, d, name, ref, reason)
  local room = rooms[name]
  d.rooms[name] = nil
  d.nrooms = d.nrooms - 1
  if conn:is_open() then
    conn:unsubscribe("room:" .. name)
  end
  if room == nil then
    return
  end
  local nick = remove_member(room, conn.id)
  if nick ~= nil and room.count > 0 then
    publish_event(room, { type = "presence", room = name, event = "leave", nick = nick, reason = reason }, conn)
  end
end

function handlers.join(conn, d, msg, ref)
  local names = room_names(conn, msg, ref)
  if names == nil then
    return
  end
  if d.nick == nil then
    return fail(conn, ref, "nick_required", "set a nick before you join a room")
  end
  for i = 1, #names do
    join_one(conn, d, names[i], ref)
  end
end

function handlers.leave(conn, d, msg, ref)
  local names = room_names(conn, msg, ref)
  if names == nil then
    return
  end
  for i = 1, #names do
    local name = names[i]
    local ok, code, message = valid_room(name)
    if not ok then
      fail(conn, ref, code, message, type(name) == "string" and clip(name) or nil)
    elseif not d.rooms[name] then
      fail(conn, ref, "not_in_room", format("you are not in room %q", name), name)
    else
      leave_one(conn, d, name, ref, "left")
      send(conn, { type = "left", room = name, ref = ref })
    end
  end
end

-- Sets or changes the nick; refused when another member of one of the
-- connection's rooms has it (ignoring ASCII case).
local function set_nick(conn, d, nick, ref)
  local ok, code, message = valid_nick(nick)
  if not ok then
    return fail(conn, ref, code, message)
  end
  local old = d.nick
  if old == nick then
    return send(conn, { type = "nick_set", nick = nick, old = old, ref = ref })
  end
  local key, id = lower(nick), conn.id
  for name in pairs(d.rooms) do
    local holder = rooms[name] and rooms[name].nicks[key]
    if holder ~= nil and holder ~= id then
      return fail(conn, ref, "nick_taken", format("the nick %q is taken in room %q", nick, name), name)
    end
  end
  d.nick = nick
  for name in pairs(d.rooms) do
    local room = rooms[name]
    if room ~= nil then
      if old ~= nil and room.nicks[lower(old)] == id then
        room.nicks[lower(old)] = nil
      end
      room.nicks[key] = id
      room.members[id] = nick
      publish_event(room, { type = "presence", room = name, event = "nick", nick = nick, old = old }, conn)
    end
  end
  send(conn, { type = "nick_set", nick = nick, old = old, ref = ref })
end

function handlers.nick(conn, d, msg, ref)
  if msg.nick == nil then
    return fail(conn, ref, "missing_field", "'nick' is required")
  end
  set_nick(conn, d, msg.nick, ref)
end

-- The filtered text of a say or private, or nil after an error reply.
local ctx = {}

local function filtered_text(conn, d, msg, ref, room, kind)
  local text = msg.text
  if text == nil then
    fail(conn, ref, "missing_field", "'text' is required", room)
    return nil
  end
  if type(text) ~= "string" then
    fail(conn, ref, "bad_field", "'text' must be a string", room)
    return nil
  end
  ctx.conn, ctx.nick, ctx.room, ctx.kind = conn, d.nick, room, kind
  local out, code, message = filters.run(chain, text, ctx)
  ctx.conn = nil
  if out == nil then
    fail(conn, ref, code, message, room)
  end
  return out
end

function handlers.say(conn, d, msg, ref)
  local name = target_room(conn, d, msg, ref)
  if name == nil then
    return
  end
  local text = filtered_text(conn, d, msg, ref, name, "say")
  if text == nil then
    return
  end
  local room = rooms[name]
  local seq, time = room.seq + 1, os_time()
  room.seq = seq
  local data = encode { type = "say", room = name, from = d.nick, text = text, seq = seq, time = time }
  if cfg.history > 0 then
    history.push(room.history, data, cfg.history)
  end
  publish_except(room.topic, data, conn)
  send(conn, { type = "sent", room = name, seq = seq, time = time, text = text, ref = ref })
end

function handlers.private(conn, d, msg, ref)
  local name = target_room(conn, d, msg, ref)
  if name == nil then
    return
  end
  local to = msg.to
  if to == nil then
    return fail(conn, ref, "missing_field", "'to' (a nick) is required", name)
  end
  if type(to) ~= "string" then
    return fail(conn, ref, "bad_field", "'to' must be a string", name)
  end
  local room = rooms[name]
  local target = room.nicks[lower(to)]
  if target == nil then
    return fail(conn, ref, "no_such_member", format("nobody called %q is in room %q", clip(to), name), name)
  end
  local text = filtered_text(conn, d, msg, ref, name, "private")
  if text == nil then
    return
  end
  local out = { type = "private", room = name, from = d.nick, to = room.members[target], text = text, time = os_time() }
  local data = encode(out)
  if target ~= conn.id then
    local sent, err = mw.send(target, data)
    if not sent then
      if err == "closed" then
        return fail(conn, ref, "no_such_member", format("%q has just left room %q", to, name), name)
      end
      return fail(conn, ref, "undelivered", format("the message to %q was not delivered (%s)", to, tostring(err)), name)
    end
  end
  if ref ~= nil then
    out.ref = ref
    data = encode(out)
  end
  conn:send(data)
end

function handlers.members(conn, d, msg, ref)
  local name = target_room(conn, d, msg, ref)
  if name ~= nil then
    send(conn, { type = "members", room = name, members = member_list(rooms[name]), ref = ref })
  end
end

function handlers.history(conn, d, msg, ref)
  local name = target_room(conn, d, msg, ref)
  if name ~= nil then
    send_history(conn, rooms[name], ref)
  end
end

function handlers.ping(conn, _, _, ref)
  send(conn, { type = "pong", ref = ref })
end

-- Hooks ----------------------------------------------------------------------------------

local function limits()
  return {
    nick_length = NICK_MAX,
    room_length = ROOM_MAX,
    max_length = cfg.max_length,
    max_rooms = cfg.max_rooms,
    history = cfg.history,
    rate = cfg.rate,
  }
end

-- Sends the welcome, then applies ?nick=ann&room=lobby,general if given.
function app.on_open(conn, req)
  local d = conn_state(conn)
  if cfg.rate then
    d.bucket = ratelimit.new(cfg.rate.burst, now())
  end
  send(conn, { type = "welcome", id = conn.id, node = mw.node, protocol = PROTOCOL, limits = limits() })
  local q = req.query
  if q.nick ~= nil then
    set_nick(conn, d, q.nick, nil)
  end
  local r = q.room or q.rooms
  if r ~= nil and r ~= "" then
    if d.nick == nil then
      return fail(conn, nil, "nick_required", "set a nick before you join a room (add &nick=...)")
    end
    local names, n = {}, 0
    for name in r:gmatch("[^,]+") do
      n = n + 1
      names[n] = name
    end
    if n > cfg.max_rooms then
      return fail(conn, nil, "too_many_rooms", format("at most %d rooms per connection", cfg.max_rooms))
    end
    for i = 1, n do
      join_one(conn, d, names[i], nil)
    end
  end
end

-- The request id to echo as "ref": a string of up to 64 bytes or a finite number.
local function request_ref(id)
  if id == mw.json.null then
    return nil, true
  end
  local t = type(id)
  if (t == "string" and #id <= REF_MAX) or (t == "number" and id == id and id ~= 1 / 0 and id ~= -1 / 0) then
    return id, true
  end
  return nil, id == nil
end

function app.on_message(conn, data, kind)
  local d = conn_state(conn)
  local msg, err
  if kind == "text" then
    msg, err = decode(data)
  end
  local ref, ref_ok = nil, true
  if type(msg) == "table" then
    ref, ref_ok = request_ref(msg.id)
  end

  local rate = cfg.rate
  if rate then
    local b = d.bucket
    if b == nil then
      b = ratelimit.new(rate.burst, now())
      d.bucket = b
    end
    local ok, wait = ratelimit.take(b, now(), rate.burst, rate.per_second)
    if not ok then
      return send(conn, {
        type = "error",
        code = "rate_limited",
        message = format("too many messages: at most %d at once and %g a second; retry in %d ms",
          rate.burst, rate.per_second, wait),
        retry_after = wait,
        ref = ref,
      })
    end
  end

  if kind ~= "text" then
    return fail(conn, nil, "binary_not_supported", "send JSON text messages, not binary")
  end
  if msg == nil then
    return fail(conn, nil, "bad_json", "not valid JSON: " .. tostring(err))
  end
  if type(msg) ~= "table" or msg[1] ~= nil then
    return fail(conn, nil, "bad_json", "a message must be a JSON object")
  end
  if not ref_ok then
    return fail(conn, nil, "bad_field", "'id' must be a string of at most 64 bytes or a number")
  end
  local t = msg.type
  if t == nil then
    return fail(conn, ref, "missing_field", "'type' is required")
  end
  if type(t) ~= "string" then
    return fail(conn, ref, "bad_field", "'type' must be a string")
  end
  local handler = handlers[t]
  if handler == nil then
    return fail(conn, ref, "unknown_type", format("unknown message type %q", clip(t)))
  end
  current_ref = ref
  handler(conn, d, msg, ref)
  current_ref = nil
end

-- Leaves every room (presence "leave" with reason "disconnected" to the others).
function app.on_close(conn)
  local d = conn.data
  if d.rooms == nil then
    return
  end
  for name in pairs(d.rooms) do
    leave_one(conn, d, name, nil, "disconnected")
  end
end

-- A handler raised: tell the client, keep the connection (the core logged it).
function app.on_error(conn)
  S.suspect = true -- a failed on_close may have left a member behind: the sweeper checks
  if conn ~= nil and conn:is_open() then
    fail(conn, current_ref, "internal", "the server failed to handle that message")
  end
  current_ref = nil
  return true
end

-- Forgets rooms empty for room_ttl ms (and their history). After a hook
-- failed or a reload, also forgets members whose connection is gone (what a
-- failed on_close leaves behind), telling the room.
local function sweep()
  local t, check = now(), S.suspect
  S.suspect = nil
  for name, room in pairs(rooms) do
    if check then
      for id in pairs(room.members) do
        if mw.connection(id) == nil then
          local nick = remove_member(room, id)
          if room.count > 0 then
            publish_event(room, { type = "presence", room = name, event = "leave", nick = nick, reason = "disconnected" })
          end
        end
      end
    end
    if room.count == 0 and (room.empty_since == nil or t - room.empty_since >= cfg.room_ttl) then
      rooms[name] = nil
    end
  end
end

-- After a reload: the new history cap applies to what is kept, and the next
-- sweep checks for members left behind (by another app's on_close, say).
function app.on_reload()
  S.suspect = true
  local n = 0
  for _, room in pairs(rooms) do
    history.trim(room.history, cfg.history)
    n = n + 1
  end
  log.info("chat: reloaded; %d rooms kept", n)
end

-- After the first load and after every reload (a reload cancels our timers).
function app.on_start()
  mw.every(cfg.room_ttl > 0 and math.min(cfg.room_ttl, SWEEP_MS) or SWEEP_MS, sweep)
end

-- For specs and extensions: the handler table and the filter chain.
app.handlers = handlers
app.filters = chain

return app
