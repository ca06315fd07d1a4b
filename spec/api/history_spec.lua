-- Topic history on one node (no backplane): offsets, the epoch, JSON field
-- injection, recovery after an offset, and what happens past the limits.
local helpers = require "helpers"
local json = helpers.json

local APP = [[
local mw = require "moonwire"
local app = {}
function app.on_open(conn, req) conn:subscribe(req.query.room or "room:a") end
function app.on_message(conn, data)
  local cmd, rest = data:match("^(%w+):?(.*)$")
  if cmd == "say" then
    local offset, n = mw.publish("room:a", rest)
    conn:send("offset:" .. tostring(offset) .. ":" .. tostring(n))
  elseif cmd == "plain" then
    conn:send("plain:" .. tostring(mw.publish("other", rest)))
  elseif cmd == "since" then
    local since, epoch, limit = rest:match("^(%d+):([^:]*):?(%d*)$")
    local h = mw.history("room:a", { since = tonumber(since), epoch = epoch ~= "" and epoch or nil,
                                     limit = tonumber(limit) })
    conn:send(mw.json.encode({ offset = h.offset, epoch = h.epoch, recovered = h.recovered,
                               messages = h.messages, n = #h.messages }))
  end
end
return app
]]

describe("moonwire.history without a backplane", function()
  local srv

  before_each(function()
    srv = helpers.app_server(APP, {
      history = { topics = { "room:*" }, size = 5, ttl = 60 },
    })
  end)

  after_each(function()
    srv:close()
  end)

  local function history(c, since, epoch, limit)
    c:send(("since:%d:%s:%s"):format(since, epoch or "", limit or ""))
    return json.decode(helpers.texts(c)[1])
  end

  it("numbers the messages of a history topic and returns the offset", function()
    local a, b = helpers.connect(srv), helpers.connect(srv)
    a:send('say:{"text":"one"}')
    a:send('say:{"text":"two"}')
    local replies = helpers.texts(a)
    assert.same({ 'offset:1:2', 'offset:2:2' }, { replies[2], replies[4] })
    local got = helpers.json_messages(b)
    assert.equal(1, got[1].offset)
    assert.equal(2, got[2].offset)
    assert.equal("two", got[2].text)
    assert.equal(got[1].epoch, got[2].epoch)
  end)

  it("puts the offset in front of an empty object and leaves other payloads alone", function()
    local a, b = helpers.connect(srv), helpers.connect(srv)
    a:send("say:{}")
    a:send("say:not json")
    local got = helpers.texts(b)
    assert.matches('^{"offset":1,"epoch":"[^"]+"}$', got[1])
    assert.equal("not json", got[2])
  end)

  it("recovers exactly what a client missed after its offset", function()
    local a = helpers.connect(srv)
    for i = 1, 4 do a:send(('say:{"n":%d}'):format(i)) end
    helpers.texts(a)
    local epoch = history(a, 0).epoch
    local h = history(a, 2, epoch)
    assert.is_true(h.recovered)
    assert.equal(4, h.offset)
    assert.equal(2, h.n)
    assert.equal(3, json.decode(h.messages[1]).n)
    assert.equal(4, json.decode(h.messages[2]).n)
    -- Nothing missed is a recovery too.
    assert.is_true(history(a, 4, epoch).recovered)
  end)

  it("says so when the gap is too old, an epoch is not this one, or too much was missed", function()
    local a = helpers.connect(srv)
    for i = 1, 8 do a:send(('say:{"n":%d}'):format(i)) end
    helpers.texts(a)
    local epoch = history(a, 0).epoch
    local old = history(a, 1, epoch) -- only 4..8 are kept (size 5)
    assert.is_false(old.recovered)
    assert.equal(5, old.n)
    assert.equal(4, json.decode(old.messages[1]).n)
    assert.is_false(history(a, 6, "another-epoch").recovered)
    local capped = history(a, 4, epoch, 2) -- 5..8 missed, 2 asked for
    assert.is_false(capped.recovered)
    assert.equal(2, capped.n)
    assert.equal(8, json.decode(capped.messages[2]).n)
  end)

  it("forgets a topic after history.ttl of silence", function()
    local a = helpers.connect(srv)
    a:send('say:{"n":1}')
    helpers.texts(a)
    srv:advance(61000)
    local h = history(a, 0)
    assert.equal(0, h.n)
    assert.equal(0, h.offset)
  end)

  it("leaves topics without history as they were", function()
    local a = helpers.connect(srv, "/?room=other")
    local b = helpers.connect(srv, "/?room=other")
    a:send("plain:hello")
    assert.same({ "hello" }, helpers.texts(b))
  end)
end)

describe("moonwire.history when a topic starts over", function()
  it("gives the topic a new epoch after its history expired, so old positions do not recover", function()
    local srv = helpers.app_server(APP, {
      history = { topics = { "room:*" }, size = 5, ttl = 60 },
    })
    local a = helpers.connect(srv)
    for i = 1, 3 do a:send(('say:{"n":%d}'):format(i)) end
    local first = json.decode(helpers.texts(a)[1])
    srv:advance(61000)
    for i = 4, 5 do a:send(('say:{"n":%d}'):format(i)) end
    local again = json.decode(helpers.texts(a)[1])
    assert.equal(1, again.offset)
    assert.are_not.equal(first.epoch, again.epoch)
    a:send(("since:1:%s:"):format(first.epoch))
    local h = json.decode(helpers.texts(a)[1])
    assert.is_false(h.recovered)
    assert.equal(again.epoch, h.epoch)
    srv:close()
  end)
end)
