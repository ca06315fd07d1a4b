-- The server API's commands through moonwire.sim (srv:api), as POST /api/METHOD
-- runs them: the same methods, on_api first, the same JSON answers.
local helpers = require "helpers"
local json = helpers.json

local APP = [[
local mw = require "moonwire"
local app = {}
function app.on_open(conn, req)
  if req.query.room then conn:subscribe(req.query.room) end
end
function app.on_api(method, params)
  if params.topic == "secret" then return false, "not that one" end
  if params.shout then return { topic = params.topic, data = params.data:upper() } end
end
mw.publish = function() error("the API must not use the app's replacement") end
return app
]]

describe("the server API in the sim", function()
  local srv

  before_each(function()
    srv = helpers.app_server(APP, { history = { topics = { "h:*" } } })
  end)

  after_each(function()
    srv:close()
  end)

  it("publishes to a topic's members with the module's own publish", function()
    local a = helpers.connect(srv, "/?room=lobby")
    local b = helpers.connect(srv, "/?room=elsewhere")
    local status, body = srv:api("publish", json.encode { topic = "lobby", data = "hi" })
    assert.equal(200, status)
    assert.same({ result = { delivered = 1 } }, json.decode(body))
    assert.same({ "hi" }, helpers.texts(a))
    assert.same({}, helpers.texts(b))
  end)

  it("lets on_api refuse a command or give it other params", function()
    local a = helpers.connect(srv, "/?room=secret")
    local status, body = srv:api("publish", json.encode { topic = "secret", data = "x" })
    assert.equal(403, status)
    assert.same({ error = { code = 403, message = "not that one" } }, json.decode(body))
    assert.same({}, helpers.texts(a))
    local b = helpers.connect(srv, "/?room=loud")
    status = srv:api("publish", json.encode { topic = "loud", data = "hey", shout = true })
    assert.equal(200, status)
    assert.same({ "HEY" }, helpers.texts(b))
  end)

  it("names the missing field, and refuses what is not a JSON object", function()
    local status, body = srv:api("send", json.encode { data = "x" })
    assert.equal(400, status)
    assert.equal('missing field "id" (string)', json.decode(body).error.message)
    status, body = srv:api("publish", "[1]")
    assert.equal(400, status)
    assert.equal("the params must be a JSON object", json.decode(body).error.message)
    status = srv:api("nope", "{}")
    assert.equal(404, status)
  end)

  it("gives a history topic's offset, and reads the history back", function()
    local status, body = srv:api("publish", json.encode { topic = "h:1", data = "one" })
    assert.equal(200, status)
    local offset = json.decode(body).result.offset
    assert.is_true(offset >= 1 and offset == math.floor(offset))
    status, body = srv:api("history", json.encode { topic = "h:1" })
    assert.equal(200, status)
    assert.same({ "one" }, json.decode(body).result.messages)
  end)

  it("answers empty lists as JSON arrays and an empty presence as an object", function()
    local status, body = srv:api("history", json.encode { topic = "h:never" })
    assert.equal(200, status)
    assert.truthy(body:find('"messages":[]', 1, true), body)
    status, body = srv:api("batch", '{"commands":[]}')
    assert.equal(200, status)
    assert.equal('{"result":{"results":[]}}', body)
    status, body = srv:api("presence", json.encode { topic = "nobody" })
    assert.equal(200, status)
    assert.equal('{"result":{"presence":{}}}', body)
  end)

  it("applies a batch in order and answers each command", function()
    local a = helpers.connect(srv, "/?room=q")
    local status, body = srv:api("batch", json.encode { commands = {
      { method = "publish", params = { topic = "q", data = "1" } },
      { method = "disconnect", params = { id = "nobody" } },
      { method = "publish", params = { topic = "q", data = "2" } },
    } })
    assert.equal(200, status)
    local results = json.decode(body).result.results
    assert.same({ result = { delivered = 1 } }, results[1])
    assert.is_false(results[2].result.disconnected)
    assert.same({ "1", "2" }, helpers.texts(a))
  end)

  it("answers queue.push plainly: the sim has no Redis", function()
    local s2 = helpers.app_server([[
      local mw = require "moonwire"
      return { on_message = function(conn) conn:send(table.concat({ tostring(mw.queue.push("s", { a = "b" })) }, "")) end }
    ]])
    local c = helpers.connect(s2, "/")
    c:send("x")
    assert.same({ "nil" }, helpers.texts(c))
    s2:close()
  end)
end)
