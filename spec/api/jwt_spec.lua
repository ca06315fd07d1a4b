-- moonwire.jwt: tokens made by jwt.sign (and by hand, for the ones a good
-- signer never makes) checked by jwt.verify in an app in the sim. RSA and EC
-- keys are made by `openssl` when the spec runs.
local helpers = require "helpers"

local APP = [[
local mw = require "moonwire"
local app = {}
function app.on_message(conn, code)
  local env = setmetatable({ mw = mw }, { __index = _G })
  local ok, a, b = pcall(load(code, "=spec", "t", env))
  conn:send(mw.json.encode({ ok = ok, a = a == nil and mw.json.null or a,
                             b = b == nil and mw.json.null or b }))
end
return app
]]

local function sh(cmd)
  local ok = os.execute(cmd .. " 2>/dev/null")
  assert(ok, cmd)
end

local function slurp(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end


describe("moonwire.jwt", function()
  local srv, c
  local keys = {}
  local dir

  setup(function()
    dir = os.tmpname()
    os.remove(dir)
    sh("mkdir -p " .. dir)
    sh(("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out %s/rsa.pem"):format(dir))
    sh(("openssl pkey -in %s/rsa.pem -pubout -out %s/rsa.pub"):format(dir, dir))
    sh(("openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out %s/ec.pem"):format(dir))
    sh(("openssl pkey -in %s/ec.pem -pubout -out %s/ec.pub"):format(dir, dir))
    sh(("openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out %s/ec384.pem"):format(dir))
    sh(("openssl pkey -in %s/ec384.pem -pubout -out %s/ec384.pub"):format(dir, dir))
    sh(("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 -out %s/rsa1024.pem"):format(dir))
    sh(("openssl pkey -in %s/rsa1024.pem -pubout -out %s/rsa1024.pub"):format(dir, dir))
    sh(("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -aes256 -pass pass:x -out %s/rsa_enc.pem"):format(dir))
    for _, k in ipairs({ "rsa.pem", "rsa.pub", "ec.pem", "ec.pub", "ec384.pem", "ec384.pub",
                         "rsa1024.pem", "rsa1024.pub", "rsa_enc.pem" }) do
      keys[k] = slurp(dir .. "/" .. k)
    end
  end)

  teardown(function()
    sh("rm -rf " .. dir)
  end)

  before_each(function()
    srv = helpers.app_server(APP)
    c = helpers.connect(srv)
  end)

  after_each(function()
    srv:close()
  end)

  local function run(code)
    c:send(code)
    local m = helpers.json_messages(c)
    assert.equal(1, #m)
    local function v(x) if x == helpers.json.null then return nil end return x end
    return m[1].ok, v(m[1].a), v(m[1].b)
  end

  -- Signs claims (Lua source of a table) with opts (Lua source); returns the token.
  local function sign(claims, opts)
    local ok, token, err = run(("return mw.jwt.sign(%s, %s)"):format(claims, opts))
    assert(ok and token, tostring(token) .. " " .. tostring(err))
    return token
  end

  -- Verifies token with opts (Lua source); returns ok and what verify returned.
  local function verify(token, opts)
    return run(("return mw.jwt.verify(%q, %s)"):format(token, opts))
  end

  local function q(s)
    return ("%q"):format(s)
  end

  describe("HS256", function()
    it("accepts a token it signed and gives its claims, nested ones as tables", function()
      local t = sign('{ sub = "ann", n = 7, room = { name = "lobby", tags = { "a", "b" } } }',
                     '{ key = "secret" }')
      assert.matches("^[%w_-]+%.[%w_-]+%.[%w_-]+$", t)
      local ok, claims, err = verify(t, '{ key = "secret", algs = { "HS256" } }')
      assert.is_true(ok)
      assert.is_nil(err)
      assert.same({ sub = "ann", n = 7, room = { name = "lobby", tags = { "a", "b" } } }, claims)
      assert.same({ true, "integer" }, { run(("return math.type(mw.jwt.verify(%q, { key = 'secret', algs = { 'HS256' } }).n)"):format(t)) })
    end)

    it("accepts a token made elsewhere (RFC 7515's appendix A.1 is HS256 with a known key)", function()
      -- The key of RFC 7515 A.1, decoded from its JWK; the token's exp is in 2011.
      local token = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9" ..
                    ".eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ" ..
                    ".dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
      assert.same({ true, nil, "expired" },
                  { verify(token, ("{ key = mw.crypto.base64url_decode(%q), algs = { 'HS256' } }")
                      :format("AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow")) })
      -- With a leeway past its age, its signature and claims are good.
      local ok2, claims = verify(token, ("{ key = mw.crypto.base64url_decode(%q), algs = { 'HS256' }, leeway = 1e10 }")
                                   :format("AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow"))
      assert.is_true(ok2)
      assert.same({ iss = "joe", exp = 1300819380, ["http://example.com/is_root"] = true }, claims)
    end)

    it("refuses a tampered payload, a tampered signature and the wrong key", function()
      local t = sign('{ sub = "ann" }', '{ key = "secret" }')
      local h, p, s = t:match("^(.-)%.(.-)%.(.*)$")
      local _, other = run('return mw.crypto.base64url_encode(\'{"sub":"bob"}\')')
      assert.same({ true, nil, "bad signature" },
                  { verify(h .. "." .. other .. "." .. s, '{ key = "secret", algs = { "HS256" } }') })
      local flipped = s:sub(1, -2) .. (s:sub(-1) == "A" and "Q" or "A")
      assert.same({ true, nil, "bad signature" },
                  { verify(h .. "." .. p .. "." .. flipped, '{ key = "secret", algs = { "HS256" } }') })
      assert.same({ true, nil, "bad signature" },
                  { verify(t, '{ key = "secreT", algs = { "HS256" } }') })
    end)

    it("refuses tokens that are not three base64url parts: malformed", function()
      local t = sign('{ sub = "ann" }', '{ key = "secret" }')
      for _, bad in ipairs({ "", "abc", t .. ".x", t:gsub("%.[^.]*$", "."), "." .. t, t .. "=",
                             t:gsub("%.", "..", 1), t .. " ", "a.b.c" }) do
        assert.same({ true, nil, "malformed" }, { verify(bad, '{ key = "secret", algs = { "HS256" } }') }, bad)
      end
    end)

    it("refuses a token past 16384 bytes: too large", function()
      local ok, t = run([[
        local big = string.rep("x", 13000)
        return mw.jwt.verify("a." .. big .. ".b" .. big, { key = "k", algs = { "HS256" } })]])
      assert.is_true(ok)
      assert.is_nil(t)
      assert.same({ true, nil, "too large" },
                  { run('return mw.jwt.sign({ blob = string.rep("x", 13000) }, { key = "k" })') })
    end)
  end)

  describe("alg", function()
    it("refuses alg none, signed or not, whatever algs says", function()
      local ok, head = run('return mw.crypto.base64url_encode(\'{"alg":"none","typ":"JWT"}\')')
      assert.is_true(ok)
      local _, body = run('return mw.crypto.base64url_encode(\'{"sub":"admin"}\')')
      assert.same({ true, nil, "malformed" }, -- no signature part at all
                  { verify(head .. "." .. body .. ".", '{ key = "secret", algs = { "HS256" } }') })
      assert.same({ true, nil, "alg not allowed" },
                  { verify(head .. "." .. body .. ".c2ln", '{ key = "secret", algs = { "HS256" } }') })
      local raised, err = verify(head .. "." .. body .. ".c2ln", '{ key = "secret", algs = { "none" } }')
      assert.is_false(raised)
      assert.matches("alg none is never accepted", err)
      local raised2, err2 = run('return mw.jwt.sign({ sub = "x" }, { key = "k", alg = "none" })')
      assert.is_false(raised2)
      assert.matches("alg none is never accepted", err2)
    end)

    it("refuses an algorithm the caller did not list", function()
      local t = sign('{ sub = "ann" }', '{ key = "secret", alg = "HS512" }')
      assert.same({ true, nil, "alg not allowed" }, { verify(t, '{ key = "secret", algs = { "HS256" } }') })
      local ok, claims = verify(t, '{ key = "secret", algs = { "HS256", "HS384", "HS512" } }')
      assert.is_true(ok)
      assert.same({ sub = "ann" }, claims)
    end)

    it("refuses an RS256 token checked with an HMAC key, and an HS256 token made with the public key", function()
      local t = sign('{ sub = "ann" }', ("{ key = %s, alg = 'RS256' }"):format(q(keys["rsa.pem"])))
      -- the caller's algs say HS256: the RS256 token is not allowed
      assert.same({ true, nil, "alg not allowed" }, { verify(t, '{ key = "secret", algs = { "HS256" } }') })
      -- an HMAC secret given for RS256 is a mistake: it raises
      local raised, err = verify(t, '{ key = "secret", algs = { "RS256" } }')
      assert.is_false(raised)
      assert.matches("key is not an RSA public key", err)
      -- the classic forgery: HS256 signed with the public key's PEM text
      local ok, forged = run(([[
        local pub = %s
        local h = mw.crypto.base64url_encode('{"alg":"HS256","typ":"JWT"}')
        local p = mw.crypto.base64url_encode('{"sub":"admin"}')
        return h .. "." .. p .. "." .. mw.crypto.base64url_encode(mw.crypto.hmac("sha256", pub, h .. "." .. p))]])
        :format(q(keys["rsa.pub"])))
      assert.is_true(ok)
      assert.same({ true, nil, "alg not allowed" }, { verify(forged, ("{ key = %s, algs = { 'RS256' } }"):format(q(keys["rsa.pub"]))) })
      local raised2, err2 = verify(forged, ("{ key = %s, algs = { 'HS256' } }"):format(q(keys["rsa.pub"])))
      assert.is_false(raised2)
      assert.matches("key is a PEM block: not an HMAC secret", err2)
      local raised3, err3 = verify(forged, ("{ key = %s, algs = { 'HS256', 'RS256' } }"):format(q(keys["rsa.pub"])))
      assert.is_false(raised3)
      assert.matches("can not share a key", err3)
    end)
  end)

  describe("RS256 and ES256", function()
    it("accepts tokens signed with keys made by openssl, and refuses them tampered", function()
      for _, k in ipairs({ { "RS256", "rsa" }, { "ES256", "ec" }, { "ES384", "ec384" } }) do
        local t = sign('{ sub = "ann", admin = false }', ("{ key = %s, alg = %q }"):format(q(keys[k[2] .. ".pem"]), k[1]))
        local ok, claims = verify(t, ("{ key = %s, algs = { %q } }"):format(q(keys[k[2] .. ".pub"]), k[1]))
        assert.is_true(ok, k[1])
        assert.same({ sub = "ann", admin = false }, claims, k[1])
        local _, body = run('return mw.crypto.base64url_encode(\'{"sub":"ann","admin":true}\')')
        local h, _, s = t:match("^(.-)%.(.-)%.(.*)$")
        assert.same({ true, nil, "bad signature" },
                    { verify(h .. "." .. body .. "." .. s, ("{ key = %s, algs = { %q } }"):format(q(keys[k[2] .. ".pub"]), k[1])) }, k[1])
      end
    end)

    it("verifies an RS256 signature that openssl itself made", function()
      local ok, input = run([[
        return mw.crypto.base64url_encode('{"alg":"RS256","typ":"JWT"}') .. "." ..
               mw.crypto.base64url_encode('{"sub":"from-openssl"}')]])
      assert.is_true(ok)
      local f = assert(io.open(dir .. "/input", "wb"))
      f:write(input)
      f:close()
      sh(("openssl dgst -sha256 -sign %s/rsa.pem -out %s/sig %s/input"):format(dir, dir, dir))
      local sig = slurp(dir .. "/sig")
      local hexsig = sig:gsub(".", function(ch) return ("\\x%02x"):format(ch:byte()) end)
      local ok2, token = run(('return %q .. "." .. mw.crypto.base64url_encode("%s")'):format(input, hexsig))
      assert.is_true(ok2)
      local ok3, claims = verify(token, ("{ key = %s, algs = { 'RS256' } }"):format(q(keys["rsa.pub"])))
      assert.is_true(ok3)
      assert.same({ sub = "from-openssl" }, claims)
    end)

    it("raises for keys that do not fit: a private key to verify, a short RSA key, another curve, an encrypted key", function()
      local t = sign('{ sub = "ann" }', ("{ key = %s, alg = 'ES256' }"):format(q(keys["ec.pem"])))
      local cases = {
        { ("{ key = %s, algs = { 'ES256' } }"):format(q(keys["ec384.pub"])), "ES256 needs a prime256v1 key, not secp384r1" },
        { ("{ key = %s, algs = { 'ES256' } }"):format(q(keys["rsa.pub"])), "key is not an EC public key" },
        { ("{ key = %s, algs = { 'RS256' } }"):format(q(keys["rsa1024.pub"])), "RSA key shorter than 2048 bits" },
      }
      for _, case in ipairs(cases) do
        local raised, err = verify(t, case[1])
        assert.is_false(raised)
        assert.matches(case[2], err, 1, true)
      end
      local raised, err = run(("return mw.jwt.sign({ sub = 'x' }, { key = %s, alg = 'RS256' })"):format(q(keys["rsa_enc.pem"])))
      assert.is_false(raised)
      assert.matches("key is not an RSA private key", err, 1, true)
      local raised2, err2 = run(("return mw.jwt.sign({ sub = 'x' }, { key = %s, alg = 'RS256' })"):format(q(keys["rsa.pub"])))
      assert.is_false(raised2)
      assert.matches("key is not an RSA private key", err2, 1, true)
    end)
  end)

  describe("claims", function()
    it("refuses an expired token, and takes it within the leeway", function()
      local t = sign('{ sub = "ann", exp = os.time() - 30 }', '{ key = "k" }')
      assert.same({ true, nil, "expired" }, { verify(t, '{ key = "k", algs = { "HS256" } }') })
      local ok, claims = verify(t, '{ key = "k", algs = { "HS256" }, leeway = 120 }')
      assert.is_true(ok)
      assert.equal("ann", claims.sub)
      local fresh = sign('{ exp = os.time() + 600 }', '{ key = "k" }')
      assert.is_table(select(2, verify(fresh, '{ key = "k", algs = { "HS256" } }')))
    end)

    it("refuses a token not yet valid (nbf), and takes it within the leeway", function()
      local t = sign('{ sub = "ann", nbf = os.time() + 60 }', '{ key = "k" }')
      assert.same({ true, nil, "not yet valid" }, { verify(t, '{ key = "k", algs = { "HS256" } }') })
      assert.is_table(select(2, verify(t, '{ key = "k", algs = { "HS256" }, leeway = 300 }')))
    end)

    it("refuses exp or nbf that are not numbers: malformed", function()
      local t = sign('{ exp = "tomorrow" }', '{ key = "k" }')
      assert.same({ true, nil, "malformed" }, { verify(t, '{ key = "k", algs = { "HS256" } }') })
    end)

    it("checks the audience (a string or a list) and the issuer when asked", function()
      local one = sign('{ aud = "chat", iss = "https://auth.example" }', '{ key = "k" }')
      local many = sign('{ aud = { "web", "chat" } }', '{ key = "k" }')
      assert.is_table(select(2, verify(one, '{ key = "k", algs = { "HS256" }, aud = "chat", iss = "https://auth.example" }')))
      assert.is_table(select(2, verify(many, '{ key = "k", algs = { "HS256" }, aud = "chat" }')))
      assert.same({ true, nil, "wrong audience" }, { verify(one, '{ key = "k", algs = { "HS256" }, aud = "admin" }') })
      assert.same({ true, nil, "wrong audience" }, { verify(many, '{ key = "k", algs = { "HS256" }, aud = "admin" }') })
      assert.same({ true, nil, "wrong issuer" }, { verify(one, '{ key = "k", algs = { "HS256" }, iss = "https://evil.example" }') })
      assert.same({ true, nil, "wrong issuer" }, { verify(many, '{ key = "k", algs = { "HS256" }, iss = "https://auth.example" }') })
    end)

    it("refuses claims nested past moonwire.json's depth limit", function()
      local ok, t = run([[
        local h = mw.crypto.base64url_encode('{"alg":"HS256","typ":"JWT"}')
        local p = mw.crypto.base64url_encode('{"a":' .. string.rep("[", 200) .. string.rep("]", 200) .. '}')
        return h .. "." .. p .. "." .. mw.crypto.base64url_encode(mw.crypto.hmac("sha256", "k", h .. "." .. p))]])
      assert.is_true(ok)
      assert.same({ true, nil, "malformed" }, { verify(t, '{ key = "k", algs = { "HS256" } }') })
    end)

    it("refuses a payload that is not a JSON object, and empty claims to sign", function()
      local ok, t = run([[
        local h = mw.crypto.base64url_encode('{"alg":"HS256","typ":"JWT"}')
        local p = mw.crypto.base64url_encode('[1,2]')
        return h .. "." .. p .. "." .. mw.crypto.base64url_encode(mw.crypto.hmac("sha256", "k", h .. "." .. p))]])
      assert.is_true(ok)
      assert.same({ true, nil, "malformed" }, { verify(t, '{ key = "k", algs = { "HS256" } }') })
      local raised, err = run('return mw.jwt.sign({}, { key = "k" })')
      assert.is_false(raised)
      assert.matches("not empty", err)
    end)
  end)
end)
