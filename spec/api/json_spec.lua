-- moonwire.json: lua-cjson's safe codec behind argument checks. Whole
-- numbers decode as integers; bad input is nil, err, never a raised error.
local helpers = require "helpers"

local APP = [[
local mw = require "moonwire"
local app = {}

local function show(v, err)
  if v == nil then
    return "nil:" .. tostring(err ~= nil)
  elseif type(v) == "table" then
    return string.format("a=%s(%s) b.c=%s(%s) b.d=%s(%s)", v.a, math.type(v.a), v.b.c,
                         math.type(v.b.c), v.b.d, math.type(v.b.d))
  end
  return string.format("%s(%s)", tostring(v), math.type(v) or type(v))
end

function app.on_message(conn, data)
  local results = {
    show(mw.json.decode('{"a":1,"b":{"c":2.5,"d":-3}}')),
    show(mw.json.decode("7")),
    show(mw.json.decode("7.25")),
    show(mw.json.decode("1e300")),
    show(mw.json.decode("{not json")),
    show(mw.json.encode({ x = 1 })),
    show(mw.json.encode(function() end)),
    select(2, pcall(mw.json.decode)),
  }
  for _, r in ipairs(results) do
    conn:send(r)
  end
end

return app
]]

describe("moonwire.json", function()
  local srv

  before_each(function()
    srv = helpers.app_server(APP)
  end)

  after_each(function()
    srv:close()
  end)

  it("decodes whole numbers as integers, fails softly, checks its argument", function()
    local c = helpers.connect(srv)
    c:send("go")
    local got = helpers.texts(c)
    assert.same({
      "a=1(integer) b.c=2.5(float) b.d=-3(integer)",
      "7(integer)",
      "7.25(float)",
      "1e+300(float)", -- whole, but past what a double holds exactly
      "nil:true",
      '{"x":1}(string)',
      "nil:true",
    }, { table.unpack(got, 1, 7) })
    assert.matches("string expected, got no value", got[8], 1, true)
  end)
end)
