-- chat.lua: rooms, nicknames, presence, history with recovery, private
-- messages, filters and a per-connection rate limit, over a JSON protocol
-- (docs/chat-protocol.md), on one node or on many sharing a Redis backplane.
--
-- The app keeps no room state of its own. A room is the topic "room:<name>":
--   * its members are the topic's presence (conn:subscribe with the nick as
--     presence info; moonwire.presence lists them, cluster-wide with a
--     backplane);
--   * its messages (says and presence events) are published once to the
--     topic, which reaches every member on every node; the core numbers them
--     (history.topics = { "room:*" }): each carries "offset" and "epoch", and
--     moonwire.history gives what a client missed after its offset;
--   * private messages go to the member's connection id (moonwire.send
--     reaches other nodes).
-- Nick uniqueness is exact: presence on one node, presence and a Redis claim
-- with a backplane (scripts/lib/nicks.lua). A connection's nick, rooms and
-- rate bucket live in conn.data, so a reload keeps everyone where they were.
-- The same code serves one node and a cluster: presence and history have a
-- standalone form, and only the nick claims need Redis.
--
-- Hooks that reach Redis wait there (a coroutine; other clients go on, this
-- connection's next messages are held in order). The connection may close
-- while its hook waits: after every wait the code checks conn:is_open().
--
-- Configuration (all optional), in the config file's app table:
--   app = { chat = { history = 50, max_length = 2000, words = {}, mask = "***",
--                    rate = { burst = 10, per_second = 5 }, max_rooms = 20,
--                    new_rooms = { burst = 10, per_second = 0.1 },
--                    history_bytes = 65536, join_history_bytes = 262144,
--                    archive = "chat:archive",
--                    jwt = { key_env = "CHAT_JWT_SECRET", aud = "chat", iss = "app" } } }
-- and, for history and recovery, the server's history = { topics = { "room:*" } }.
--
-- What one connection can make the server do is bounded: every request, and
-- each action of the connect query (the nick, the rooms), costs a token of
-- `rate`; rooms nobody is in on this node cost a token of `new_rooms` to
-- create; the history a join sends is at most `history_bytes` a room and
-- `join_history_bytes` for all the rooms of one request (or of the query).
local mw = require "moonwire"
local filters = require "filters"
local ratelimit = require "ratelimit"
local nicks = require "nicks"
local token_login = require "token_login"

local encode, decode = mw.json.encode, mw.json.decode
local publish, subscribers, now, wall = mw.publish, mw.subscribers, mw.now, mw.time
local log = mw.log
local type, pairs, next, tostring, tointeger = type, pairs, next, tostring, math.tointeger
local find, lower, format, sub = string.find, string.lower, string.format, string.sub
local concat, sort = table.concat, table.sort
local utf8_offset = utf8.offset

local PROTOCOL = 2
local NICK_MAX = 32
local ROOM_MAX = 64
local REF_MAX = 64
local EPOCH_MAX = 64
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
  return tointeger(v)
end

-- A token bucket's settings at c[key]: { burst, per_second }, or false (off).
local function bucket_config(c, key, burst, per_second)
  local r = c[key]
  if r == nil then
    r = {}
  end
  if r == false then
    return false
  end
  if type(r) ~= "table" then
    config_error(key, "must be a table { burst, per_second } or false", r)
  end
  per_second = r.per_second or per_second
  if type(per_second) ~= "number" or not (per_second > 0 and per_second <= 1e6) then
    config_error(key .. ".per_second", "must be a number above 0", per_second)
  end
  return { burst = opt_integer(r, "burst", burst, 1, 1000000), per_second = per_second }
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
    history_bytes = opt_integer(c, "history_bytes", 65536, 1024, 1000000000),
    join_history_bytes = opt_integer(c, "join_history_bytes", 262144, 1024, 1000000000),
    words = c.words or {},
    mask = c.mask or "***",
    rate = bucket_config(c, "rate", 10, 5),
    new_rooms = bucket_config(c, "new_rooms", 10, 0.1),
    archive = c.archive,
    -- app.chat.jwt: only a connection with a valid token opens, its nick the token's user.
    login = token_login.new(c.jwt, config_error),
  }
  if cfg.archive ~= nil and (type(cfg.archive) ~= "string" or cfg.archive == "") then
    config_error("archive", "must be a stream name (a string)", cfg.archive)
  end
  local ok, err = filters.check_words(cfg.words)
  if not ok then
    config_error("words", err, cfg.words)
  end
  if type(cfg.mask) ~= "string" then
    config_error("mask", "must be a string", cfg.mask)
  end
  if c.room_ttl ~= nil then
    log.warn("chat: app.chat.room_ttl is no longer used: the server's history.ttl bounds a room's history")
  end
  return cfg
