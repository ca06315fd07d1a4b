-- ratelimit.lua: a token bucket kept in a plain table, so it can live in
-- conn.data and survive reloads. Time is whatever clock the caller passes
-- (moonwire.now() in the app: milliseconds, virtual under moonwire.sim).
--
--   local ratelimit = require "ratelimit"
--   local b = ratelimit.new(10, mw.now())          -- a full bucket of 10
--   local ok, wait_ms = ratelimit.take(b, mw.now(), 10, 5)  -- burst 10, 5/s
local _M = {}

local ceil = math.ceil

-- A full bucket: `burst` tokens at time `now`.
function _M.new(burst, now)
  return { tokens = burst, at = now }
end

-- Takes one token from bucket b at time now (ms), after refilling it at
-- per_second tokens a second up to burst. Returns true, or false and the
-- milliseconds to wait until a token is there.
function _M.take(b, now, burst, per_second)
  local tokens = b.tokens
  local elapsed = now - b.at
  if elapsed > 0 then
    tokens = tokens + elapsed * per_second / 1000
    b.at = now
  end
  if tokens > burst then
    tokens = burst -- also shrinks a bucket after the burst was lowered
  end
  if tokens >= 1 then
    b.tokens = tokens - 1
    return true
  end
  b.tokens = tokens
  return false, ceil((1 - tokens) * 1000 / per_second)
end

return _M
