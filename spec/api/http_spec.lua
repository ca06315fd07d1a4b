-- moonwire.http.request under moonwire.sim: srv:http(stub) answers the
-- app's calls on virtual time; the hook waits meanwhile, the connection's next
-- messages wait behind it, and the node's bounds and timeouts apply as they
-- do to libcurl's answers.
local helpers = require "helpers"
local cjson = require "cjson.safe"

local APP = [[
local mw = require "moonwire"
local app = {}
function app.on_message(conn, data)
  local req = mw.json.decode(data)
  if type(req) ~= "table" then
    conn:send("echo:" .. data)
    return
  end
  local ok, res, err = pcall(mw.http.request, req)
  if not ok then
    conn:send(mw.json.encode { raised = res })
  elseif not res then
    conn:send(mw.json.encode { err = err, at = mw.now() })
  else
    conn:send(mw.json.encode { status = res.status, body = res.body, headers = res.headers,
                               at = mw.now() })
  end
end
function app.on_close(conn)
  mw.log.warn("on_close ran")
end
return app
]]

local function ask(client, req)
  client:send(cjson.encode(req))
end

local function answers(client)
  return helpers.json_messages(client)
end

describe("moonwire.http.request in the sim", function()
  local srv

  before_each(function()
    srv = helpers.app_server(APP, { http_client = { max_response = 4096, max_headers = 8,
                                                    max_concurrent = 2, timeout = 2 } })
  end)

  after_each(function()
    srv:close()
  end)

  it("answers from a function stub when virtual time reaches its delay", function()
    local seen
    srv:http(function(req)
      seen = req
      return { status = 201, body = "made", headers = { ["X-Id"] = "7" }, delay = 300 }
    end)
    local c = helpers.connect(srv)
    ask(c, { method = "POST", url = "http://backend/items", body = "x=1",
             headers = { ["Content-Type"] = "text/plain" }, timeout = 1.5 })
    assert.same({ method = "POST", url = "http://backend/items", body = "x=1",
                  headers = { ["Content-Type"] = "text/plain" }, timeout = 1.5 }, seen)
    srv:advance(299)
    assert.same({}, c:received())
    srv:advance(1)
    assert.same({ { status = 201, body = "made", headers = { ["x-id"] = "7" }, at = 300 } },
                answers(c))
  end)

  it("looks a table stub up by method and URL, then by URL", function()
    srv:http {
      ["GET http://backend/a"] = { body = "by method" },
      ["http://backend/b"] = { status = 404 },
      ["http://backend/c"] = function(req) return nil, "refused " .. req.method end,
    }
    local c = helpers.connect(srv)
    ask(c, { url = "http://backend/a" })
    ask(c, { url = "http://backend/b" })
    ask(c, { method = "PUT", url = "http://backend/c" })
    ask(c, { url = "http://backend/d" })
    srv:advance(0)
    local got = answers(c)
    assert.equal("by method", got[1].body)
    assert.equal(200, got[1].status)
    assert.equal(404, got[2].status)
    assert.equal("refused PUT", got[3].err)
    assert.equal("sim: no stub answers GET http://backend/d", got[4].err)
  end)

  it("keeps the connection's order: later messages wait behind the call", function()
    srv:http { ["http://backend/slow"] = { body = "late", delay = 1000 } }
    local c = helpers.connect(srv)
    local other = helpers.connect(srv)
    ask(c, { url = "http://backend/slow" })
    c:send("after")
    other:send("meanwhile")
    assert.same({ "echo:meanwhile" }, helpers.texts(other))
    assert.same({}, c:received())
    srv:advance(1000)
    local got = c:received()
    assert.equal(2, #got)
    assert.equal("late", cjson.decode(got[1].data).body)
    assert.equal("echo:after", got[2].data)
  end)

  it("ends a call past its timeout with timeout, at its timeout", function()
    srv:http { ["http://backend/slow"] = { body = "late", delay = 60000 } }
    local c = helpers.connect(srv)
    ask(c, { url = "http://backend/slow", timeout = 0.25 })
    ask(c, { url = "http://backend/slow" }) -- held until the first ends; then 2 s (http_client.timeout)
    srv:advance(250)
    assert.same({ { err = "timeout", at = 250 } }, answers(c))
    srv:advance(1999)
    assert.same({}, answers(c))
    srv:advance(1)
    assert.same({ { err = "timeout", at = 2250 } }, answers(c))
    assert.matches('moonwire_http_client_requests_total{result="timeout"} 2', srv:metrics(), 1,
                   true)
  end)

  it("refuses an answer over http_client.max_response or max_headers", function()
    local many = {}
    for i = 1, 9 do many["x-" .. i] = "v" end
    srv:http {
      ["http://backend/big"] = { body = string.rep("x", 5000) },
      ["http://backend/fits"] = { body = string.rep("x", 4000) },
      ["http://backend/headers"] = { headers = many },
    }
    local c = helpers.connect(srv)
    ask(c, { url = "http://backend/big" })
    ask(c, { url = "http://backend/fits" })
    ask(c, { url = "http://backend/headers" })
    srv:advance(0)
    local got = answers(c)
    assert.equal("response too large", got[1].err)
    assert.equal(4000, #got[2].body)
    assert.equal("too many headers", got[3].err)
    assert.matches('moonwire_http_client_requests_total{result="too_large"} 2', srv:metrics(), 1,
                   true)
  end)

  it("refuses a call past http_client.max_concurrent", function()
    srv:http { ["http://backend/slow"] = { body = "ok", delay = 100 } }
    local a, b, c = helpers.connect(srv), helpers.connect(srv), helpers.connect(srv)
    ask(a, { url = "http://backend/slow" })
    ask(b, { url = "http://backend/slow" })
    ask(c, { url = "http://backend/slow" })
    assert.same({ { err = "too many requests", at = 0 } }, answers(c))
    srv:advance(100)
    assert.equal("ok", answers(a)[1].body)
    assert.equal("ok", answers(b)[1].body)
    ask(c, { url = "http://backend/slow" })
    srv:advance(100)
    assert.equal("ok", answers(c)[1].body)
  end)

  it("raises for what the script got wrong, and refuses other schemes", function()
    srv:http(function() return { body = "never" } end)
    local c = helpers.connect(srv)
    ask(c, { url = "http://backend/", headers = { ["X-A"] = "1\r\nX-B: 2" } })
    ask(c, { url = "http://backend/", headers = { ["bad name"] = "v" } })
    ask(c, { url = "http://backend/", timeout = 3600 })
    ask(c, { url = "http://backend/", method = "GET /x HTTP/1.1" })
    ask(c, { method = "GET" })
    ask(c, { url = "file:///etc/passwd" })
    local got = answers(c)
    assert.matches("line break", got[1].raised, 1, true)
    assert.matches("is not a header name", got[2].raised, 1, true)
    assert.matches("http_client.max_timeout", got[3].raised, 1, true)
    assert.matches("is not an HTTP method", got[4].raised, 1, true)
    assert.matches("bad 'url'", got[5].raised, 1, true)
    assert.same({ err = "only http and https URLs", at = 0 }, got[6])
  end)

  it("lets a hook whose connection closed go on, then runs its on_close", function()
    srv:http { ["http://backend/slow"] = { body = "late", delay = 500 } }
    local c = helpers.connect(srv)
    ask(c, { url = "http://backend/slow" })
    c:drop()
    srv:logs()
    srv:advance(500)
    local logs = table.concat(srv:logs(), "\n")
    assert.matches("on_close ran", logs, 1, true)
    assert.matches("moonwire_http_client_inflight 0", srv:metrics(), 1, true)
  end)

  it("ends waiting calls with shutting down when the stub goes", function()
    srv:http { ["http://backend/slow"] = { body = "late", delay = 500 } }
    local c = helpers.connect(srv)
    ask(c, { url = "http://backend/slow" })
    srv:http(nil)
    assert.same({ { err = "shutting down", at = 0 } }, answers(c))
    ask(c, { url = "http://backend/slow" })
    assert.same({ { err = "no HTTP client here", at = 0 } }, answers(c))
  end)

  it("fails the call, not the spec, when the stub raises", function()
    srv:http(function() error("stub bug") end)
    local c = helpers.connect(srv)
    ask(c, { url = "http://backend/" })
    srv:advance(0)
    assert.matches("sim stub raised: .*stub bug", answers(c)[1].err)
  end)
end)