end

local cfg = read_config()
local chain = filters.chain(cfg)

-- The server's history settings: which room topics number and keep their
-- messages (history.topics, names or prefixes ending in *).
local history_cfg = mw.config.history or {}
local history_topics = history_cfg.topics or {}

local function keeps_history(topic)
  for i = 1, #history_topics do
    local p = history_topics[i]
    if sub(p, -1) == "*" then
      if sub(topic, 1, #p - 1) == sub(p, 1, -2) then
        return true
      end
    elseif p == topic then
      return true
    end
  end
  return false
end

-- The protocol names the field "offset": refuse a server that would call it otherwise.
for i = 1, #history_topics do
  local prefix = history_topics[i]:gsub("%*$", "")
  local rooms_too = sub("room:", 1, #prefix) == prefix or sub(prefix, 1, 5) == "room:"
  if rooms_too and history_cfg.field ~= "offset" then
    error(format('chat: history.field must be "offset" for room topics (got %s)', tostring(history_cfg.field)), 0)
  end
end

-- Nick claims: in Redis with a backplane, nothing to do on one node.
local cluster_cfg = mw.config.cluster or {}
local claims = nicks.new {
  redis = cluster_cfg.redis ~= nil and mw.redis or nil,
  prefix = cluster_cfg.prefix,
  time = wall,
  members = function(room)
    return mw.presence("room:" .. room)
  end,
}

-- Replies ----------------------------------------------------------------------

local app = {}

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

local function unavailable(conn, ref, room, err)
  return fail(conn, ref, "unavailable", "the cluster is unavailable (" .. tostring(err) .. "); try again", room)
end

-- The members of a room for a request of conn (presence may wait for
-- Redis): nil when conn closed meanwhile or after answering the failure.
local function members_for(conn, ref, name)
  local members, err = mw.presence("room:" .. name)
  if not conn:is_open() then
    return nil
  end
  if members == nil then
    unavailable(conn, ref, name, err)
  end
  return members
end

-- The reasons publish gives when a bound of the server refused a message
-- (nobody got it; the core counts and logs these itself).
local function refused_by_server(err)
  return err == "too many history topics" or err == "too large for history"
end

-- Publishes a room message to every member, the sender too, so that each
-- member gets every offset of the room. Returns true, the offset (nil for a
-- room without history) and whether it is delayed: with a backplane and
-- Redis away, it waits in this node's outbox and reaches the members (of
-- other nodes, and of every node for a room with history) when Redis is
-- back. Returns nil and why when nobody got it: the outbox is full, or a
-- bound of the server refused it (refused_by_server).
-- app.chat.archive: every room message also goes to that Redis stream
-- (moonwire.queue.push: fields room, type, message) for the backend's workers
-- (persistence, moderation). The hook waits for Redis meanwhile; a failure is
-- logged (at most every 10 s) and the message is delivered all the same.
local queue_push = mw.queue.push
local archive_warned = nil
local function archive(name, msg, data)
  local ok, id, err = pcall(queue_push, cfg.archive, { room = name, type = tostring(msg.type), message = data })
  if ok and id ~= nil then
    return
  end
  local t = now()
  if archive_warned == nil or t - archive_warned >= 10000 then
    archive_warned = t
    log.warn("chat: archiving to %s: %s", cfg.archive, tostring(ok and err or id))
  end
end

local function publish_room(name, msg)
  local data, err = encode(msg)
  if data == nil then
    log.error("chat: cannot encode a %s message: %s", tostring(msg.type), err)
    return nil, err
  end
  local topic = "room:" .. name
  -- With history: offset, count [, "queued"]; without: count [, "queued"].
  local first, second, third = publish(topic, data)
  if first == nil then
    if not refused_by_server(second) then
      log.warn("chat: publish to %s: %s", topic, tostring(second))
    end
    return nil, second
  end
  if cfg.archive then
    archive(name, msg, data)
  end
  if keeps_history(topic) then
    if third == "queued" then
      return true, nil, true
    end
    return true, math.type(first) == "integer" and first or nil, false
  end
  return true, nil, second == "queued"
end

-- Rate limits ------------------------------------------------------------------------

-- Takes a token of the connection's rate bucket for a request (or an action of
-- the connect query). Returns true, or false after answering rate_limited.
local function charge(conn, d, ref)
  local rate = cfg.rate
  if not rate then
    return true
  end
  local b = d.bucket
  if b == nil then
    b = ratelimit.new(rate.burst, now())
    d.bucket = b
  end
  local ok, wait = ratelimit.take(b, now(), rate.burst, rate.per_second)
  if ok then
    return true
  end
  send(conn, {
    type = "error",
    code = "rate_limited",
    message = format("too many messages: at most %d at once and %g a second; retry in %d ms",
      rate.burst, rate.per_second, wait),
    retry_after = wait,
    ref = ref,
  })
  return false
