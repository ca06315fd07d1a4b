-- moonwire.crypto: HMAC and SHA-256 against RFC 4231 and FIPS 180 vectors,
-- base64 and base64url against RFC 4648's, strict decoding, random bytes,
-- comparison in constant time; run by an app in the sim.
local helpers = require "helpers"

-- The app runs the Lua chunk each message carries and answers with the
-- JSON of {ok, first result, second result}.
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

local function hex(s)
  return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

describe("moonwire.crypto", function()
  local srv, c

  before_each(function()
    srv = helpers.app_server(APP)
    c = helpers.connect(srv)
  end)

  after_each(function()
    srv:close()
  end)

  -- Runs code in the app; returns ok, a, b.
  local function run(code)
    c:send(code)
    local m = helpers.json_messages(c)
    assert.equal(1, #m)
    local function v(x) if x == helpers.json.null then return nil end return x end
    return m[1].ok, v(m[1].a), v(m[1].b)
  end

  local function hexrun(code)
    local ok, a = run("local function hex(s) return (s:gsub('.', function(c) " ..
                      "return string.format('%02x', c:byte()) end)) end\n" .. code)
    assert.is_true(ok, a)
    return a
  end

  describe("hmac", function()
    it("gives RFC 4231's test case 1 for sha256 and sha512", function()
      local key = ("\\x0b"):rep(20)
      assert.equal("b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
                   hexrun(('return hex(mw.crypto.hmac("sha256", "%s", "Hi There"))'):format(key)))
      assert.equal("87aa7cdea5ef619d4ff0b4241a1d6cb02379f4e2ce4ec2787ad0b30545e17cde" ..
                   "daa833b7d6b8a702038b274eaea3f4e4be9d914eeb61f1702e696c203a126854",
                   hexrun(('return hex(mw.crypto.hmac("sha512", "%s", "Hi There"))'):format(key)))
    end)

    it("gives RFC 4231's test case 2 (a key shorter than the output) and 6 (longer than a block)", function()
      assert.equal("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
                   hexrun('return hex(mw.crypto.hmac("sha256", "Jefe", "what do ya want for nothing?"))'))
      assert.equal("60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
                   hexrun(('return hex(mw.crypto.hmac("sha256", ("\\xaa"):rep(131), %q))')
                     :format("Test Using Larger Than Block-Size Key - Hash Key First")))
      assert.equal("4ece084485813e9088d2c63a041bc5b44f9ef1012a2b588f3cd11f05033ac4c6" ..
                   "0c2ef6ab4030fe8296248df163f44952",
                   hexrun(('return hex(mw.crypto.hmac("sha384", ("\\xaa"):rep(131), %q))')
                     :format("Test Using Larger Than Block-Size Key - Hash Key First")))
    end)

    it("raises for an unknown digest", function()
      local ok, err = run('return mw.crypto.hmac("md5", "k", "d")')
      assert.is_false(ok)
      assert.matches("sha1, sha224, sha256, sha384 or sha512 expected", err)
    end)
  end)

  describe("sha256", function()
    it("gives FIPS 180-2's digests of \"abc\" and of the empty string", function()
      assert.equal("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
                   hexrun('return hex(mw.crypto.sha256("abc"))'))
      assert.equal("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                   hexrun('return hex(mw.crypto.sha256(""))'))
    end)
  end)

  describe("base64", function()
    local vectors = { { "", "" }, { "f", "Zg==" }, { "fo", "Zm8=" }, { "foo", "Zm9v" },
                      { "foob", "Zm9vYg==" }, { "fooba", "Zm9vYmE=" }, { "foobar", "Zm9vYmFy" } }

    it("encodes and decodes RFC 4648's test vectors", function()
      for _, v in ipairs(vectors) do
        assert.same({ true, v[2] }, { run(('return mw.crypto.base64_encode(%q)'):format(v[1])) })
        assert.same({ true, v[1] }, { run(('return mw.crypto.base64_decode(%q)'):format(v[2])) })
        local url = v[2]:gsub("=", "")
        assert.same({ true, url }, { run(('return mw.crypto.base64url_encode(%q)'):format(v[1])) })
        assert.same({ true, v[1] }, { run(('return mw.crypto.base64url_decode(%q)'):format(url)) })
        -- base64url also takes the padded form
        assert.same({ true, v[1] }, { run(('return mw.crypto.base64url_decode(%q)'):format(v[2])) })
      end
    end)

    it("uses - and _ in base64url where base64 has + and /", function()
      assert.same({ true, "-_8" }, { run('return mw.crypto.base64url_encode("\\xfb\\xff")') })
      assert.same({ true, "+/8=" }, { run('return mw.crypto.base64_encode("\\xfb\\xff")') })
      assert.equal("fbff", hexrun('return hex(mw.crypto.base64url_decode("-_8"))'))
    end)

    it("refuses what is not a canonical text: nil and why", function()
      for _, bad in ipairs({ "Zg", "Zg=", "Z===", "Zh==", "Zm9v\n", " Zm9v", "Zm-v", "Zm9v====", "A" }) do
        assert.same({ true, nil, "invalid base64" },
                    { run(('return mw.crypto.base64_decode(%q)'):format(bad)) }, bad)
      end
      for _, bad in ipairs({ "Zh", "Zm+v", "Zm/v", "A", "Zg=", "Zm9v=" }) do
        assert.same({ true, nil, "invalid base64url" },
                    { run(('return mw.crypto.base64url_decode(%q)'):format(bad)) }, bad)
      end
    end)

    it("round-trips every byte value, across OpenSSL's slices", function()
      local ok, same = run([[
        local t = {}
        for i = 0, 5000 do t[#t + 1] = string.char(i % 256) end
        local s = table.concat(t)
        return mw.crypto.base64_decode(mw.crypto.base64_encode(s)) == s
           and mw.crypto.base64url_decode(mw.crypto.base64url_encode(s)) == s]])
      assert.is_true(ok)
      assert.is_true(same)
    end)
  end)

  describe("random", function()
    it("gives n bytes that differ from call to call", function()
      assert.same({ true, 32, false },
                  { run('local a, b = mw.crypto.random(32), mw.crypto.random(32) return #a, a == b') })
      assert.same({ true, "" }, { run('return mw.crypto.random(0)') })
    end)

    it("raises past 65536 bytes or below 0", function()
      for _, n in ipairs({ 65537, -1 }) do
        local ok, err = run(('return mw.crypto.random(%d)'):format(n))
        assert.is_false(ok)
        assert.matches("0 to 65536 bytes", err, 1, true)
      end
      assert.same({ true, 65536 }, { run('return #mw.crypto.random(65536)') })
    end)
  end)

  describe("equal", function()
    it("tells equal byte strings from different ones and different lengths", function()
      assert.same({ true, true, false }, { run('return mw.crypto.equal("abc", "abc"), mw.crypto.equal("abc", "abd")') })
      assert.same({ true, false, true }, { run('return mw.crypto.equal("abc", "ab"), mw.crypto.equal("", "")') })
    end)
  end)
end)
