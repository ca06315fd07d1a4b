-- moonwire.sim and a hook that fails: the call of the spec that ran the hook
-- raises the hook's own error (file, line, message, the hook's traceback),
-- once the server has settled, so that the spec fails with what went wrong
-- rather than with an empty list of received messages.
local sim = require "moonwire.sim"
local helpers = require "helpers"

-- Writes an app to a temporary file that stays for the spec (its name is in
-- the error messages); returns the server and the path.
local temps = {}
local function app(source, opts, module)
  local path = helpers.tempfile(source)
  temps[#temps + 1] = path
  opts = opts or {}
  opts.script = path
  return (module or sim).new(opts), path
end

-- The error a call raised, without the spec's "file:line: " in front.
local function error_of(fn)
  local ok, err = pcall(fn)
  assert.is_false(ok, "the call raised nothing")
  return (tostring(err):gsub("^.-:%d+: ", "", 1))
end

local ADDER = [[
local app = {}

function app.on_message(conn, data)
  local total = conn.data.total
  conn.data.total = total + tonumber(data)
  conn:send(tostring(conn.data.total))
end

return app
]]

describe("moonwire.sim when a hook fails", function()
  local srv

  after_each(function()
    if srv then
      pcall(srv.close, srv)
      srv = nil
    end
    for _, p in ipairs(temps) do
      os.remove(p)
    end
    temps = {}
  end)

  it("raises the hook's error, file and line at the send that ran it", function()
    local path
    srv, path = app(ADDER)
    local c = srv:connect("/")
    local err = error_of(function()
      c:send("1")
    end)
    assert.equal(("on_message raised an error (conn %s): %s:5: attempt to perform arithmetic on a nil value (local 'total')\n"
      .. "stack traceback of the hook:\n\t%s:5: in function <%s:3>"):format(c.id, path, path, path), err)
  end)

  it("raises at the spec's line", function()
    srv = app(ADDER)
    local c = srv:connect("/")
    local line = debug.getinfo(1, "l").currentline + 2
    local ok, err = pcall(function()
      c:send("1")
    end)
    assert.is_false(ok)
    assert.matches("^" .. ("spec/api/hook_errors_spec.lua:%d: on_message raised an error"):format(line), err)
  end)

  it("raises once the server has settled: on_error ran and the connection is closed with 1011", function()
    srv = app([[
local mw = require "moonwire"
local app = {}
function app.on_message(conn, data) error("no " .. data) end
function app.on_error(conn, err) mw.broadcast("on_error: " .. err:match("[^\n]*")) end
return app
]])
    local bad, other = srv:connect("/"), srv:connect("/")
    assert.error_matches(function()
      bad:send("thanks")
    end, "on_message raised an error %(conn %S+%): %S+:3: no thanks")
    assert.equal(1011, bad.close_code)
    assert.matches("^on_error: %S+:3: no thanks$", helpers.texts(other)[1])
    assert.equal(1, srv:count())
  end)

  it("raises even when on_error keeps the connection", function()
    srv = app([[
local app = {}
function app.on_message(conn, data) error("kept") end
function app.on_error(conn, err) return true end
return app
]])
    local c = srv:connect("/")
    assert.error_matches(function()
      c:send("x")
    end, "on_message raised an error %(conn %S+%): %S+:2: kept")
    assert.is_true(c:is_open())
  end)

  it("raises from sim.new when on_start fails", function()
    local path = helpers.tempfile("local app = {}\nfunction app.on_start() error('not today') end\nreturn app\n")
    temps[#temps + 1] = path
    local err = error_of(function()
      sim.new { script = path }
    end)
    assert.matches("^on_start raised an error %(conn %-%): " .. path:gsub("%p", "%%%0") .. ":2: not today", err)
  end)

  it("raises from srv:connect when on_open fails, or on_upgrade returns what it may not", function()
    srv = app([[
local app = {}
function app.on_upgrade(req) if req.path == "/odd" then return "yes" end end
function app.on_open(conn, req) if req.path == "/bad" then error("bad path") end end
return app
]])
    assert.error_matches(function()
      srv:connect("/bad")
    end, "on_open raised an error %(conn %S+%): %S+:3: bad path")
    assert.has_error(function()
      srv:connect("/odd")
    end, "on_upgrade must return nothing, true or false")
    assert.truthy(srv:connect("/good"))
  end)

  it("raises from srv:advance when a timer's callback fails", function()
    srv = app([[
local mw = require "moonwire"
local app = {}
function app.on_start() mw.timer(1000, function() local t = nil; return t.x end) end
return app
]])
    srv:advance(999)
    assert.error_matches(function()
      srv:advance(1)
    end, "timer callback raised an error %(conn %-%): %S+:3: attempt to index a nil value %(local 't'%)")
  end)

  it("raises from srv:reload when the new app's on_reload fails", function()
    srv = app("return {}\n")
    local path = helpers.tempfile("local app = {}\nfunction app.on_reload() error('no reload') end\nreturn app\n")
    temps[#temps + 1] = path
    assert.error_matches(function()
      srv:reload(path)
    end, "on_reload raised an error %(conn %-%): %S+:2: no reload")
  end)

  it("raises from client:close and srv:close when on_close fails, and counts the others", function()
    srv = app("local app = {}\nfunction app.on_close(conn) error('closing') end\nreturn app\n")
    local a = srv:connect("/")
    srv:connect("/")
    srv:connect("/")
    assert.error_matches(function()
      a:close()
    end, "on_close raised an error %(conn %S+%): %S+:2: closing")
    local err = error_of(function()
      srv:close()
    end)
    assert.matches("\n%(and 1 more hook failure in this call: srv:logs%(%) has them all%)$", err)
  end)

  it("says a time limit kill the same way", function()
    srv = app("local app = {}\nfunction app.on_message() while true do end end\nreturn app\n",
      { config = { lua = { time_limit = 0.05 } } })
    local c = srv:connect("/")
    assert.error_matches(function()
      c:send("spin")
    end, "on_message ran over its time limit %(conn %S+%): time limit exceeded %(lua%.time_limit = 50 ms%)")
  end)

  it("raises nothing with hook_errors = \"log\": the failure is in srv:logs()", function()
    srv = app(ADDER, { hook_errors = "log" })
    local c = srv:connect("/")
    assert.is_true(c:send("1"))
    assert.equal(1011, c.close_code)
    assert.matches("error app: on_message raised an error", table.concat(srv:logs(), "\n"), 1, true)
  end)

  it("refuses another value of hook_errors or warnings", function()
    assert.has_error(function()
      sim.new { script = "scripts/echo.lua", hook_errors = "ignore" }
    end, "sim.new: 'hook_errors' must be \"raise\" or \"log\"")
    assert.has_error(function()
      sim.new { script = "scripts/echo.lua", warnings = true }
    end, "sim.new: 'warnings' must be \"print\" or \"log\"")
  end)

  it("still raises after the module was required again and garbage was collected", function()
    -- busted restores package.loaded between spec files, so each file
    -- requires the module again.
    package.loaded["moonwire.sim"] = nil
    srv = app(ADDER, nil, require "moonwire.sim")
    collectgarbage()
    collectgarbage()
    local c = srv:connect("/")
    assert.error_matches(function()
      c:send("1")
    end, "attempt to perform arithmetic on a nil value")
  end)
end)

describe("moonwire.sim and a key of the app that looks like a hook", function()
  it("logs a warning with the file and line of the function", function()
    local path = helpers.tempfile([[
local app = {}

function app.onMessage(conn, data)
  conn:send(data)
end

function app.on_mesage(conn, data) end
app.on_join = function() end
app.helper = function() end

return app
]])
    local srv = sim.new { script = path, warnings = "log" } -- not printed on stderr
    os.remove(path)
    local logs = table.concat(srv:logs(), "\n")
    srv:close()
    assert.matches(("warn app: %s:3: app.onMessage is not a hook, so moonwire never calls it (did you mean on_message?)"):format(path), logs, 1, true)
    assert.matches(("warn app: %s:7: app.on_mesage is not a hook, so moonwire never calls it (did you mean on_message?)"):format(path), logs, 1, true)
    assert.matches(("warn app: %s:8: app.on_join is not a hook, so moonwire never calls it (the hooks are on_upgrade, on_open, on_message, on_close, on_error, on_start, on_reload, on_api, on_request)"):format(path), logs, 1, true)
    assert.not_matches("helper", logs, 1, true)
  end)

  it("warns at a reload too, and not about the hooks", function()
    local srv = sim.new { script = "scripts/echo.lua", warnings = "log" }
    assert.same({}, srv:logs())
    local path = helpers.tempfile("local app = {}\napp.OnClose = function() end\nreturn app\n")
    assert.is_true(srv:reload(path))
    os.remove(path)
    local logs = srv:logs()
    srv:close()
    assert.matches(("app.OnClose is not a hook, so moonwire never calls it (did you mean on_close?)"), table.concat(logs, "\n"), 1, true)
    assert.matches(path .. ":2:", table.concat(logs, "\n"), 1, true)
  end)
end)
