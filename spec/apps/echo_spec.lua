local helpers = require "helpers"

describe("echo.lua", function()
  local srv

  before_each(function()
    srv = helpers.server("scripts/echo.lua")
  end)

  after_each(function()
    srv:close()
  end)

  describe("on_message", function()
    it("sends a text message back to its sender as text", function()
      local c = helpers.connect(srv)
      c:send("héllo")
      assert.same({ { data = "héllo", kind = "text" } }, c:received())
    end)

    it("sends a binary message back as binary", function()
      local c = helpers.connect(srv)
      c:send("\0\1\2\255", "binary")
      assert.same({ { data = "\0\1\2\255", kind = "binary" } }, c:received())
    end)

    it("answers only the sender", function()
      local a, b = helpers.connect(srv), helpers.connect(srv)
      a:send("for a")
      assert.same({}, b:received())
      assert.same({ "for a" }, helpers.texts(a))
    end)

    it("keeps the order of many messages", function()
      local c = helpers.connect(srv)
      local sent = {}
      for i = 1, 50 do
        sent[i] = "m" .. i
        c:send(sent[i])
      end
      assert.same(sent, helpers.texts(c))
    end)
  end)
end)
