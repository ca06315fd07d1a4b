-- The backplane sharded over two sim Redis (sim.cluster { shards = 2 }): each
-- topic's channel and history on the shard its name hashes to, envelopes
-- numbered per shard (so what crosses on shard 1 is not taken for duplicates
-- of shard 0's), and a shard down holding back only its own topics.
-- tests/e2e/test_cluster_shard.py holds real nodes and two redis-server to
-- the same.
local sim = require "moonwire.sim"
local helpers = require "helpers"
local json = helpers.json

local APP = [[
local mw = require "moonwire"
local app = {}
function app.on_open(conn, req)
  for room in (req.query.rooms or ""):gmatch("[^,]+") do conn:subscribe(room) end
end
function app.on_message(conn, data)
  local cmd, arg = data:match("^(%S+)%s*(.*)$")
  if cmd == "pub" then
    local room, text = arg:match("^(%S+) (.*)$")
    mw.publish(room, room .. ":" .. text, { except = conn })
  elseif cmd == "bcast" then
    mw.broadcast(arg, { except = conn })
  elseif cmd == "to" then
    local id, text = arg:match("^(%S+) (.*)$")
    mw.send(id, text)
  elseif cmd == "cluster" then
    local c, shards = mw.cluster(), {}
    for _, s in ipairs(c.shards) do
      shards[#shards + 1] = { index = s.index, up = s.up, messages = s.outbox.messages,
                              redis = s.redis }
    end
    conn:send(mw.json.encode({ up = c.up, messages = c.outbox.messages, shards = shards }))
  end
end
return app
]]

describe("the backplane sharded over two sim Redis #cluster", function()
  local cluster, a, b, path
  local rooms = {}
  for i = 1, 12 do rooms[i] = "room" .. i end

  before_each(function()
    path = helpers.tempfile(APP)
    cluster = sim.cluster { nodes = 2, shards = 2, script = path }
    a, b = cluster[1], cluster[2]
  end)

  after_each(function()
    cluster:close()
    os.remove(path)
  end)

  local function metric(node, name)
    return tonumber(node:metrics():match("\n" .. name .. " (%d+)"))
  end

  local function on(shard)
    local out = {}
    for _, r in ipairs(rooms) do
      if cluster:shard_of(r) == shard then out[#out + 1] = r end
    end
    return out
  end

  it("connects each node to both shards and places each topic's channel on its shard only", function()
    assert.equal(8, cluster:redis_links()) -- two connections per node and shard
    assert.equal(4, cluster:redis_links(1))
    assert.is_true(#on(0) > 0 and #on(1) > 0)
    helpers.connect(a, "/?rooms=" .. table.concat(rooms, ","))
    helpers.connect(b, "/?rooms=" .. table.concat(rooms, ","))
    for _, r in ipairs(rooms) do
      local s = cluster:shard_of(r)
      assert.same({ "mw:t:" .. r, 2 }, cluster:redis_on(s, "PUBSUB", "NUMSUB", "mw:t:" .. r))
      assert.same({ "mw:t:" .. r, 0 }, cluster:redis_on(1 - s, "PUBSUB", "NUMSUB", "mw:t:" .. r))
    end
  end)

  it("delivers every topic's messages to the other node in order and once, over both shards", function()
    local pub = helpers.connect(a, "/")
    local far = helpers.connect(b, "/?rooms=" .. table.concat(rooms, ","))
    local want = {}
    for i = 1, 5 do
      for _, r in ipairs(rooms) do
        pub:send("pub " .. r .. " " .. i)
        want[#want + 1] = r .. ":" .. i
      end
    end
    local got = helpers.texts(far)
    table.sort(got)
    table.sort(want)
    assert.same(want, got)
    assert.equal(0, metric(b, "moonwire_cluster_duplicates_total"))
    assert.equal(#want, metric(b, "moonwire_cluster_received_total"))
    -- Broadcasts and direct sends go through shard 0.
    pub:send("bcast all")
    pub:send("to " .. far.id .. " direct")
    assert.same({ "all", "direct" }, helpers.texts(far))
  end)

  it("holds back only the topics of a shard that is down, and sends them when it is back", function()
    local r0, r1 = on(0)[1], on(1)[1]
    local pub = helpers.connect(a, "/")
    local far = helpers.connect(b, "/?rooms=" .. r0 .. "," .. r1)
    cluster:advance(1000)
    cluster:redis_down { shard = 1 }
    assert.is_false(cluster:redis_is_up(1))
    assert.is_true(cluster:redis_is_up(0))
    pub:send("pub " .. r0 .. " a")
    pub:send("pub " .. r1 .. " b")
    assert.same({ r0 .. ":a" }, helpers.texts(far))
    pub:send("cluster")
    local st = json.decode(helpers.texts(pub)[1])
    assert.is_false(st.up)
    assert.equal(1, st.messages)
    assert.same({ index = 0, up = true, messages = 0, redis = "moonwire.sim:6379" }, st.shards[1])
    assert.same({ index = 1, up = false, messages = 1, redis = "moonwire.sim:6380" }, st.shards[2])
    assert.equal("degraded: redis unavailable; outbox 1 message(s), " ..
                 a:metrics():match('moonwire_cluster_outbox_bytes{shard="1"} (%d+)') ..
                 " bytes; shard 1 down (moonwire.sim:6380)\n", select(2, a:get("/healthz")))
    assert.equal(0, metric(a, 'moonwire_cluster_shard_up{shard="1"}'))
    assert.equal(1, metric(a, 'moonwire_cluster_shard_up{shard="0"}'))
    cluster:redis_up(1)
    cluster:advance(10000)
    assert.same({ r1 .. ":b" }, helpers.texts(far))
    assert.equal("ok\n", select(2, a:get("/healthz")))
  end)
end)
