-- Presence on a sharded backplane when a topic's shard goes away and comes
-- back with its data (a cut link, not a new Redis): a member that left
-- meanwhile must not be listed once the shard is back.
local sim = require "moonwire.sim"
local helpers = require "helpers"
local json = helpers.json

local APP = [[
local mw = require "moonwire"
local app = {}
function app.on_open(conn, req)
  if req.query.room then conn:subscribe(req.query.room, { presence = req.query.nick }) end
end
function app.on_message(conn, data)
  local who, err = mw.presence(data)
  if who == nil then conn:send("error " .. tostring(err)) return end
  local nicks = {}
  for _, nick in pairs(who) do nicks[#nicks + 1] = nick end
  table.sort(nicks)
  conn:send(mw.json.encode(nicks))
end
return app
]]

describe("presence on a shard that was cut off #cluster", function()
  local cluster, a, b, path

  before_each(function()
    path = helpers.tempfile(APP)
    cluster = sim.cluster { nodes = 2, shards = 2, script = path }
    a, b = cluster[1], cluster[2]
  end)

  after_each(function()
    cluster:close()
    os.remove(path)
  end)

  local function room_on(shard)
    for i = 1, 100 do
      if cluster:shard_of("room" .. i) == shard then return "room" .. i end
    end
  end

  local function presence(node, room)
    local asker = helpers.connect(node, "/")
    asker:send(room)
    local got = helpers.texts(asker)
    asker:close()
    return got[1]
  end

  it("forgets a member that left while the topic's shard was down", function()
    local room = room_on(1)
    local stays = helpers.connect(a, "/?room=" .. room .. "&nick=stays")
    local leaves = helpers.connect(a, "/?room=" .. room .. "&nick=leaves")
    cluster:advance(1000)
    assert.same({ "leaves", "stays" }, json.decode(presence(b, room)))
    cluster:redis_down { shard = 1 }
    leaves:close()
    cluster:advance(100)
    cluster:redis_up(1)
    cluster:advance(10000)
    assert.same({ "stays" }, json.decode(presence(b, room)))
    assert.is_true(stays ~= nil)
  end)

  it("forgets it also when it was this node's last member of the topic", function()
    local room = room_on(1)
    local other = helpers.connect(b, "/?room=" .. room .. "&nick=other")
    local leaves = helpers.connect(a, "/?room=" .. room .. "&nick=leaves")
    cluster:advance(1000)
    assert.same({ "leaves", "other" }, json.decode(presence(b, room)))
    cluster:redis_down { shard = 1 }
    leaves:close() -- node a no longer has the topic at all
    cluster:advance(100)
    cluster:redis_up(1)
    cluster:advance(10000)
    assert.same({ "other" }, json.decode(presence(b, room)))
    assert.same({ "other" }, json.decode(presence(a, room)))
    assert.is_true(other ~= nil)
  end)
end)
