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

local FIELDS_APP = [[
local app = {}
local first

local function outcome(f, ...)
  local ok, err = pcall(f, ...)
  return ok and tostring(err) or "error: " .. tostring(err)
end

function app.on_message(conn, data)
  if data == "first" then
    first = conn
    return
  end
  local out = {}
  for _, name in ipairs { "send", "close", "subscribe", "unsubscribe", "topics", "is_open",
                          "buffered" } do
    local m = conn[name]
    out[#out + 1] = name .. "=" .. type(m) .. "," .. tostring(m == conn[name]) .. ","
      .. tostring(rawequal(m, first[name]))
  end
  out[#out + 1] = "id=" .. type(conn.id) .. "," .. tostring(conn.id ~= first.id)
  out[#out + 1] = "data=" .. type(conn.data) .. "," .. tostring(rawequal(conn.data, conn.data))
  out[#out + 1] = "request=" .. type(conn.request) .. "," .. conn.request.path
  out[#out + 1] = "protocol=" .. tostring(conn.protocol)
  for _, k in ipairs { "sen", "sendx", "Send", "send\0", "__index", "" } do
    out[#out + 1] = string.format("%q", k) .. "=" .. tostring(conn[k])
  end
  out[#out + 1] = "[1]=" .. outcome(function() return conn[1] end)
  out[#out + 1] = "[table]=" .. outcome(function() return conn[{}] end)
  conn:send(table.concat(out, "\n"))
end

return app
]]

describe("conn objects' fields", function()
  local srv

  before_each(function()
    srv = helpers.app_server(FIELDS_APP)
  end)

  after_each(function()
    srv:close()
  end)

  it("give every method as the same function on every conn, the fields, and nil for other keys",
     function()
    local a = helpers.connect(srv)
    a:send("first")
    local b = helpers.connect(srv, "/fields")
    b:send("check")
    local got = helpers.texts(b)
    assert.equal(1, #got)
    local lines = {}
    for line in got[1]:gmatch("[^\n]+") do lines[#lines + 1] = line end
    assert.same({
      "send=function,true,true", "close=function,true,true", "subscribe=function,true,true",
      "unsubscribe=function,true,true", "topics=function,true,true",
      "is_open=function,true,true", "buffered=function,true,true",
      "id=string,true", "data=table,true", "request=table,/fields", "protocol=nil",
      '"sen"=nil', '"sendx"=nil', '"Send"=nil', '"send\\0"=nil', '"__index"=nil', '""=nil',
      "[1]=nil",
    }, { table.unpack(lines, 1, #lines - 1) })
    assert.matches("^%[table%]=error: .*bad argument #2 to '_*index' %(string expected, got table%)",
                   lines[#lines])
  end)
end)

local KIND_APP = [[
local app = {}
function app.on_message(conn, data)
  local out = {}
  for _, kind in ipairs { "bogus", 1, {} } do
    local ok, err = pcall(conn.send, conn, "x", kind)
    out[#out + 1] = tostring(ok) .. " " .. tostring(err)
  end
  conn:send(table.concat(out, "\n"))
  conn:send("nil kind", nil)
  conn:send("\255", "binary")
end
return app
]]

describe("conn:send's kind", function()
  it("is text when nil, binary when asked, and anything else raises", function()
    local srv = helpers.app_server(KIND_APP)
    local c = helpers.connect(srv)
    c:send("go")
    local got = c:received()
    srv:close()
    assert.equal(3, #got)
    local lines = {}
    for line in got[1].data:gmatch("[^\n]+") do lines[#lines + 1] = line end
    assert.matches("false .*bad argument #3 to '%?' %(invalid option 'bogus'%)", lines[1])
    assert.matches("false .*bad argument #3 to '%?' %(invalid option '1'%)", lines[2])
    assert.matches("false .*bad argument #3 to '%?' %(string expected, got table%)", lines[3])
    assert.same({ "text", "nil kind" }, { got[2].kind or got[2].type, got[2].data })
    assert.same("\255", got[3].data)
  end)
end)

local UTF8_APP = [[
local mw = require "moonwire"
local app = {}
function app.on_open(conn)
  conn:subscribe("room")
end
function app.on_message(conn, data, kind)
  local function try(what, ...)
    local ok, err = conn.send(conn, ...)
    conn:send(what .. ": " .. tostring(ok) .. " " .. tostring(err))
  end
  if kind == "binary" then
    try("binary as text", data)         -- never checked on the way in
    try("binary as text again", data, "text")
  else
    try("text back", data)
    try("text changed", data .. "\255")
    try("text cut", data:sub(1, 1))      -- the first byte of a two-byte character
    conn:send("published " .. mw.publish("room", data))
  end
end
return app
]]

describe("conn:send's UTF-8 check", function()
  it("lets the text it was given go back, and still refuses bad text made from it or binary",
     function()
    local srv = helpers.app_server(UTF8_APP)
    local c = helpers.connect(srv)
    c:send("\195\169t\195\169")  -- "été"
    c:send("\255\254", "binary")
    local got = helpers.texts(c)
    srv:close()
    assert.same({
      "\195\169t\195\169", "text back: true nil",
      "text changed: nil text is not valid UTF-8 (send it as \"binary\")",
      "text cut: nil text is not valid UTF-8 (send it as \"binary\")",
      "\195\169t\195\169", "published 1",
      "binary as text: nil text is not valid UTF-8 (send it as \"binary\")",
      "binary as text again: nil text is not valid UTF-8 (send it as \"binary\")",
    }, got)
  end)
end)

local REUSE_APP = [[
local app = {}
function app.on_message(conn, data)
  local n = #data
  data = nil
  collectgarbage()
  collectgarbage()
  -- Strings of the message's length, made where its memory was given back.
  local sent = 0
  for i = 1, 50 do
    local bad = string.rep("\255", n - 1) .. string.char(255 - i % 2)
    if conn:send(bad) then sent = sent + 1 end
  end
  conn:send("sent " .. sent)
end
return app
]]

describe("conn:send's UTF-8 check, once the message is collected", function()
  it("checks a string that took the message's place", function()
    local srv = helpers.app_server(REUSE_APP)
    local c = helpers.connect(srv)
    c:send(string.rep("m", 64))
    local got = helpers.texts(c)
    srv:close()
    assert.same({ "sent 0" }, got)
  end)
end)
