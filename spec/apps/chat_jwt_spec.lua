-- scripts/chat.lua with app.chat.jwt (scripts/lib/token_login.lua): only a
-- connection with a valid token opens, and its nick is the token's user.
-- Tokens are made by mw.jwt.sign in a second sim server (the signer), and by
-- hand for the ones a good signer never makes. The backend side, PHP signing
-- the tokens, is tested end to end in tests/e2e/test_php_backend.py.
local helpers = require "helpers"
local json = helpers.json

local SCRIPT = "scripts/chat.lua"
local KEY = "a shared secret of 32 bytes or more, for the spec"
local JWT = { key = KEY, aud = "chat", iss = "php-backend" }

-- A sim app that signs what it is sent: {claims, key, alg} -> a token, or
-- {b64 = s} -> base64url(s).
local SIGNER = [[
local mw = require "moonwire"
return {
  on_message = function(conn, data)
    local r = mw.json.decode(data)
    if r.b64 then
      return conn:send(mw.crypto.base64url_encode(r.b64))
    end
    conn:send(assert(mw.jwt.sign(r.claims, { key = r.key, alg = r.alg })))
  end,
}
]]

describe("chat.lua with app.chat.jwt", function()
  local srv, signer, pen

  local function server(jwt)
    local chat = { rate = { burst = 100000, per_second = 100000 }, jwt = jwt }
    return helpers.server(SCRIPT, { history = { topics = { "room:*" } }, app = { chat = chat }, log = { level = "info" } })
  end

  local function ask(req)
    pen:received()
    assert(pen:send(json.encode(req)))
    local got = pen:received()
    assert.equal(1, #got)
    return got[1].data
  end

  local function token(claims, key, alg)
    local c = { aud = "chat", iss = "php-backend", exp = os.time() + 300, iat = os.time() }
    for k, v in pairs(claims) do
      c[k] = v
    end
    return ask { claims = c, key = key or KEY, alg = alg }
  end

  local function msgs(c)
    local out = helpers.json_messages(c)
    for _, m in ipairs(out) do
      m.time, m.epoch = nil, nil
    end
    return out
  end

  before_each(function()
    -- The signer first: the log level is the process's, and the last server sets it.
    signer = helpers.app_server(SIGNER)
    pen = helpers.connect(signer, "/")
    srv = server(JWT)
  end)

  after_each(function()
    srv:close()
    signer:close()
  end)

  describe("on_upgrade", function()
    it("opens a connection with a valid token, its nick the token's name, not the query's", function()
      local c = helpers.connect(srv, "/chat?token=" .. token { sub = "7", name = "ann" } .. "&nick=mallory&room=lobby")
      local m = msgs(c)
      assert.equal("welcome", m[1].type)
      assert.same({ type = "nick_set", nick = "ann" }, m[2])
      assert.same({ type = "joined", room = "lobby", nick = "ann", members = { "ann" } }, m[3])
    end)

    it("takes the nick from sub when the token has no name, and reads a Bearer header", function()
      local c = helpers.connect(srv, "/chat", { headers = { authorization = "Bearer " .. token { sub = "bob" } } })
      local m = msgs(c)
      assert.same({ type = "nick_set", nick = "bob" }, m[2])
    end)

    it("refuses a connection without a token with 401", function()
      local c, status, body = srv:connect("/chat?nick=ann")
      assert.is_nil(c)
      assert.equal(401, status)
      assert.equal("401 Unauthorized: log in first: this chat needs a token (?token=...)\n", body)
    end)

    it("refuses a tampered, a foreign, an expired and an alg none token with 401 and says why", function()
      local good = token { name = "ann" }
      local head, _, sig = good:match("^([^.]+)%.([^.]+)%.([^.]+)$")
      local forged = ask { b64 = json.encode { name = "admin", aud = "chat", iss = "php-backend", exp = os.time() + 300 } }
      local none_head = ask { b64 = '{"alg":"none","typ":"JWT"}' }
      local cases = {
        { head .. "." .. forged .. "." .. sig, "bad signature" },
        { token({ name = "ann" }, "another secret, also long enough to be one"), "bad signature" },
        { token { name = "ann", exp = os.time() - 120 }, "expired" },
        { none_head .. "." .. forged .. "." .. sig, "alg not allowed" },
        { none_head .. "." .. forged .. ".", "malformed" }, -- alg none's empty signature
        { token({ name = "ann" }, KEY, "HS512"), "alg not allowed" },
        { token { name = "ann", aud = "another app" }, "wrong audience" },
        { token { name = "ann", iss = "someone" }, "wrong issuer" },
        { "not.a.token", "malformed" },
      }
      for _, case in ipairs(cases) do
        local c, status, body = srv:connect("/chat?token=" .. case[1])
        assert.is_nil(c)
        assert.equal(401, status)
        assert.equal("401 Unauthorized: bad token (" .. case[2] .. ")\n", body)
      end
      assert.equal(0, srv:count())
    end)

    it("refuses a valid token whose user can not be a nick with 403", function()
      local _, status, body = srv:connect("/chat?token=" .. token { name = "ann smith" })
      assert.equal(403, status)
      assert.matches("^403 Forbidden: the token's user is not a valid nick: a nick is letters", body)
      _, status, body = srv:connect("/chat?token=" .. token { name = 7 })
      assert.equal(403, status)
      assert.equal("403 Forbidden: the token names no user (no name or sub claim)\n", body)
    end)

    it("logs each refusal with the address and the reason, never the token", function()
      srv:logs()
      local t = token { name = "ann", exp = os.time() - 120 }
      srv:connect("/chat?token=" .. t)
      local logs = table.concat(srv:logs(), "\n")
      assert.matches("chat: refused a connection from 127.0.0.1: bad token %(expired%)", logs)
      assert.is_nil(logs:find(t, 1, true))
    end)
  end)

  describe("nick", function()
    it("keeps the token's user: the same nick is fine, another is refused", function()
      local c = helpers.connect(srv, "/chat?token=" .. token { name = "ann" })
      msgs(c)
      assert(c:send(json.encode { type = "nick", nick = "ann", id = 1 }))
      assert(c:send(json.encode { type = "nick", nick = "bob", id = 2 }))
      assert.same({
        { type = "nick_set", nick = "ann", old = "ann", ref = 1 },
        { type = "error", code = "nick_fixed", message = "your nick is the user you logged in as (ann)", ref = 2 },
      }, msgs(c))
    end)

    it("chats as before once open: says reach the room under the token's names", function()
      local ann = helpers.connect(srv, "/chat?room=lobby&token=" .. token { name = "ann" })
      local bob = helpers.connect(srv, "/chat?room=lobby&token=" .. token { name = "bob" })
      helpers.drain(ann, bob)
      assert(bob:send(json.encode { type = "say", text = "hi ann" }))
      local says = helpers.of_type(msgs(ann), "say")
      assert.equal(1, #says)
      assert.equal("bob", says[1].from)
      assert.equal("hi ann", says[1].text)
    end)
  end)

  describe("configuration", function()
    local function load_error(jwt)
      local ok, err = pcall(server, jwt)
      assert.is_false(ok)
      return err
    end

    it("refuses a short secret without printing it, both key and key_env, and neither", function()
      local err = load_error { key = "short" }
      assert.matches("chat: config app.chat.jwt.key must be a secret of at least 32 bytes %(got 5 bytes%)", err)
      assert.is_nil(err:find("short", 1, true) and err:find("got short", 1, true))
      assert.matches("app.chat.jwt takes key or key_env, not both", load_error { key = KEY, key_env = "X" })
      assert.matches("app.chat.jwt needs key %(the secret%) or key_env", load_error { aud = "chat" })
    end)

    it("refuses a key_env that is not set, algorithms that are not HMAC and a bad leeway", function()
      assert.matches("app.chat.jwt.key_env names an environment variable that is not set %(got MW_SPEC_NOT_SET_ANYWHERE%)",
        load_error { key_env = "MW_SPEC_NOT_SET_ANYWHERE" })
      assert.matches("app.chat.jwt.algs may hold HS256, HS384 and HS512 %(got RS256%)", load_error { key = KEY, algs = { "RS256" } })
      assert.matches("app.chat.jwt.algs may hold HS256, HS384 and HS512 %(got none%)", load_error { key = KEY, algs = { "none" } })
      assert.matches("app.chat.jwt.leeway must be a number of seconds from 0 to 300", load_error { key = KEY, leeway = 3600 })
    end)

    it("without the option, opens without a token and takes the query's nick, as before", function()
      srv:close()
      srv = server(nil)
      local c = helpers.connect(srv, "/chat?nick=mallory")
      local m = msgs(c)
      assert.same({ type = "nick_set", nick = "mallory" }, m[2])
    end)
  end)
end)
