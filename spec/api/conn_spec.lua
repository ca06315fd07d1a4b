-- conn objects are checked by the core on every call: a method called on
-- something else raises a clear error, and never reads the wrong memory.
local helpers = require "helpers"

local APP = [[
local mw = require "moonwire"
local app = {}

local function outcome(f, ...)
  local ok, err = pcall(f, ...)
  return ok and "ok" or tostring(err)
end

function app.on_message(conn, data)
  local t = mw.timer(60, function() end)
  local checks = {
    send_on_table = outcome(conn.send, {}, "x"),
    send_on_string = outcome(conn.send, "conn", "x"),
    send_on_timer = outcome(conn.send, t, "x"),
    send_on_file = outcome(conn.send, io.stdout, "x"),
    index_on_timer = outcome(function() return debug.getmetatable(conn).__index(t, "id") end),
    tostring_on_timer = outcome(debug.getmetatable(conn).__tostring, t),
    send_on_self = outcome(conn.send, conn, "still " .. data),
  }
  t:cancel()
  for _, k in ipairs { "send_on_table", "send_on_string", "send_on_timer", "send_on_file",
                       "index_on_timer", "tostring_on_timer", "send_on_self" } do
    conn:send(k .. ": " .. checks[k])
  end
end

return app
]]

describe("conn objects", function()
  local srv

  before_each(function()
    srv = helpers.app_server(APP)
  end)

  after_each(function()
    srv:close()
  end)

  it("refuse to act on anything that is not a conn object", function()
    local c = helpers.connect(srv)
    c:send("here")
    local got = helpers.texts(c)
    assert.equal(8, #got, table.concat(got, "\n"))
    assert.equal("still here", got[1]) -- the send on the conn itself went out
    for i = 2, 7 do
      assert.matches("moonwire.conn expected", got[i], 1, true)
    end
    assert.equal("send_on_self: ok", got[8])
  end)
end)