end

-- A join of a room nobody is in on this node makes the room (a topic, its
-- history): that costs a token of the connection's new_rooms bucket. Returns
-- true, or false after answering too_many_new_rooms.
local function may_create(conn, d, topic, name, ref)
  local nr = cfg.new_rooms
  if not nr or subscribers(topic) > 0 then
    return true
  end
  local b = d.new_rooms
  if b == nil then
    b = ratelimit.new(nr.burst, now())
    d.new_rooms = b
  end
  local ok, wait = ratelimit.take(b, now(), nr.burst, nr.per_second)
  if ok then
    return true
  end
  send(conn, {
    type = "error",
    code = "too_many_new_rooms",
    message = format("too many new rooms: you may create at most %d at once and %g a second; "
      .. "retry in %d ms, or join a room someone is in", nr.burst, nr.per_second, wait),
    retry_after = wait,
    room = name,
    ref = ref,
  })
  return false
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

-- The sorted nicks of a presence table.
local function member_list(members)
  local list, n = {}, 0
  for _, nick in pairs(members) do
    n = n + 1
    list[n] = nick
  end
  sort(list)
  return list
end

-- The connection's rooms, sorted (so that errors and events come in a stable order).
local function room_list(d)
  local list, n = {}, 0
  for name in pairs(d.rooms) do
    n = n + 1
    list[n] = name
  end
  sort(list)
  return list
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

-- Releases the claims of nick `key` in the rooms of `names` (a backplane only).
local function release(id, names, key)
  if key == nil or #names == 0 then
    return
  end
  local list = {}
  for i = 1, #names do
    list[i] = { names[i], key }
  end
  local ok, err = claims:release(id, list)
  if ok == nil then
    log.warn("chat: could not release the nick claims of %s: %s", id, tostring(err))
  end
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
  if not d.rooms[name] then
    fail(conn, ref, "not_in_room", format("you are not in room %q", clip(name)), clip(name))
    return nil
  end
  return name
end

-- The items of a join or leave: msg.rooms (a list) or msg.room (with since and epoch).
local function room_items(conn, msg, ref)
  local list = msg.rooms
  if list == nil then
    if msg.room == nil then
      fail(conn, ref, "missing_field", "'room' (a name) or 'rooms' (a list of names) is required")
      return nil
    end
    if msg.since ~= nil or msg.epoch ~= nil then
      return { { room = msg.room, since = msg.since, epoch = msg.epoch } }
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

-- Reads a position { since, epoch } from t: both or neither. Returns true,
-- since, epoch; or nil, message.
local function position(t)
  local since, epoch = t.since, t.epoch
  if since == nil and epoch == nil then
    return true
  end
  if since == nil then
    return nil, "'since' is required with 'epoch'"
  end
  if epoch == nil then
    return nil, "'epoch' is required with 'since'"
  end
  since = type(since) == "number" and tointeger(since) or nil
  if since == nil or since < 0 then
    return nil, "'since' must be an offset (an integer, 0 or more)"
  end
  if type(epoch) ~= "string" or #epoch == 0 or #epoch > EPOCH_MAX then
    return nil, format("'epoch' must be a string of 1 to %d bytes", EPOCH_MAX)
  end
  return true, since, epoch
