-- The Lua state collects its garbage incrementally, Lua's default: a
-- generational major collection is atomic, and on a large heap it stops the
-- loop for as long as it takes (docs/performance.md). A script may still
-- switch modes with collectgarbage.
local helpers = require "helpers"

local APP = [[
local app = {}
function app.on_message(conn, data)
  if data == "mode" then
    local was = collectgarbage("incremental")
    collectgarbage(was)
    conn:send(was)
  elseif data == "count" then
    conn:send(string.format("%d", math.floor(collectgarbage("count"))))
  else
    conn:send(data)
  end
end
return app
]]

describe("the Lua state's collector", function()
  local srv

  before_each(function()
    srv = helpers.app_server(APP)
  end)

  after_each(function()
    srv:close()
  end)

  it("runs in incremental mode", function()
    local c = helpers.connect(srv)
    c:send("mode")
    assert.same({ "incremental" }, helpers.texts(c))
  end)

  it("keeps the memory of echoed messages bounded", function()
    local c = helpers.connect(srv)
    local msg = string.rep("m", 64)
    local function burst(n)
      for _ = 1, n do c:send(msg) end
      helpers.texts(c)
    end
    burst(500)
    c:send("count")
    local before = tonumber(helpers.texts(c)[1])
    burst(20000)
    c:send("count")
    local after = tonumber(helpers.texts(c)[1])
    -- 20,000 strings of 64 bytes are some 2 MB of garbage; what stays is
    -- the collector's pause (200%: the heap may double before a cycle).
    assert.is_true(after < before * 2 + 512, ("%d KB -> %d KB"):format(before, after))
  end)
end)
