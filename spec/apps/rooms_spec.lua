local sim = require "moonwire.sim"

describe("rooms.lua", function()
  local srv

  before_each(function()
    srv = sim.new { script = "scripts/rooms.lua" }
  end)

  after_each(function()
    srv:close()
  end)

  it("refuses a client without a nick", function()
    local client, status, body = srv:connect("/?room=lobby")
    assert.is_nil(client)
    assert.equal(400, status)
    assert.equal("400 Bad Request: add ?nick=NAME (letters and digits)\n", body)
  end)

  it("delivers a message to the room but not to the sender", function()
    local ann = srv:connect("/?nick=ann&room=lobby")
    local bob = srv:connect("/?nick=bob&room=lobby")
    local eve = srv:connect("/?nick=eve&room=attic")
    ann:received() -- drops "bob joined"
    ann:send("hi")
    assert.same({ { data = "ann: hi", kind = "text" } }, bob:received())
    assert.same({}, ann:received())
    assert.same({}, eve:received())
  end)

  it("tells the room when someone leaves", function()
    local ann = srv:connect("/?nick=ann")
    local bob = srv:connect("/?nick=bob")
    ann:received()
    bob:close()
    assert.same({ { data = "bob left", kind = "text" } }, ann:received())
  end)

  it("moves a client to another room with /join", function()
    local ann = srv:connect("/?nick=ann&room=lobby")
    local bob = srv:connect("/?nick=bob&room=attic")
    ann:send("/join attic")
    assert.same({ { data = "you are in attic (2 here)", kind = "text" } }, ann:received())
    assert.same({ { data = "ann joined", kind = "text" } }, bob:received())
  end)
end)
