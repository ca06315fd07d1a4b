-- token_login.lua: who a chat connection is, from a JWT the backend signed.
--
-- The backend that logged the user in signs a short HS256/384/512 token with
-- a secret it shares with moonwire; the page passes it when it connects
-- (?token=..., or "Authorization: Bearer ..." from a client that can set
-- headers). on_upgrade checks it with moonwire.jwt.verify before the 101, so
-- a connection without a valid token never opens, and the nick is the
-- token's, never one the client chose.
--
--   local login = token_login.new(app_chat.jwt, config_error)  -- at load: nil when not configured
--   local nick, status, body = login:check(req)                 -- in on_upgrade
--
-- Settings (app.chat.jwt):
--   key = "..." or key_env = "NAME"  the HMAC secret, or the environment variable that holds it
--                                    (one of the two; at least 32 bytes)
--   algs = { "HS256" }               the algorithms accepted (HMAC ones; the token's own alg
--                                    only says which of these it claims)
--   aud = "...", iss = "..."         when given, the token must carry them
--   leeway = 30                      seconds of clock skew allowed for exp and nbf (0 to 300)
--   claim = "name"                   the claim that holds the nick; "sub" when the token has not it
local _M = {}
_M.__index = _M

local mw = require "moonwire"

local type, format, tostring, ipairs, setmetatable = type, string.format, tostring, ipairs, setmetatable
local getenv = os.getenv

local MIN_KEY = 32
local HMAC_ALGS = { HS256 = true, HS384 = true, HS512 = true }

-- config_error(key, what, got) raises; key is under app.chat.
function _M.new(c, config_error)
  if c == nil or c == false then
    return nil
  end
  if type(c) ~= "table" then
    config_error("jwt", "must be a table { key or key_env, aud, iss, ... }", c)
  end
  local key = c.key
  if key ~= nil and c.key_env ~= nil then
    config_error("jwt", "takes key or key_env, not both", "both")
  end
  if c.key_env ~= nil then
    if type(c.key_env) ~= "string" or c.key_env == "" then
      config_error("jwt.key_env", "must name an environment variable", c.key_env)
    end
    key = getenv(c.key_env)
    if key == nil or key == "" then
      config_error("jwt.key_env", "names an environment variable that is not set", c.key_env)
    end
  elseif key == nil then
    config_error("jwt", "needs key (the secret) or key_env (the environment variable holding it)", nil)
  end
  if type(key) ~= "string" or #key < MIN_KEY then
    -- Not printed: it is a secret. Only its length.
    config_error(c.key_env and "jwt.key_env" or "jwt.key",
      format("must be a secret of at least %d bytes", MIN_KEY),
      type(key) == "string" and (#key .. " bytes") or type(key))
  end
  local algs = c.algs or { "HS256" }
  if type(algs) ~= "table" or #algs == 0 then
    config_error("jwt.algs", "must be a non-empty list such as { \"HS256\" }", algs)
  end
  for i = 1, #algs do
    if not HMAC_ALGS[algs[i]] then
      config_error("jwt.algs", "may hold HS256, HS384 and HS512", algs[i])
    end
  end
  for _, k in ipairs { "aud", "iss", "claim" } do
    if c[k] ~= nil and (type(c[k]) ~= "string" or c[k] == "") then
      config_error("jwt." .. k, "must be a non-empty string", c[k])
    end
  end
  local leeway = c.leeway or 30
  if type(leeway) ~= "number" or leeway < 0 or leeway > 300 then
    config_error("jwt.leeway", "must be a number of seconds from 0 to 300", leeway)
  end
  return setmetatable({
    opts = { key = key, algs = algs, aud = c.aud, iss = c.iss, leeway = leeway },
    claim = c.claim or "name",
  }, _M)
end

-- The token of an upgrade request: ?token=, else an Authorization: Bearer header.
local function token_of(req)
  local t = req.query.token
  if t ~= nil and t ~= "" then
    return t
  end
  local auth = req.headers.authorization
  if auth ~= nil then
    return auth:match("^[Bb]earer +(%S+)$")
  end
  return nil
end

-- Checks the request's token. Returns the user's name (the nick), or nil,
-- the status and the body of the refusal: 401 without a valid token, 403
-- for a valid one without a usable name (valid_nick(name) says why).
function _M:check(req, valid_nick)
  local token = token_of(req)
  if token == nil then
    return nil, 401, "log in first: this chat needs a token (?token=...)"
  end
  local claims, err = mw.jwt.verify(token, self.opts)
  if claims == nil then
    return nil, 401, "bad token (" .. tostring(err) .. ")"
  end
  local name = claims[self.claim]
  if name == nil then
    name = claims.sub
  end
  if type(name) ~= "string" then
    return nil, 403, format("the token names no user (no %s or sub claim)", self.claim)
  end
  local ok, _, why = valid_nick(name)
  if not ok then
    return nil, 403, "the token's user is not a valid nick: " .. why
  end
  return name
end

return _M
