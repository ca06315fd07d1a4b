local helpers = require "helpers"

describe("relay.lua", function()
  local srv

  before_each(function()
    srv = helpers.server("scripts/relay.lua")
  end)

  after_each(function()
    srv:close()
  end)

  describe("on_message", function()
    it("delivers a message to every other client but not the sender", function()
      local a, b, c = helpers.connect(srv), helpers.connect(srv), helpers.connect(srv)
      a:send("hi all")
      assert.same({}, a:received())
      assert.same({ "hi all" }, helpers.texts(b))
      assert.same({ "hi all" }, helpers.texts(c))
    end)

    it("keeps the kind of the message", function()
      local a, b = helpers.connect(srv), helpers.connect(srv)
      a:send("\1\2", "binary")
      assert.same({ { data = "\1\2", kind = "binary" } }, b:received())
    end)

    it("stops delivering to a client that left", function()
      local a, b, c = helpers.connect(srv), helpers.connect(srv), helpers.connect(srv)
      c:close()
      a:send("after c left")
      assert.same({ "after c left" }, helpers.texts(b))
      assert.same({}, c:received())
      assert.equal(2, srv:count())
    end)
  end)
end)
