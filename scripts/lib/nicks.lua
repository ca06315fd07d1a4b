-- nicks.lua: who has a nick in a room, and cluster-wide nick claims.
--
-- A room's members are its topic's presence (moonwire.presence: connection id
-- -> nick). Nicks are unique per room ignoring ASCII case. On one node that is
-- exact with presence alone: a hook that does not wait runs to the end before
-- any other, so "nobody has it" and "subscribe with it" happen together. With
-- a backplane a hook waits for Redis between the two, so two members joining
-- one room with one nick on two nodes could both pass the check. A claim
-- closes that window: a field of the Redis hash <prefix>:chat:nicks:<room>,
--
--   lower(nick) -> "<connection id> <wall clock ms when claimed>"
--
-- set by one atomic script only when the field is free or already the
-- caller's. A claim is taken over only when it is stale: its holder is not in
-- the room's presence under that nick (presence drops the members of a dead
-- node within cluster.presence_ttl) and it is older than `grace` ms (a
-- holder that has just claimed is not in presence yet). Claims are released
-- on leave, nick change and close; the hash expires `ttl` seconds after the
-- last claim, and the presence check catches what a lost hash forgets.
--
--   local nicks = require "nicks"
--   local claims = nicks.new { redis = mw.redis, prefix = "mw", time = mw.time,
--                              members = function(room) return mw.presence("room:" .. room) end }
--   local ok, why = claims:claim("lobby", "ann", conn.id)   -- true | nil, "taken" | "unavailable"
--   claims:release(conn.id, { { "lobby", "ann" } })
--   nicks.holder(mw.presence("room:lobby"), "ann", conn.id) -- another member's id, or nil
--
-- Without `redis` (one node) claim always succeeds and release does nothing.
local _M = {}

local lower, match, tonumber, pairs = string.lower, string.match, tonumber, pairs
local setmetatable = setmetatable

-- KEYS[1] the room's hash; ARGV: lower nick, id, now (ms), the stale value to
-- replace ("" for none), the hash's TTL (s). Returns "OK", or the holder's value.
_M.CLAIM = [[
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur and cur ~= ARGV[4] and string.match(cur, '^(.*) %d+$') ~= ARGV[2] then
  return cur
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ' ' .. ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 'OK'
]]

-- KEYS: rooms' hashes; ARGV: a lower nick per key, then the id. Deletes the
-- fields the id holds. Returns how many.
_M.RELEASE = [[
local id, n = ARGV[#KEYS + 1], 0
for i = 1, #KEYS do
  local cur = redis.call('HGET', KEYS[i], ARGV[i])
  if cur and string.match(cur, '^(.*) %d+$') == id then
    redis.call('HDEL', KEYS[i], ARGV[i])
    n = n + 1
  end
end
return n
]]

_M.GRACE_MS = 10000
_M.TTL = 86400

-- The id of a member other than `except` whose nick is `key` ignoring case
-- (members: id -> nick, as moonwire.presence returns), and that nick; nil when none.
function _M.holder(members, key, except)
  for id, nick in pairs(members) do
    if id ~= except and lower(nick) == key then
      return id, nick
    end
  end
  return nil
end

local mt = {}
mt.__index = mt

-- opts: redis (moonwire.redis; nil on one node), prefix (cluster.prefix),
-- members(room) -> presence table or nil, err; time() -> ms; grace (ms); ttl (s).
function _M.new(opts)
  return setmetatable({
    redis = opts.redis,
    prefix = (opts.prefix or "mw") .. ":chat:nicks:",
    members = opts.members,
    time = opts.time,
    grace = opts.grace or _M.GRACE_MS,
    ttl = opts.ttl or _M.TTL,
  }, mt)
end

-- Claims nick `key` (lower case) in room for id. Returns true, or nil and
-- "taken" (someone else holds it) or "unavailable" and Redis's error.
function mt:claim(room, key, id)
  local redis = self.redis
  if redis == nil then
    return true
  end
  local hash = self.prefix .. room
  local cur, err = redis("EVAL", _M.CLAIM, 1, hash, key, id, self.time(), "", self.ttl)
  if cur == nil then
    return nil, "unavailable", err
  end
  if cur == "OK" then
    return true
  end
  -- Held by another connection: is that claim alive?
  local holder, at = match(cur, "^(.*) (%d+)$")
  if holder ~= nil then
    local members
    members, err = self.members(room)
    if members == nil then
      return nil, "unavailable", err
    end
    local nick = members[holder]
    if (nick ~= nil and lower(nick) == key) or self.time() - tonumber(at) < self.grace then
      return nil, "taken"
    end
  end
  -- Stale (or not ours to read): replace exactly that value, if it is still there.
  cur, err = redis("EVAL", _M.CLAIM, 1, hash, key, id, self.time(), cur, self.ttl)
  if cur == nil then
    return nil, "unavailable", err
  end
  if cur == "OK" then
    return true
  end
  return nil, "taken"
end

-- Releases the claims of id: list is { { room, key }, ... }. Returns the
-- number released, or nil and Redis's error (0 on one node). One script per
-- 100 rooms (moonwire.redis takes at most 256 arguments).
function mt:release(id, list)
  local redis = self.redis
  if redis == nil then
    return 0
  end
  local total = 0
  for first = 1, #list, 100 do
    local last = math.min(#list, first + 99)
    local count = last - first + 1
    local args = { "EVAL", _M.RELEASE, count }
    for i = first, last do
      args[3 + i - first + 1] = self.prefix .. list[i][1]
      args[3 + count + i - first + 1] = list[i][2]
    end
    args[3 + 2 * count + 1] = id
    local n, err = redis(table.unpack(args))
    if n == nil then
      return nil, err
    end
    total = total + n
  end
  return total
end

return _M
