-- The in-process Redis of moonwire.sim's clusters (sim_redis.c runs it in a
-- Lua state of its own): the keyspace, pub/sub and scripts, for the commands
-- the backplane sends and a chat app's moonwire.redis calls use. Replies are
-- RESP2 text, which sim_redis.c reads with hiredis's own reader, so the
-- backplane gets the redisReply trees real Redis would give it.
--
-- Kept as Redis does: one keyspace per database (SELECT), expiry on the
-- clock the sim gives each command (checked when a key is touched), a
-- script cache that a restart without data loses (NOSCRIPT), channels
-- delivered to their subscribers in the order of the PUBLISHes. Commands
-- outside the list below answer
--   ERR moonwire.sim's Redis does not support 'NAME'
-- Differences, said: XADD's "MAXLEN ~ n" trims to exactly n (Redis keeps at
-- least n); SMEMBERS answers sorted, HKEYS and HGETALL in the order fields
-- were first set; scripts run on Lua 5.4 (Redis has 5.1) with redis.call,
-- redis.pcall, redis.sha1hex, redis.error_reply, redis.status_reply.

local sha1hex = ... -- a C function
local E = {}

local NIL = setmetatable({}, { __name = "nil reply" }) -- a nil inside an array
local NOREPLY = setmetatable({}, { __name = "no reply" }) -- SUBSCRIBE answers with pushes
local now = 0
local dbs, scripts, channels, conns
local function reset()
  dbs = {}
  scripts = {}
end
reset()
channels = {} -- name -> { [conn] = true, order = { conn... } }
conns = {} -- conn -> { db = 0, subs = { name = true }, nsubs = 0 }

local function err(msg) return { err = msg } end
local function ok(s) return { ok = s or "OK" } end
local WRONGTYPE = "WRONGTYPE Operation against a key holding the wrong kind of value"
local NOTINT = "ERR value is not an integer or out of range"
local SYNTAX = "ERR syntax error"

-- RESP ---------------------------------------------------------------------------------

