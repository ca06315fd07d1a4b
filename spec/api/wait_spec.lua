-- Hooks that wait, on one node as in a cluster: moonwire.sleep yields the hook
-- in the sim's virtual time, the connection's later messages are held in
-- order, other connections are served meanwhile, on_close comes last.
local helpers = require "helpers"

local APP = [[
local mw = require "moonwire"
local app = {}
local log = {}
mw.state.log = log
function app.on_message(conn, data)
  if data == "log" then
    conn:send(table.concat(log, "|"))
    return
  end
  local secs = tonumber(data:match("^sleep (%S+)"))
  if secs then
    log[#log + 1] = "begin " .. data
    mw.sleep(secs)
    log[#log + 1] = "end " .. data
  else
    log[#log + 1] = data
  end
  conn:send("done " .. data)
end
function app.on_close(conn, code)
  log[#log + 1] = "close " .. code
end
function app.on_error(conn, err)
  mw.broadcast("error: " .. err)
end
return app
]]

describe("moonwire.sleep", function()
  local srv

  before_each(function()
    srv = helpers.app_server(APP)
  end)

  after_each(function()
    srv:close()
  end)

  it("wakes the hook after that long in virtual time, not before", function()
    local ann = helpers.connect(srv)
    ann:send("sleep 2")
    assert.same({}, helpers.texts(ann))
    srv:advance(1999)
    assert.same({}, helpers.texts(ann))
    srv:advance(1)
    assert.same({ "done sleep 2" }, helpers.texts(ann))
  end)

  it("holds the later messages of the connection and keeps their order", function()
    local ann = helpers.connect(srv)
    ann:send("sleep 1")
    ann:send("a")
    ann:send("sleep 0.5")
    ann:send("b")
    assert.same({}, helpers.texts(ann))
    srv:advance(1000)
    assert.same({ "done sleep 1", "done a" }, helpers.texts(ann))
    srv:advance(500)
    assert.same({ "done sleep 0.5", "done b" }, helpers.texts(ann))
  end)

  it("serves the other connections meanwhile", function()
    local ann, bob = helpers.connect(srv), helpers.connect(srv)
    ann:send("sleep 5")
    bob:send("hi")
    assert.same({ "done hi" }, helpers.texts(bob))
    bob:send("sleep 1")
    srv:advance(1000)
    assert.same({ "done sleep 1" }, helpers.texts(bob))
    assert.same({}, helpers.texts(ann))
    srv:advance(4000)
    assert.same({ "done sleep 5" }, helpers.texts(ann))
  end)

  it("runs on_close after the waiting on_message and the messages it held", function()
    local ann = helpers.connect(srv)
    ann:send("sleep 1")
    ann:send("held")
    ann:close(1000)
    local probe = helpers.connect(srv)
    probe:send("log")
    assert.same({ "begin sleep 1" }, helpers.texts(probe))
    srv:advance(1000)
    probe:send("log")
    assert.same({ "begin sleep 1|end sleep 1|held|close 1000" }, helpers.texts(probe))
  end)

  it("waits in a timer callback", function()
    local app = helpers.app_server([[
      local mw = require "moonwire"
      local app = {}
      function app.on_open(conn)
        mw.timer(100, function()
          conn:send("before")
          mw.sleep(1)
          conn:send("after")
        end)
      end
      return app
    ]])
    local ann = helpers.connect(app)
    app:advance(100)
    assert.same({ "before" }, helpers.texts(ann))
    app:advance(999)
    assert.same({}, helpers.texts(ann))
    app:advance(1)
    assert.same({ "after" }, helpers.texts(ann))
    app:close()
  end)

  it("refuses a sleep longer than lua.max_sleep, in the hook that asked", function()
    local ann = helpers.connect(srv)
    assert.error_matches(function() ann:send("sleep 61") end, "lua.max_sleep", 1, true)
    assert.same({ "error: bad argument #1 to 'sleep' (seconds must be from 0 to lua.max_sleep (60.0))" },
      (function()
        local out = {}
        for i, m in ipairs(helpers.texts(ann)) do out[i] = m:gsub("^(error: )[^:]+:%d+: ", "%1") end
        return out
      end)())
  end)

  it("can not wait in on_error, on_start or while the script loads", function()
    local app = helpers.app_server([[
      local mw = require "moonwire"
      local app = {}
      local why = pcall(mw.sleep, 0) and "slept" or select(2, pcall(mw.sleep, 0))
      function app.on_message(conn, data)
        conn:send(why)
      end
      return app
    ]])
    local ann = helpers.connect(app)
    ann:send("x")
    assert.same({ "this can only wait in on_upgrade, on_open, on_message, on_close, on_request, on_api or a timer callback" },
      helpers.texts(ann))
    app:close()
  end)
end)

describe("lua.max_waiting", function()
  it("refuses one wait more, counted, logged, as an error in that hook only", function()
    local srv = helpers.app_server(APP, { lua = { max_waiting = 2 } })
    local a, b, c = helpers.connect(srv), helpers.connect(srv), helpers.connect(srv)
    a:send("sleep 1")
    b:send("sleep 1")
    assert.error_matches(function() c:send("sleep 1") end, "too many hooks waiting", 1, true)
    local errors = helpers.texts(a) -- on_error broadcasts it
    helpers.drain(b)
    assert.equal(1, #errors)
    assert.matches("too many hooks waiting %(lua.max_waiting is 2%)", errors[1])
    assert.is_false(c:is_open())
    assert.matches("moonwire_lua_wait_refusals_total 1\n", srv:metrics(), 1, true)
    assert.matches("moonwire_lua_hooks_waiting 2\n", srv:metrics(), 1, true)
    local logged = false
    for _, line in ipairs(srv:logs()) do
      logged = logged or line:find("lua.max_waiting (2) hooks wait already", 1, true) ~= nil
    end
    assert.is_true(logged)
    srv:advance(1000)
    assert.same({ "done sleep 1" }, helpers.texts(a))
    assert.same({ "done sleep 1" }, helpers.texts(b))
    assert.matches("moonwire_lua_hooks_waiting 0\n", srv:metrics(), 1, true)
    srv:close()
  end)
end)

local UPGRADE_APP = [[
local mw = require "moonwire"
local app = {}
local log = {}
function app.on_upgrade(req)
  local secs = tonumber(req.query.sleep or "0")
  log[#log + 1] = "upgrade " .. req.query.name
  if secs > 0 then
    mw.sleep(secs)
  end
  if req.query.refuse then
    return false, 403, "no " .. req.query.name
  end
  if req.query.fail then
    error("on_upgrade failed for " .. req.query.name)
  end
end
function app.on_open(conn, req)
  log[#log + 1] = "open " .. req.query.name
  conn.data.name = req.query.name
end
function app.on_message(conn, data)
  if data == "log" then
    conn:send(table.concat(log, "|"))
  else
    conn:send(conn.data.name .. ": " .. data)
  end
end
function app.on_close(conn)
  log[#log + 1] = "close " .. conn.data.name
end
return app
]]

describe("on_upgrade that waits", function()
  local srv

  before_each(function()
    srv = helpers.app_server(UPGRADE_APP)
  end)

  after_each(function()
    srv:close()
  end)

  it("answers the request when it returns: accepted, then on_open", function()
    local ann = assert(srv:connect("/?name=ann&sleep=2"))
    assert.equal(0, ann.status)
    assert.is_false(ann:is_open())
    srv:advance(1999)
    assert.equal(0, ann.status)
    assert.equal(0, srv:count())
    srv:advance(1)
    assert.equal(101, ann.status)
    assert.is_true(ann:is_open())
    ann:send("hi")
    assert.same({ "ann: hi" }, helpers.texts(ann))
  end)

  it("answers the request when it returns: refused with its status and body", function()
    local bob = assert(srv:connect("/?name=bob&sleep=1&refuse=1"))
    assert.equal(0, bob.status)
    srv:advance(1000)
    assert.equal(403, bob.status)
    assert.matches("no bob", bob.body, 1, true)
    assert.is_false(bob:is_open())
    assert.equal(0, srv:count())
  end)

  it("answers 500 when it fails after waiting", function()
    local bad = assert(srv:connect("/?name=bad&sleep=1&fail=1"))
    assert.error_matches(function() srv:advance(1000) end, "on_upgrade failed for bad", 1, true)
    assert.equal(500, bad.status)
    assert.matches("moonwire_handshakes_total{result=\"error\"} 1", srv:metrics(), 1, true)
  end)

  it("serves other connections and upgrades meanwhile", function()
    local slow = assert(srv:connect("/?name=slow&sleep=5"))
    local quick = helpers.connect(srv, "/?name=quick")
    quick:send("hi")
    assert.same({ "quick: hi" }, helpers.texts(quick))
    assert.equal(0, slow.status)
    srv:advance(5000)
    assert.equal(101, slow.status)
    quick:send("log")
    assert.same({ "upgrade slow|upgrade quick|open quick|open slow" }, helpers.texts(quick))
  end)

  it("forgets a client that went away while it waited: no on_open", function()
    local gone = assert(srv:connect("/?name=gone&sleep=1"))
    gone:drop()
    srv:advance(1000)
    assert.is_false(gone:is_open())
    assert.equal(0, srv:count())
    local probe = helpers.connect(srv, "/?name=probe")
    probe:send("log")
    assert.same({ "upgrade gone|upgrade probe|open probe" }, helpers.texts(probe))
  end)

  it("is bounded by limits.handshake_timeout: 408, and its end changes nothing", function()
    local s = helpers.app_server(UPGRADE_APP, { limits = { handshake_timeout = 1 } })
    local late = assert(s:connect("/?name=late&sleep=3"))
    s:advance(1500)
    assert.equal(408, late.status)
    s:advance(2000)
    assert.equal(408, late.status)
    assert.equal(0, s:count())
    assert.matches("moonwire_handshakes_total{result=\"timeout\"} 1", s:metrics(), 1, true)
    s:close()
  end)
end)