end

-- The history of a room after since (or the latest `limit`): moonwire.history's
-- table, an empty one for a room without history, or nil and an error.
local function read_history(name, since, epoch, limit)
  local topic = "room:" .. name
  if not keeps_history(topic) then
    return { messages = {}, recovered = false }
  end
  return mw.history(topic, { since = since, epoch = epoch, limit = limit })
end

-- Sends a history: the published messages themselves, joined without a
-- decode. When they would not fit in what is left of the connection's write
-- queue (all of it when the queue is empty, as between requests; else less a
-- quarter kept for the other replies of a many-room join), or for a join in
-- what its budget allows (history_bytes a room, budget.left for the rest of
-- the request), only the newest that fit go, with "truncated": true and
-- "recovered": false; a "history" request then fetches the rest.
local function send_history(conn, name, h, ref, drop, budget)
  local head = '{"type":"history","room":' .. encode(name)
  if ref ~= nil then
    head = head .. ',"ref":' .. encode(ref)
  end
  if h.offset ~= nil then
    -- With Redis, a room that never had a message has no epoch yet ("").
    if h.epoch ~= "" then
      head = head .. ',"epoch":' .. encode(h.epoch)
    end
    head = head .. ',"offset":' .. format("%d", h.offset)
  end
  local messages = drop and {} or h.messages
  local recovered = h.recovered and not drop
  local body = concat(messages, ",")
  local queued = conn:buffered() or 0
  local space = (queued == 0 and MAX_BUFFERED or MAX_BUFFERED * 3 // 4 - queued) - #head - 64
  if budget ~= nil then
    local allowed = cfg.history_bytes < budget.left and cfg.history_bytes or budget.left
    if allowed < space then
      space = allowed
    end
  end
  if #body <= space then
    if budget ~= nil then
      budget.left = budget.left - #body
    end
    return conn:send(head .. ',"recovered":' .. tostring(recovered) .. ',"messages":[' .. body .. "]}")
  end
  local first, size = #messages + 1, 0
  while first > 1 and size + #messages[first - 1] + 1 <= space do
    first = first - 1
    size = size + #messages[first] + 1
  end
  if budget ~= nil then
    budget.left = budget.left - size
  end
  return conn:send(head .. ',"recovered":false,"truncated":true,"messages":['
    .. concat(messages, ",", first, #messages) .. "]}")
end

-- Joins one room (item: a name, or { room, since, epoch }). Order: claim the
-- nick, subscribe with it as presence, read the members and check the nick
-- once more against them, read the history, answer, then publish the join
-- (subscribed before the history is read, so nothing falls between the two;
-- a message may come both in the history and live: its offset tells).
local function join_one(conn, d, item, ref, budget)
  local name, since, epoch = item, nil, nil
  if type(item) == "table" then
    name = item.room
    if name == nil then
      return fail(conn, ref, "missing_field", "each object in 'rooms' needs a 'room'")
    end
    local ok
    ok, since, epoch = position(item)
    if not ok then
      return fail(conn, ref, "bad_field", since, type(name) == "string" and clip(name) or nil)
    end
  end
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
  local nick, id, topic = d.nick, conn.id, "room:" .. name
  if not may_create(conn, d, topic, name, ref) then
    return
  end
  local key = lower(nick)
  local taken = format("the nick %q is taken in room %q", nick, name)
  local err
  ok, code, err = claims:claim(name, key, id)
  if not ok then
    if conn:is_open() then
      if code == "taken" then
        return fail(conn, ref, "nick_taken", taken, name)
      end
      return unavailable(conn, ref, name, err)
    end
    return
  end
  if not conn:is_open() then
    return release(id, { name }, key)
  end
  ok, err = conn:subscribe(topic, { presence = nick })
  if not ok then
    release(id, { name }, key)
    if err == "too many topics" then
      return fail(conn, ref, "server_full",
        "could not join: this server has as many rooms as it allows (too many topics); try again later", name)
    elseif err == "too many subscriptions" then
      return fail(conn, ref, "too_many_rooms",
        "could not join: this connection is in as many topics as the server allows (too many subscriptions)", name)
    end
    return fail(conn, ref, "internal", "could not join: " .. tostring(err), name)
  end
  local members
  members, err = mw.presence(topic)
  if not conn:is_open() then
    return release(id, { name }, key)
  end
  if members == nil or nicks.holder(members, key, id) ~= nil then
    conn:unsubscribe(topic)
    release(id, { name }, key)
    if members == nil then
      return unavailable(conn, ref, name, err)
    end
    return fail(conn, ref, "nick_taken", taken, name)
  end
  -- A member from here on: on_close cleans up if the connection goes.
  d.rooms[name] = true
  d.nrooms = d.nrooms + 1
  members[id] = nick
  local h
  if since ~= nil then
    h, err = read_history(name, since, epoch)
  else
    h, err = read_history(name, nil, nil, cfg.history > 0 and cfg.history or 1)
  end
  if not conn:is_open() then
    return
  end
  if h == nil then
    log.warn("chat: history of %s: %s", topic, tostring(err))
    h = { messages = {}, recovered = false }
  end
  send(conn, { type = "joined", room = name, nick = nick, members = member_list(members), ref = ref })
  send_history(conn, name, h, nil, since == nil and cfg.history == 0, budget)
  publish_room(name, { type = "presence", room = name, event = "join", nick = nick })
end

-- Leaves a room: out of its topic and presence, the nick claim released,
-- then the reply (so a "left" means the nick is free in that room on every
-- node) and the leave event to the others.
local function leave_one(conn, d, name, ref)
  d.rooms[name] = nil
  d.nrooms = d.nrooms - 1
  conn:unsubscribe("room:" .. name)
  local nick = d.nick
  release(conn.id, { name }, lower(nick))
  if conn:is_open() then
    send(conn, { type = "left", room = name, ref = ref })
  end
  publish_room(name, { type = "presence", room = name, event = "leave", nick = nick, reason = "left" })
end

function handlers.join(conn, d, msg, ref)
  local items = room_items(conn, msg, ref)
  if items == nil then
    return
  end
  if d.nick == nil then
    return fail(conn, ref, "nick_required", "set a nick before you join a room")
  end
  local budget = { left = cfg.join_history_bytes }
  for i = 1, #items do
    if not conn:is_open() then
      return
    end
    join_one(conn, d, items[i], ref, budget)
  end
end

function handlers.leave(conn, d, msg, ref)
  local items = room_items(conn, msg, ref)
  if items == nil then
    return
  end
  for i = 1, #items do
    if not conn:is_open() then
      return
    end
    local name = items[i]
    if type(name) == "table" then
      name = name.room
    end
    local ok, code, message = valid_room(name)
    if not ok then
      fail(conn, ref, code, message, type(name) == "string" and clip(name) or nil)
    elseif not d.rooms[name] then
      fail(conn, ref, "not_in_room", format("you are not in room %q", name), name)
    else
      leave_one(conn, d, name, ref)
    end
  end
end

-- Sets or changes the nick; refused when another member of one of the
-- connection's rooms has it (ignoring ASCII case). The new nick is checked and
-- claimed in every room first; then presence, the reply and the events.
local function set_nick(conn, d, nick, ref)
  local ok, code, message = valid_nick(nick)
  if not ok then
    return fail(conn, ref, code, message)
  end
  local old = d.nick
  if old == nick then
    return send(conn, { type = "nick_set", nick = nick, old = old, ref = ref })
  end
  local id, key = conn.id, lower(nick)
  local names = room_list(d)
  if old == nil or lower(old) ~= key then
    local claimed = {}
    for i = 1, #names do
      local name = names[i]
      local members, err = mw.presence("room:" .. name)
      if members ~= nil and nicks.holder(members, key, id) ~= nil then
        ok, code = nil, "taken"
      elseif members ~= nil then
        ok, code, err = claims:claim(name, key, id)
      end
      if not conn:is_open() then
        return release(id, claimed, key)
      end
      if members == nil or not ok then
        release(id, claimed, key)
        if members == nil or code ~= "taken" then
          return unavailable(conn, ref, name, err)
        end
        return fail(conn, ref, "nick_taken", format("the nick %q is taken in room %q", nick, name), name)
      end
      claimed[#claimed + 1] = name
    end
  end
  d.nick = nick
  for i = 1, #names do
    conn:subscribe("room:" .. names[i], { presence = nick })
  end
  if old ~= nil and lower(old) ~= key then
    release(id, names, lower(old))
  end
  send(conn, { type = "nick_set", nick = nick, old = old, ref = ref })
  for i = 1, #names do
    publish_room(names[i], { type = "presence", room = names[i], event = "nick", nick = nick, old = old })
  end
end

function handlers.nick(conn, d, msg, ref)
  if msg.nick == nil then
    return fail(conn, ref, "missing_field", "'nick' is required")
  end
  -- With app.chat.jwt the nick is the token's user: asking for it again is fine, another is not.
  if cfg.login and d.nick ~= nil and msg.nick ~= d.nick then
    return fail(conn, ref, "nick_fixed", format("your nick is the user you logged in as (%s)", d.nick))
  end
  set_nick(conn, d, msg.nick, ref)
end

-- The filtered text of a say or private, or nil after an error reply.
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
  local ctx = { conn = conn, nick = d.nick, room = room, kind = kind }
  local out, code, message = filters.run(chain, text, ctx)
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
  local ok, offset, delayed = publish_room(name, { type = "say", room = name, from = d.nick, text = text, time = wall() // 1000 })
  if not conn:is_open() then
    return
  end
  if not ok and refused_by_server(offset) then
    return fail(conn, ref, "server_full", "not sent: the server can not keep it in the room's history (" .. offset .. ")", name)
  end
  if not ok then
    -- Nobody got it: say why, so that the sender can send it again.
    return unavailable(conn, ref, name, offset)
  end
  -- delayed: it waits for Redis in this node's outbox, and goes out in order when Redis is back.
  send(conn, { type = "sent", room = name, offset = offset, delayed = delayed or nil, ref = ref })
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
  local text = filtered_text(conn, d, msg, ref, name, "private")
  if text == nil then
    return
  end
  local members = members_for(conn, ref, name)
  if members == nil then
    return
  end
  local target, to_nick = nicks.holder(members, lower(to), nil)
  if target == nil then
    return fail(conn, ref, "no_such_member", format("nobody called %q is in room %q", clip(to), name), name)
  end
  local out = { type = "private", room = name, from = d.nick, to = to_nick, text = text, time = wall() // 1000 }
  local queued
  if target ~= conn.id then
    local sent, err = mw.send(target, encode(out))
    if not sent then
      if err == "closed" then
        return fail(conn, ref, "no_such_member", format("%q has just left room %q", to, name), name)
      end
      return fail(conn, ref, "undelivered", format("the message to %q was not delivered (%s)", to, tostring(err)), name)
    end
    queued = err == "queued"
  end
  out.ref = ref
  out.delayed = queued or nil
  send(conn, out)
end

function handlers.members(conn, d, msg, ref)
  local name = target_room(conn, d, msg, ref)
  if name == nil then
    return
  end
  local members = members_for(conn, ref, name)
  if members == nil then
    return
  end
  send(conn, { type = "members", room = name, members = member_list(members), ref = ref })
end

function handlers.history(conn, d, msg, ref)
  local name = target_room(conn, d, msg, ref)
  if name == nil then
    return
  end
  local ok, since, epoch = position(msg)
  if not ok then
    return fail(conn, ref, "bad_field", since, name)
  end
  local limit = msg.limit
  if limit ~= nil then
    limit = type(limit) == "number" and tointeger(limit) or nil
    if limit == nil or limit < 1 then
      return fail(conn, ref, "bad_field", "'limit' must be a positive integer", name)
    end
  end
  local h, err = read_history(name, since, epoch, limit)
  if not conn:is_open() then
    return
  end
  if h == nil then
    return unavailable(conn, ref, name, err)
  end
  send_history(conn, name, h, ref)
end

function handlers.ping(conn, _, _, ref)
  send(conn, { type = "pong", ref = ref })
end

-- Delivery to the other nodes --------------------------------------------------------------

-- With a backplane, what goes to the other nodes waits in this node's outbox
-- while Redis is away (moonwire.cluster().delayed): every client of this node
-- is told when that starts and when it ends, {"type":"delivery","delayed":
-- true|false}, and a client that connects meanwhile after its welcome.
local DELIVERY_CHECK_MS = 250

local function delivery_delayed()
  local c = mw.cluster()
  return c ~= nil and c.delayed
end

local function watch_delivery()
  local delayed = delivery_delayed()
  if delayed == (mw.state.chat_delivery_delayed or false) then
    return
  end
  mw.state.chat_delivery_delayed = delayed
  local msg = encode({ type = "delivery", delayed = delayed })
  for conn in mw.connections() do
    conn:send(msg)
  end
end

function app.on_start()
  if cluster_cfg.redis ~= nil then
    mw.every(DELIVERY_CHECK_MS, watch_delivery)
  end
end

-- Hooks ----------------------------------------------------------------------------------

local function limits()
  return {
    nick_length = NICK_MAX,
    room_length = ROOM_MAX,
    max_length = cfg.max_length,
    max_rooms = cfg.max_rooms,
    history = cfg.history,
    history_bytes = cfg.history_bytes,
    join_history_bytes = cfg.join_history_bytes,
    rate = cfg.rate,
    new_rooms = cfg.new_rooms,
  }
end

-- With app.chat.jwt: only a valid token opens a connection (401 without
-- one, 403 when its user can not be a nick); its user is the nick.
if cfg.login then
  function app.on_upgrade(req)
    local user, status, body = cfg.login:check(req, valid_nick)
    if user == nil then
      log.info("chat: refused a connection from %s: %s", req.remote_addr, body)
      return false, status, body
    end
    req.user = user -- on_open gets the same table
  end
end

-- Sends the welcome, then applies ?nick=ann&room=lobby,general if given
-- (with app.chat.jwt the nick is the token's user, and ?nick= is ignored).
function app.on_open(conn, req)
  local d = conn_state(conn)
  if cfg.rate then
    d.bucket = ratelimit.new(cfg.rate.burst, now())
  end
  send(conn, { type = "welcome", id = conn.id, node = mw.node, protocol = PROTOCOL, limits = limits() })
  if mw.state.chat_delivery_delayed then
    send(conn, { type = "delivery", delayed = true })
  end
  -- The query's actions cost what the requests they stand for cost.
  local q = req.query
  local nick = q.nick
  if cfg.login then
    nick = req.user
  end
  if nick ~= nil and charge(conn, d, nil) then
    set_nick(conn, d, nick, nil)
  end
  local r = q.room or q.rooms
  if r ~= nil and r ~= "" and conn:is_open() then
    if not charge(conn, d, nil) then
      return
    end
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
    local budget = { left = cfg.join_history_bytes }
    for i = 1, n do
      if not conn:is_open() then
        return
      end
      join_one(conn, d, names[i], nil, budget)
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

  if not charge(conn, d, ref) then
    return
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
  -- For on_error: this connection's request (hooks of others run while one waits).
  d.ref = ref
  handler(conn, d, msg, ref)
  d.ref = nil
end

-- Leaves every room: presence "leave" with reason "disconnected" to the
-- others, and the nick claims released. The core has already taken the
-- connection out of the topics and their presence.
function app.on_close(conn)
  local d = conn.data
  if d.rooms == nil or d.nrooms == 0 then
    return
  end
  local names, nick = room_list(d), d.nick
  d.rooms, d.nrooms = {}, 0
  release(conn.id, names, nick and lower(nick))
  for i = 1, #names do
    publish_room(names[i], { type = "presence", room = names[i], event = "leave", nick = nick, reason = "disconnected" })
  end
end

-- A handler raised: tell the client, keep the connection (the core logged it).
function app.on_error(conn)
  if conn ~= nil and conn:is_open() then
    local d = conn.data
    fail(conn, d.ref, "internal", "the server failed to handle that message")
    d.ref = nil
  end
  return true
end

function app.on_reload()
  log.info("chat: reloaded")
end

-- For specs and extensions: the handler table and the filter chain.
app.handlers = handlers
app.filters = chain

return app
