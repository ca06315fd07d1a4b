-- lua.time_limit under moonwire.sim: a hook that never ends is stopped, also
-- inside a coroutine the script made and behind its own pcall, on_error hears
-- why, only that connection closes (1011), and the spec's send raises the kill.
local helpers = require "helpers"

local APP = [[
local mw = require "moonwire"
local app = {}
function app.on_message(conn, data)
  if data == "loop" then
    while true do end
  elseif data == "pcall-loop" then
    while true do pcall(function() while true do end end) end
  elseif data == "coroutine-loop" then
    coroutine.wrap(function() while true do end end)()
  end
  conn:send("echo:" .. data)
end
function app.on_error(conn, err)
  mw.broadcast("error:" .. err)
end
return app
]]

describe("lua.time_limit", function()
  local srv

  before_each(function()
    srv = helpers.app_server(APP, { lua = { time_limit = 0.05 } })
  end)

  after_each(function()
    srv:close()
  end)

  for _, trigger in ipairs { "loop", "pcall-loop", "coroutine-loop" } do
    it("stops a hook that does not end: " .. trigger, function()
      local bad, good = helpers.connect(srv), helpers.connect(srv)
      local started = os.clock()
      assert.error_matches(function()
        bad:send(trigger)
      end, "on_message ran over its time limit %(conn %S+%): .*time limit exceeded %(lua%.time_limit = 50 ms%)")
      assert.is_true(os.clock() - started < 5)
      local heard = helpers.texts(good)
      assert.equal(1, #heard)
      assert.matches("time limit exceeded (lua.time_limit = 50 ms)", heard[1], 1, true)
      assert.is_false(bad:is_open())
      assert.equal(1011, bad.close_code)
      good:send("after")
      assert.same({ "echo:after" }, helpers.texts(good))
      assert.matches("moonwire_lua_budget_kills_total 1\n", srv:metrics(), 1, true)
    end)
  end
end)
