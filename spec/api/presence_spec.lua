-- moonwire.presence and conn:subscribe(topic, {presence = ...}) on one node
-- (no backplane): answered from the local topics, at once.
local helpers = require "helpers"

local APP = [[
local mw = require "moonwire"
local app = {}
function app.on_open(conn, req)
  if req.query.nick then conn:subscribe("lobby", { presence = req.query.nick }) end
  if req.query.quiet then conn:subscribe("lobby") end
end
function app.on_message(conn, data)
  if data == "who" then
    local nicks = {}
    for id, nick in pairs(mw.presence("lobby")) do nicks[#nicks + 1] = nick .. "@" .. id end
    table.sort(nicks)
    conn:send(table.concat(nicks, " "))
  elseif data == "rename" then
    conn:subscribe("lobby", { presence = "ANN" })
    conn:send("ok")
  elseif data == "leave" then
    conn:unsubscribe("lobby")
    conn:send("ok")
  elseif data == "redis" then
    local v, err = mw.redis("PING")
    conn:send(tostring(v) .. ":" .. tostring(err))
  end
end
return app
]]

describe("moonwire.presence without a backplane", function()
  local srv

  before_each(function()
    srv = helpers.app_server(APP)
  end)

  after_each(function()
    srv:close()
  end)

  local function who(c)
    c:send("who")
    return helpers.texts(c)[1]
  end

  it("lists the members that subscribed with presence info, by connection id", function()
    local ann = helpers.connect(srv, "/?nick=ann")
    local bob = helpers.connect(srv, "/?nick=bob")
    helpers.connect(srv, "/?quiet=1") -- subscribed, but not in presence
    assert.equal("ann@" .. ann.id .. " bob@" .. bob.id, who(ann))
  end)

  it("replaces the info when a member subscribes again", function()
    local ann = helpers.connect(srv, "/?nick=ann")
    ann:send("rename")
    helpers.texts(ann)
    assert.equal("ANN@" .. ann.id, who(ann))
  end)

  it("drops a member that unsubscribes or closes", function()
    local ann = helpers.connect(srv, "/?nick=ann")
    local bob = helpers.connect(srv, "/?nick=bob")
    local cat = helpers.connect(srv, "/?nick=cat")
    bob:send("leave")
    cat:close()
    assert.equal("ann@" .. ann.id, who(ann))
  end)

  it("says moonwire.redis needs a backplane", function()
    local ann = helpers.connect(srv, "/?nick=ann")
    ann:send("redis")
    assert.same({ "nil:no cluster configured (cluster.redis)" }, helpers.texts(ann))
  end)
end)