local function encode(v, out)
  local t = type(v)
  if t == "string" then
    out[#out + 1] = "$" .. #v .. "\r\n" .. v .. "\r\n"
  elseif t == "number" then
    out[#out + 1] = ":" .. string.format("%d", v // 1) .. "\r\n"
  elseif v == nil or v == NIL or v == false then
    out[#out + 1] = "$-1\r\n"
  elseif v == true then
    out[#out + 1] = ":1\r\n"
  elseif t == "table" and v.err then
    out[#out + 1] = "-" .. tostring(v.err):gsub("[\r\n]", " ") .. "\r\n"
  elseif t == "table" and v.ok then
    out[#out + 1] = "+" .. tostring(v.ok):gsub("[\r\n]", " ") .. "\r\n"
  elseif t == "table" then
    local n = v.n or #v
    out[#out + 1] = "*" .. n .. "\r\n"
    for i = 1, n do
      encode(v[i], out)
    end
  else
    out[#out + 1] = "-ERR cannot encode a " .. t .. "\r\n"
  end
  return out
end

local function resp(v)
  return table.concat(encode(v, {}))
end

-- Keyspace -----------------------------------------------------------------------------

local function db_of(c)
  local d = dbs[c.db]
  if not d then
    d = { keys = {}, expires = {} }
    dbs[c.db] = d
  end
  return d
end

local function lookup(d, key)
  local at = d.expires[key]
  if at and at <= now then
    d.keys[key] = nil
    d.expires[key] = nil
  end
  return d.keys[key]
end

local function kind(v)
  if v == nil then return "none" end
  if type(v) == "string" then return "string" end
  return v.kind
end

-- The value at key of kind k, made when absent (make), or nil, or an error.
local function get(d, key, k, make)
  local v = lookup(d, key)
  if v == nil then
    if not make then return nil end
    if k == "hash" then v = { kind = "hash", h = {}, order = {} }
    elseif k == "set" then v = { kind = "set", m = {} }
    elseif k == "list" then v = { kind = "list", l = {} }
    elseif k == "stream" then v = { kind = "stream", e = {}, last = { 0, 0 } }
    end
    d.keys[key] = v
    return v
  end
  if kind(v) ~= k then return nil, WRONGTYPE end
  return v
end

local function int(s)
  if type(s) ~= "string" or not s:match("^%-?%d+$") then return nil end
  return math.tointeger(tonumber(s))
end

local function count(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n
end

local function hash_drop_empty(d, key, h)
  if next(h.h) == nil then
    d.keys[key] = nil
    d.expires[key] = nil
  end
end

local function hash_order(h)
  local out = {}
  for _, f in ipairs(h.order) do
    if h.h[f] ~= nil and not out[f] then
      out[#out + 1] = f
      out[f] = true
    end
  end
  h.order = {}
  for i = 1, #out do
    h.order[i] = out[i]
  end
  return h.order
end

-- Streams ------------------------------------------------------------------------------

local function parse_id(s, default_seq)
  local ms, seq = s:match("^(%d+)%-(%d+)$")
  if ms then return { math.tointeger(tonumber(ms)), math.tointeger(tonumber(seq)) } end
  ms = s:match("^(%d+)$")
  if ms then return { math.tointeger(tonumber(ms)), default_seq } end
  return nil
end

local function id_lt(a, b)
  return a[1] < b[1] or (a[1] == b[1] and a[2] < b[2])
end

local function id_str(id)
  return id[1] .. "-" .. id[2]
end

local MAXSEQ = math.maxinteger

-- The bound of a range: "-", "+", an id, or "(" and an id (exclusive).
local function range_bound(s, low)
  if s == "-" then return { 0, 0 } end
  if s == "+" then return { math.maxinteger, MAXSEQ } end
  local excl = false
  if s:sub(1, 1) == "(" then
    excl = true
    s = s:sub(2)
  end
  local id = parse_id(s, low and 0 or MAXSEQ)
  if not id then return nil end
  if excl then
    if low then
      if id[2] == MAXSEQ then id = { id[1] + 1, 0 } else id = { id[1], id[2] + 1 } end
    else
      if id[2] == 0 then id = { id[1] - 1, MAXSEQ } else id = { id[1], id[2] - 1 } end
    end
  end
  return id
end

-- Commands -----------------------------------------------------------------------------

local C = {}

C.PING = function(c, a)
  if c.nsubs > 0 then return { "pong", a[2] or "" } end
  if a[2] then return a[2] end
  return ok("PONG")
end
C.ECHO = function(c, a) return a[2] end
C.AUTH = function()
  return err("ERR AUTH <password> called without any password configured for the default user. "
    .. "Are you sure your configuration is correct?")
end
C.SELECT = function(c, a)
  local n = int(a[2] or "")
  if not n then return err(NOTINT) end
  if n < 0 or n > 15 then return err("ERR DB index is out of range") end
  c.db = n
  return ok()
end

C.GET = function(c, a)
  local v = lookup(db_of(c), a[2])
  if v ~= nil and type(v) ~= "string" then return err(WRONGTYPE) end
  return v
end
C.SET = function(c, a)
  local d = db_of(c)
  local key, value = a[2], a[3]
  local ttl, nx, xx, get_old = nil, false, false, false
  local i = 4
  while a[i] do
    local o = a[i]:upper()
    if (o == "EX" or o == "PX") and a[i + 1] then
      local n = int(a[i + 1])
      if not n or n <= 0 then return err("ERR invalid expire time in 'set' command") end
      ttl = o == "EX" and n * 1000 or n
      i = i + 2
    elseif o == "NX" then nx = true; i = i + 1
    elseif o == "XX" then xx = true; i = i + 1
    elseif o == "GET" then get_old = true; i = i + 1
    else return err(SYNTAX) end
  end
  local old = lookup(d, key)
  if get_old and old ~= nil and type(old) ~= "string" then return err(WRONGTYPE) end
  if (nx and old ~= nil) or (xx and old == nil) then
    if get_old then return old end
    return NIL
  end
  d.keys[key] = value
  d.expires[key] = ttl and now + ttl or nil
  if get_old then return old end
  return ok()
end
C.SETNX = function(c, a)
  local d = db_of(c)
  if lookup(d, a[2]) ~= nil then return 0 end
  d.keys[a[2]] = a[3]
  return 1
end
C.MGET = function(c, a)
  local d, out = db_of(c), { n = #a - 1 }
  for i = 2, #a do
    local v = lookup(d, a[i])
    out[i - 1] = type(v) == "string" and v or NIL
  end
  return out
end
local function incr(c, key, by)
  local d = db_of(c)
  local v = lookup(d, key)
  if v ~= nil and type(v) ~= "string" then return err(WRONGTYPE) end
  local n = v == nil and 0 or int(v)
  if not n then return err(NOTINT) end
  n = n + by
  d.keys[key] = tostring(n)
  return n
end
C.INCR = function(c, a) return incr(c, a[2], 1) end
C.DECR = function(c, a) return incr(c, a[2], -1) end
C.INCRBY = function(c, a)
  local by = int(a[3] or "")
  if not by then return err(NOTINT) end
  return incr(c, a[2], by)
end
C.DECRBY = function(c, a)
  local by = int(a[3] or "")
  if not by then return err(NOTINT) end
  return incr(c, a[2], -by)
end

C.DEL = function(c, a)
  local d, n = db_of(c), 0
  for i = 2, #a do
    if lookup(d, a[i]) ~= nil then
      d.keys[a[i]] = nil
      d.expires[a[i]] = nil
      n = n + 1
    end
  end
  return n
end
C.UNLINK = C.DEL
C.EXISTS = function(c, a)
  local d, n = db_of(c), 0
  for i = 2, #a do
    if lookup(d, a[i]) ~= nil then n = n + 1 end
  end
  return n
end
local function expire(c, a, unit)
  local d = db_of(c)
  local n = int(a[3] or "")
  if not n then return err(NOTINT) end
  if lookup(d, a[2]) == nil then return 0 end
  if n <= 0 then
    d.keys[a[2]] = nil
    d.expires[a[2]] = nil
  else
    d.expires[a[2]] = now + n * unit
  end
  return 1
end
C.EXPIRE = function(c, a) return expire(c, a, 1000) end
C.PEXPIRE = function(c, a) return expire(c, a, 1) end
local function ttl(c, a, unit)
  local d = db_of(c)
  if lookup(d, a[2]) == nil then return -2 end
  local at = d.expires[a[2]]
  if not at then return -1 end
  return (at - now + unit - 1) // unit
end
C.TTL = function(c, a) return ttl(c, a, 1000) end
C.PTTL = function(c, a) return ttl(c, a, 1) end
C.PERSIST = function(c, a)
  local d = db_of(c)
  if lookup(d, a[2]) == nil or not d.expires[a[2]] then return 0 end
  d.expires[a[2]] = nil
  return 1
end
C.TYPE = function(c, a) return ok(kind(lookup(db_of(c), a[2]))) end
C.DBSIZE = function(c)
  local d, n = db_of(c), 0
  for k in pairs(d.keys) do
    if lookup(d, k) ~= nil then n = n + 1 end
  end
  return n
end
C.FLUSHDB = function(c)
  dbs[c.db] = nil
  return ok()
end
C.FLUSHALL = function()
  dbs = {}
  return ok()
end

-- Hashes
C.HGET = function(c, a)
  local h, e = get(db_of(c), a[2], "hash")
  if e then return err(e) end
  return h and h.h[a[3]] or NIL
end
C.HMGET = function(c, a)
  local h, e = get(db_of(c), a[2], "hash")
  if e then return err(e) end
  local out = { n = #a - 2 }
  for i = 3, #a do
    out[i - 2] = h and h.h[a[i]] or NIL
  end
  return out
end
C.HSET = function(c, a)
  if #a < 4 or #a % 2 ~= 0 then
    return err("ERR wrong number of arguments for '" .. a[1]:lower() .. "' command")
  end
  local h, e = get(db_of(c), a[2], "hash", true)
  if e then return err(e) end
  local n = 0
  for i = 3, #a, 2 do
    if h.h[a[i]] == nil then
      n = n + 1
      h.order[#h.order + 1] = a[i]
    end
    h.h[a[i]] = a[i + 1]
  end
  if a[1]:upper() == "HMSET" then return ok() end
  return n
end
C.HMSET = C.HSET
C.HSETNX = function(c, a)
  local h, e = get(db_of(c), a[2], "hash", true)
  if e then return err(e) end
  if h.h[a[3]] ~= nil then return 0 end
  h.h[a[3]] = a[4]
  h.order[#h.order + 1] = a[3]
  return 1
end
C.HDEL = function(c, a)
  local d = db_of(c)
  local h, e = get(d, a[2], "hash")
  if e then return err(e) end
  if not h then return 0 end
  local n = 0
  for i = 3, #a do
    if h.h[a[i]] ~= nil then
      h.h[a[i]] = nil
      n = n + 1
    end
  end
  hash_drop_empty(d, a[2], h)
  return n
end
C.HGETALL = function(c, a)
  local h, e = get(db_of(c), a[2], "hash")
  if e then return err(e) end
  local out = {}
  if h then
    for _, f in ipairs(hash_order(h)) do
      out[#out + 1] = f
      out[#out + 1] = h.h[f]
    end
  end
  return out
end
C.HKEYS = function(c, a)
  local h, e = get(db_of(c), a[2], "hash")
  if e then return err(e) end
  local out = {}
  if h then
    for i, f in ipairs(hash_order(h)) do out[i] = f end
  end
  return out
end
C.HVALS = function(c, a)
  local h, e = get(db_of(c), a[2], "hash")
  if e then return err(e) end
  local out = {}
  if h then
    for i, f in ipairs(hash_order(h)) do out[i] = h.h[f] end
  end
  return out
end
C.HLEN = function(c, a)
  local h, e = get(db_of(c), a[2], "hash")
  if e then return err(e) end
  return h and count(h.h) or 0
end
C.HEXISTS = function(c, a)
  local h, e = get(db_of(c), a[2], "hash")
  if e then return err(e) end
  return (h and h.h[a[3]] ~= nil) and 1 or 0
end
C.HINCRBY = function(c, a)
  local by = int(a[4] or "")
  if not by then return err(NOTINT) end
  local h, e = get(db_of(c), a[2], "hash", true)
  if e then return err(e) end
  local cur = h.h[a[3]]
  local n = cur == nil and 0 or int(cur)
  if not n then return err("ERR hash value is not an integer") end
  if cur == nil then h.order[#h.order + 1] = a[3] end
  n = n + by
  h.h[a[3]] = tostring(n)
  return n
end

-- Sets
C.SADD = function(c, a)
  local s, e = get(db_of(c), a[2], "set", true)
  if e then return err(e) end
  local n = 0
  for i = 3, #a do
    if not s.m[a[i]] then
      s.m[a[i]] = true
      n = n + 1
    end
  end
  return n
end
C.SREM = function(c, a)
  local d = db_of(c)
  local s, e = get(d, a[2], "set")
  if e then return err(e) end
  if not s then return 0 end
  local n = 0
  for i = 3, #a do
    if s.m[a[i]] then
      s.m[a[i]] = nil
      n = n + 1
    end
  end
  if next(s.m) == nil then d.keys[a[2]] = nil; d.expires[a[2]] = nil end
  return n
end
C.SMEMBERS = function(c, a)
  local s, e = get(db_of(c), a[2], "set")
  if e then return err(e) end
  local out = {}
  if s then
    for m in pairs(s.m) do out[#out + 1] = m end
    table.sort(out)
  end
  return out
end
C.SISMEMBER = function(c, a)
  local s, e = get(db_of(c), a[2], "set")
  if e then return err(e) end
  return (s and s.m[a[3]]) and 1 or 0
end
C.SCARD = function(c, a)
  local s, e = get(db_of(c), a[2], "set")
  if e then return err(e) end
  return s and count(s.m) or 0
end

-- Lists
local function push(c, a, left)
  local l, e = get(db_of(c), a[2], "list", true)
  if e then return err(e) end
  for i = 3, #a do
    if left then table.insert(l.l, 1, a[i]) else l.l[#l.l + 1] = a[i] end
  end
  return #l.l
end
C.LPUSH = function(c, a) return push(c, a, true) end
C.RPUSH = function(c, a) return push(c, a, false) end
local function pop(c, a, left)
  local d = db_of(c)
  local l, e = get(d, a[2], "list")
  if e then return err(e) end
  if not l or #l.l == 0 then return NIL end
  local v = table.remove(l.l, left and 1 or #l.l)
  if #l.l == 0 then d.keys[a[2]] = nil; d.expires[a[2]] = nil end
  return v
end
C.LPOP = function(c, a) return pop(c, a, true) end
C.RPOP = function(c, a) return pop(c, a, false) end
C.LLEN = function(c, a)
  local l, e = get(db_of(c), a[2], "list")
  if e then return err(e) end
  return l and #l.l or 0
end
local function span(n, from, to)
  if from < 0 then from = n + from end
  if to < 0 then to = n + to end
  if from < 0 then from = 0 end
  if to >= n then to = n - 1 end
  return from + 1, to + 1
end
C.LRANGE = function(c, a)
  local from, to = int(a[3] or ""), int(a[4] or "")
  if not from or not to then return err(NOTINT) end
  local l, e = get(db_of(c), a[2], "list")
  if e then return err(e) end
  local out = {}
  if l then
    local i, j = span(#l.l, from, to)
    for k = i, j do out[#out + 1] = l.l[k] end
  end
  return out
end
C.LTRIM = function(c, a)
  local from, to = int(a[3] or ""), int(a[4] or "")
  if not from or not to then return err(NOTINT) end
  local d = db_of(c)
  local l, e = get(d, a[2], "list")
  if e then return err(e) end
  if l then
    local i, j = span(#l.l, from, to)
    local kept = {}
    for k = i, j do kept[#kept + 1] = l.l[k] end
    l.l = kept
    if #kept == 0 then d.keys[a[2]] = nil; d.expires[a[2]] = nil end
  end
  return ok()
end

-- Streams
C.XADD = function(c, a)
  local d = db_of(c)
  local key, i, maxlen = a[2], 3, nil
  local o = a[i] and a[i]:upper()
  if o == "NOMKSTREAM" then return err("ERR moonwire.sim's Redis does not support XADD NOMKSTREAM") end
  if o == "MAXLEN" then
    i = i + 1
    if a[i] == "~" or a[i] == "=" then i = i + 1 end
    maxlen = int(a[i] or "")
    if not maxlen or maxlen < 0 then return err(NOTINT) end
    i = i + 1
  end
  local idarg = a[i]
  if not idarg or #a - i < 2 or (#a - i) % 2 ~= 0 then
    return err("ERR wrong number of arguments for 'xadd' command")
  end
  local s, e = get(d, key, "stream", false)
  if e then return err(e) end
  local last = s and s.last or { 0, 0 }
  local id
  if idarg == "*" then
    id = now > last[1] and { now, 0 } or { last[1], last[2] + 1 }
  else
    id = parse_id(idarg, nil)
    if id and id[2] == nil then id = id[1] > last[1] and { id[1], 0 } or { id[1], last[2] + 1 } end
    if not id then return err("ERR Invalid stream ID specified as stream command argument") end
    if not id_lt(last, id) then
      return err("ERR The ID specified in XADD is equal or smaller than the target stream top item")
    end
  end
  s = s or get(d, key, "stream", true)
  local fields = {}
  for k = i + 1, #a do fields[#fields + 1] = a[k] end
  s.e[#s.e + 1] = { id = id, f = fields }
  s.last = id
  if maxlen and #s.e > maxlen then
    local kept = {}
    for k = #s.e - maxlen + 1, #s.e do kept[#kept + 1] = s.e[k] end
    s.e = kept
  end
  return id_str(id)
end
C.XLEN = function(c, a)
  local s, e = get(db_of(c), a[2], "stream")
  if e then return err(e) end
  return s and #s.e or 0
end
local function xrange(c, a, rev)
  local lo = range_bound(rev and a[4] or a[3], true)
  local hi = range_bound(rev and a[3] or a[4], false)
  if not lo or not hi then return err("ERR Invalid stream ID specified as stream command argument") end
  local n = math.maxinteger
  if a[5] then
    if a[5]:upper() ~= "COUNT" or not a[6] then return err(SYNTAX) end
    n = int(a[6])
    if not n then return err(NOTINT) end
  end
  local s, e = get(db_of(c), a[2], "stream")
  if e then return err(e) end
  local out = {}
  if not s then return out end
  local from, to, step = 1, #s.e, 1
  if rev then from, to, step = #s.e, 1, -1 end
  for k = from, to, step do
    if #out >= n then break end
    local en = s.e[k]
    if not id_lt(en.id, lo) and not id_lt(hi, en.id) then
      out[#out + 1] = { id_str(en.id), en.f }
    end
  end
  return out
end
C.XRANGE = function(c, a) return xrange(c, a, false) end
C.XREVRANGE = function(c, a) return xrange(c, a, true) end

-- Pub/sub
local pushes -- { {conn, value}, ... } of the command running

C.PUBLISH = function(c, a)
  local ch = channels[a[2]]
  if not ch then return 0 end
  for _, sc in ipairs(ch.order) do
    pushes[#pushes + 1] = { sc, { "message", a[2], a[3] } }
  end
  return #ch.order
end
C.SUBSCRIBE = function(c, a)
  for i = 2, #a do
    local name = a[i]
    if not c.subs[name] then
      c.subs[name] = true
      c.nsubs = c.nsubs + 1
      local ch = channels[name]
      if not ch then
        ch = { order = {} }
        channels[name] = ch
      end
      ch.order[#ch.order + 1] = c
    end
    pushes[#pushes + 1] = { c, { "subscribe", name, c.nsubs } }
  end
  return NOREPLY
end
local function unsubscribe(c, name)
  if not c.subs[name] then return end
  c.subs[name] = nil
  c.nsubs = c.nsubs - 1
  local ch = channels[name]
  for k, sc in ipairs(ch.order) do
    if sc == c then
      table.remove(ch.order, k)
      break
    end
  end
  if #ch.order == 0 then channels[name] = nil end
end
C.UNSUBSCRIBE = function(c, a)
  local names = {}
  for i = 2, #a do names[#names + 1] = a[i] end
  if #names == 0 then
    for name in pairs(c.subs) do names[#names + 1] = name end
    table.sort(names)
  end
  for _, name in ipairs(names) do
    unsubscribe(c, name)
    pushes[#pushes + 1] = { c, { "unsubscribe", name, c.nsubs } }
  end
  return NOREPLY
end
C.PUBSUB = function(c, a)
  local sub = (a[2] or ""):upper()
  if sub == "NUMSUB" then
    local out = {}
    for i = 3, #a do
      out[#out + 1] = a[i]
      out[#out + 1] = channels[a[i]] and #channels[a[i]].order or 0
    end
    return out
  elseif sub == "CHANNELS" then
    local out = {}
    for name in pairs(channels) do out[#out + 1] = name end
    table.sort(out)
    return out
  end
  return err("ERR moonwire.sim's Redis does not support 'PUBSUB " .. sub .. "'")
end

-- Scripts
local run -- (conn, args) -> value

local function to_lua(v)
  if v == nil or v == NIL then return false end
  if type(v) == "table" and not v.ok and not v.err then
    local t = {}
    for i = 1, v.n or #v do t[i] = to_lua(v[i]) end
    return t
  end
  return v
end

-- Redis's conversion of a script's result: numbers to integers, arrays up
-- to their first nil, false to a nil reply.
local function from_lua(v)
  local t = type(v)
  if t == "number" then return math.tointeger(v // 1) or 0 end
  if t == "boolean" then return v and 1 or NIL end
  if t == "table" then
    if v.err then return { err = tostring(v.err) } end
    if v.ok then return { ok = tostring(v.ok) } end
    local out = {}
    local i = 1
    while v[i] ~= nil do
      out[i] = from_lua(v[i])
      i = i + 1
    end
    return out
  end
  if t == "string" then return v end
  return NIL
end

local function script_env(c, keys, argv)
  local function call(raise, ...)
    local args = table.pack(...)
    for i = 1, args.n do
      local x = args[i]
      if type(x) == "number" then
        args[i] = math.tointeger(x) and string.format("%d", x) or string.format("%.17g", x)
      elseif type(x) ~= "string" then
        error({ err = "ERR Lua redis lib command arguments must be strings or integers" }, 2)
      end
    end
    args.n = nil
    local name = (args[1] or ""):upper()
    if name == "EVAL" or name == "EVALSHA" or name == "SUBSCRIBE" or name == "SCRIPT" then
      error({ err = "ERR This Redis command is not allowed from script" }, 2)
    end
    local r = run(c, args)
    if type(r) == "table" and r.err then
      if raise then error(r, 2) end
      return r
    end
    return to_lua(r)
  end
  local redis = {
    call = function(...) return call(true, ...) end,
    pcall = function(...) return call(false, ...) end,
    sha1hex = sha1hex,
    error_reply = function(m) return { err = m } end,
    status_reply = function(m) return { ok = m } end,
    log = function() end,
    LOG_DEBUG = 0, LOG_VERBOSE = 1, LOG_NOTICE = 2, LOG_WARNING = 3,
  }
  return {
    KEYS = keys, ARGV = argv, redis = redis,
    string = string, table = table, math = math, tonumber = tonumber, tostring = tostring,
    ipairs = ipairs, pairs = pairs, next = next, type = type, select = select, error = error,
    pcall = pcall, assert = assert, unpack = table.unpack, setmetatable = setmetatable,
    getmetatable = getmetatable, rawget = rawget, rawset = rawset, rawequal = rawequal,
  }
end

local function eval(c, text, sha, a, at)
  local nkeys = int(a[at] or "")
  if not nkeys then return err(NOTINT) end
  if nkeys < 0 or nkeys > #a - at then
    return err("ERR Number of keys can't be greater than number of args")
  end
  local keys, argv = {}, {}
  for i = 1, nkeys do keys[i] = a[at + i] end
  for i = at + nkeys + 1, #a do argv[#argv + 1] = a[i] end
  local f, e = load(text, "@user_script", "t", script_env(c, keys, argv))
  if not f then
    return err("ERR Error compiling script (new function): user_script:" .. tostring(e))
  end
  local okc, r = pcall(f)
  if not okc then
    if type(r) == "table" and r.err then return { err = r.err } end
    return err("ERR Error running script (call to f_" .. sha .. "): " .. tostring(r))
  end
  return from_lua(r)
end

C.EVAL = function(c, a)
  local text = a[2] or ""
  local sha = sha1hex(text)
  scripts[sha] = text
  return eval(c, text, sha, a, 3)
end
C.EVALSHA = function(c, a)
  local sha = (a[2] or ""):lower()
  local text = scripts[sha]
  if not text then return err("NOSCRIPT No matching script. Please use EVAL.") end
  return eval(c, text, sha, a, 3)
end
C.SCRIPT = function(c, a)
  local sub = (a[2] or ""):upper()
  if sub == "LOAD" then
    local text = a[3] or ""
    local f, e = load(text, "@user_script", "t", {})
    if not f then return err("ERR Error compiling script (new function): user_script:" .. tostring(e)) end
    local sha = sha1hex(text)
    scripts[sha] = text
    return sha
  elseif sub == "EXISTS" then
    local out = {}
    for i = 3, #a do out[#out + 1] = scripts[(a[i]):lower()] and 1 or 0 end
    return out
  elseif sub == "FLUSH" then
    scripts = {}
    return ok()
  end
  return err("ERR moonwire.sim's Redis does not support 'SCRIPT " .. sub .. "'")
end

local SUBSCRIBED_OK = { SUBSCRIBE = true, UNSUBSCRIBE = true, PING = true }

run = function(c, a)
  local name = (a[1] or ""):upper()
  local f = C[name]
  if not f then
    return err("ERR moonwire.sim's Redis does not support '" .. (a[1] or "") .. "'")
  end
  if c.nsubs > 0 and not SUBSCRIBED_OK[name] then
    return err("ERR Can't execute '" .. name:lower() .. "': only (P|S)SUBSCRIBE / "
      .. "(P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context")
  end
  return f(c, a)
end

-- What sim_redis.c calls ---------------------------------------------------------------

-- Runs one command of conn (a light userdata) at time t (ms). Returns the
-- reply's RESP text (nil for SUBSCRIBE and UNSUBSCRIBE, whose answers are
-- pushes), then the pushes: conn, RESP, conn, RESP...
function E.command(conn, t, ...)
  local c = conns[conn]
  if not c then
    c = { db = 0, subs = {}, nsubs = 0, id = conn }
    conns[conn] = c
  end
  now = t
  pushes = {}
  local r = run(c, { ... })
  local out = { r ~= NOREPLY and resp(r) or false }
  for _, p in ipairs(pushes) do
    out[#out + 1] = p[1].id
    out[#out + 1] = resp(p[2])
  end
  pushes = nil
  return table.unpack(out)
end

-- A connection went: its subscriptions with it.
function E.close(conn)
  local c = conns[conn]
  if not c then return end
  for name in pairs(c.subs) do unsubscribe(c, name) end
  conns[conn] = nil
end

-- A restart that lost the data (no persistence): keys and scripts.
function E.flush()
  reset()
end

-- For specs: the keys of a database, sorted.
function E.keys(db, t)
  now = t
  local d, out = dbs[db or 0], {}
  if d then
    for k in pairs(d.keys) do
      if lookup(d, k) ~= nil then out[#out + 1] = k end
    end
  end
  table.sort(out)
  return out
end

return E
