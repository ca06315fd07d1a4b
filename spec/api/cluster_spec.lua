-- moonwire.cluster() and what the sends return on one node (no backplane):
-- nothing waits in an outbox, so nothing is ever "queued". With a backplane,
-- tests/e2e/test_hostile_redis.py runs the same calls against real Redis.
local helpers = require "helpers"

local APP = [[
local mw = require "moonwire"
local app = {}
local function show(...)
  local t = table.pack(...)
  for i = 1, t.n do t[i] = tostring(t[i]) end
  return table.concat(t, ",", 1, t.n)
end
function app.on_open(conn) conn:subscribe("room") end
function app.on_message(conn, data)
  if data == "cluster" then
    conn:send("cluster=" .. show(mw.cluster()))
  elseif data == "sends" then
    conn:send(table.concat({
      "publish=" .. show(mw.publish("room", "p", { except = conn })),
      "broadcast=" .. show(mw.broadcast("b", { except = conn })),
      "send=" .. show(mw.send(conn.id, "s")),
    }, " "))
  end
end
return app
]]

describe("moonwire.cluster without a backplane", function()
  local srv

  before_each(function()
    srv = helpers.app_server(APP)
  end)

  after_each(function()
    srv:close()
  end)

  it("is nil", function()
    local c = helpers.connect(srv, "/")
    c:send("cluster")
    assert.same({ "cluster=nil" }, helpers.texts(c))
  end)

  it("leaves publish, broadcast and send their plain results, never queued", function()
    local c = helpers.connect(srv, "/")
    local other = helpers.connect(srv, "/")
    c:send("sends")
    assert.same({ "s", "publish=1 broadcast=1 send=true" }, helpers.texts(c))
    assert.same({ "p", "b" }, helpers.texts(other))
  end)
end)
