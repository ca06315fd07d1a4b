-- The backplane between sim nodes: what crosses nodes goes through the real
-- cluster code (envelopes, outbox, origin check, dedup) over the sim's
-- in-process Redis, which answers what moonwire.redis asks as Redis would.
-- tests/e2e/test_cluster.py and test_hostile_redis.py hold real nodes and a
-- real redis-server to the same.
local sim = require "moonwire.sim"
local helpers = require "helpers"
local json = helpers.json

local APP = [[
local mw = require "moonwire"
local app = {}
function app.on_open(conn) conn:subscribe("t") end
function app.on_message(conn, data)
  local cmd, arg = data:match("^(%S+)%s*(.*)$")
  if cmd == "pub" then
    mw.publish("t", arg)
  elseif cmd == "bcast" then
    mw.broadcast(arg, { except = conn })
  elseif cmd == "to" then
    local id, text = arg:match("^(%S+) (.*)$")
    mw.send(id, text)
  elseif cmd == "redis" then
    local args = {}
    for w in arg:gmatch("%S+") do args[#args + 1] = w end
    local r, err = mw.redis(table.unpack(args))
    conn:send(mw.json.encode({ r = r, err = err }))
  elseif cmd == "cluster" then
    local c = mw.cluster()
    conn:send(mw.json.encode({ up = c.up, delayed = c.delayed, messages = c.outbox.messages }))
  end
end
return app
]]

describe("the backplane between sim nodes #cluster", function()
  local cluster, a, b, path

  before_each(function()
    path = helpers.tempfile(APP)
    cluster = sim.cluster { nodes = 2, script = path }
    a, b = cluster[1], cluster[2]
  end)

  after_each(function()
    cluster:close()
    os.remove(path)
  end)

  local function metric(node, name)
    return tonumber(node:metrics():match("\n" .. name .. " (%d+)"))
  end

  local function ask(c, text)
    c:send(text)
    local got = helpers.texts(c)
    assert.equal(1, #got, table.concat(got, " | "))
    return json.decode(got[1])
  end

  it("makes two nodes with their own ids, both connected to Redis", function()
    assert.equal(2, #cluster)
    assert.equal(4, cluster:redis_links()) -- a subscriber and a command connection each
    local x, y = helpers.connect(a, "/"), helpers.connect(b, "/")
    assert.truthy(x.id:find("^n1%."))
    assert.truthy(y.id:find("^n2%."))
    assert.same({ "mw:n:" .. x.id:match("^(.*)%.%d+$"), 1 },
      cluster:redis("PUBSUB", "NUMSUB", "mw:n:" .. x.id:match("^(.*)%.%d+$")))
  end)

  it("delivers a publish to every subscriber on every node once, in each publisher's order", function()
    local x, y, z = helpers.connect(a, "/"), helpers.connect(b, "/"), helpers.connect(b, "/")
    for i = 1, 3 do
      x:send("pub a" .. i)
      y:send("pub b" .. i)
    end
    local want = { "a1", "b1", "a2", "b2", "a3", "b3" }
    -- The publisher's own node delivers it at once, and never again from Redis.
    assert.same(want, helpers.texts(x))
    assert.same(want, helpers.texts(y))
    assert.same(want, helpers.texts(z))
    assert.equal(3, metric(a, "moonwire_cluster_received_total"))
    assert.equal(3, metric(b, "moonwire_cluster_received_total"))
  end)

  it("carries a broadcast and a send by id to the other node", function()
    local x, y = helpers.connect(a, "/"), helpers.connect(b, "/")
    x:send("bcast all")
    assert.same({ "all" }, helpers.texts(y))
    assert.same({}, helpers.texts(x))
    x:send("to " .. y.id .. " direct")
    assert.same({ "direct" }, helpers.texts(y))
    y:send("to " .. x.id .. " back")
    assert.same({ "back" }, helpers.texts(x))
    y:send("to n1.nosuchnode.1 lost")
    assert.same({}, helpers.texts(x))
  end)

  it("drops a message sent again after its reply was lost: the others get it once", function()
    local x, y = helpers.connect(a, "/"), helpers.connect(b, "/")
    cluster:advance(1000)
    cluster:redis_hold(true) -- Redis runs commands, its replies are slow
    x:send("pub once")
    assert.same({ "once" }, helpers.texts(y)) -- published...
    cluster:redis_down() -- ...but the reply is lost: the outbox sends it again
    cluster:redis_hold(false)
    cluster:redis_up()
    cluster:advance(10000)
    assert.equal(1, metric(b, "moonwire_cluster_duplicates_total"))
    assert.same({}, helpers.texts(y))
    assert.same({ "once" }, helpers.texts(x))
    x:send("pub next")
    assert.same({ "next" }, helpers.texts(y))
  end)

  it("sends again what Redis answered just before it died: the others get it once", function()
    local x, y = helpers.connect(a, "/"), helpers.connect(b, "/")
    cluster:advance(1000)
    x:send("pub early")
    assert.same({ "early" }, helpers.texts(x))
    assert.same({ "early" }, helpers.texts(y))
    cluster:advance(2000) -- past cluster.outbox_replay: early is not sent again
    cluster:redis_hold("messages") -- Redis answers, and has not written the message out...
    x:send("pub gone?")
    assert.same({ "gone?" }, helpers.texts(x))
    assert.same({}, helpers.texts(y))
    cluster:redis_down() -- ...when it dies
    cluster:redis_hold(false)
    cluster:redis_up()
    cluster:advance(10000)
    assert.same({ "gone?" }, helpers.texts(y))
    assert.equal(1, metric(a, "moonwire_cluster_outbox_replayed_total"))
    assert.equal(0, metric(b, "moonwire_cluster_duplicates_total"))
    assert.same({}, helpers.texts(x))
    x:send("pub next")
    assert.same({ "next" }, helpers.texts(y))
  end)

  it("loses what Redis answered just before it died with cluster.outbox_replay = 0", function()
    cluster:close()
    cluster = sim.cluster { nodes = 2, script = path, config = { cluster = { outbox_replay = 0 } } }
    a, b = cluster[1], cluster[2]
    local x, y = helpers.connect(a, "/"), helpers.connect(b, "/")
    cluster:advance(1000)
    cluster:redis_hold("messages")
    x:send("pub gone")
    cluster:redis_down()
    cluster:redis_hold(false)
    cluster:redis_up()
    cluster:advance(10000)
    assert.same({}, helpers.texts(y))
    assert.equal(0, metric(a, "moonwire_cluster_outbox_replayed_total"))
    x:send("pub next")
    assert.same({ "next" }, helpers.texts(y))
  end)

  it("drops a connection whose replies stop coming, after cluster.command_timeout", function()
    local x = helpers.connect(a, "/")
    cluster:redis_hold(true)
    x:send("redis PING")
    assert.same({}, helpers.texts(x)) -- the hook waits for its reply
    cluster:advance(3000)
    assert.same({}, helpers.texts(x))
    cluster:advance(250)
    assert.same({ { err = "redis unavailable" } }, { json.decode(helpers.texts(x)[1]) })
    cluster:redis_hold(false)
    cluster:advance(10000)
    assert.same({ r = "PONG" }, ask(x, "redis PING"))
  end)

  it("holds what crosses nodes while Redis is down, then sends it in order, once", function()
    local x, y = helpers.connect(a, "/"), helpers.connect(b, "/")
    cluster:advance(1000)
    cluster:redis_down()
    assert.same({ up = false, delayed = true, messages = 0 }, ask(x, "cluster"))
    assert.equal("degraded: redis unavailable; outbox 0 message(s), 0 bytes\n", select(2, a:get("/healthz")))
    x:send("pub d1")
    x:send("pub d2")
    x:send("bcast d3")
    assert.same({ "d1", "d2" }, helpers.texts(x)) -- local delivery goes on
    assert.same({}, helpers.texts(y))
    assert.same({ up = false, delayed = true, messages = 3 }, ask(x, "cluster"))
    -- Reconnecting with capped backoff on the virtual clock: 100 ms, doubling
    -- up to cluster.reconnect_max (5 s), each within 80% to 120%.
    local before = metric(a, "moonwire_cluster_reconnects_total")
    cluster:advance(20000)
    local tries = metric(a, "moonwire_cluster_reconnects_total") - before
    assert.is_true(tries >= 12 and tries <= 24, tostring(tries)) -- not 200, nor 2
    assert.same({}, helpers.texts(y))
    cluster:redis_up()
    cluster:advance(6000)
    assert.same({ "d1", "d2", "d3" }, helpers.texts(y))
    assert.same({}, helpers.texts(x))
    assert.same({ up = true, delayed = false, messages = 0 }, ask(x, "cluster"))
    assert.equal("ok\n", select(2, a:get("/healthz")))
  end)

  describe("moonwire.redis", function()
    it("answers the commands a chat app uses as Redis does", function()
      local x, y = helpers.connect(a, "/"), helpers.connect(b, "/")
      assert.same({ r = 1 }, ask(x, "redis INCR hits"))
      assert.same({ r = 2 }, ask(y, "redis INCR hits"))
      assert.same({ r = "OK" }, ask(x, "redis SET k v PX 1000"))
      assert.same({ r = 2 }, ask(x, "redis HSET h f1 v1 f2 v2"))
      assert.same({ r = { "f1", "v1", "f2", "v2" } }, ask(y, "redis HGETALL h"))
      assert.same({ r = 1 }, ask(y, "redis HDEL h f1"))
      assert.same({ r = { "v2" } }, ask(y, "redis HVALS h"))
      assert.same({ r = 1 }, ask(x, "redis SADD s m"))
      assert.same({ r = "1-0" }, ask(x, "redis XADD st 1-0 d x"))
      assert.same({ err = "ERR The ID specified in XADD is equal or smaller than the target stream top item" },
        ask(x, "redis XADD st 1-0 d y"))
      assert.same({ err = "WRONGTYPE Operation against a key holding the wrong kind of value" },
        ask(x, "redis GET h"))
      assert.same({ r = "v" }, ask(y, "redis GET k"))
      -- Keys expire on the virtual clock.
      cluster:advance(999)
      assert.same({ r = "v" }, ask(y, "redis GET k"))
      cluster:advance(1)
      assert.same({}, ask(y, "redis GET k")) -- nil
      assert.same({ r = "PONG" }, ask(x, "redis PING"))
      assert.equal("2", cluster:redis("GET", "hits"))
    end)

    it("runs scripts, and knows them by SHA-1 only once loaded", function()
      local x = helpers.connect(a, "/")
      local sha = ask(x, "redis SCRIPT LOAD return#KEYS+#ARGV").r
      assert.equal(40, #sha)
      assert.same({ r = 3 }, ask(x, "redis EVALSHA " .. sha .. " 1 k a b"))
      assert.same({ err = "NOSCRIPT No matching script. Please use EVAL." },
        ask(x, "redis EVALSHA 0000000000000000000000000000000000000000 0"))
      assert.same({ r = 7 }, ask(x, "redis EVAL return(redis.call('INCRBY','n',7)) 0"))
    end)

    it("fails a command the sim does not support, clearly", function()
      local x = helpers.connect(a, "/")
      assert.same({ err = "ERR moonwire.sim's Redis does not support 'OBJECT'" },
        ask(x, "redis OBJECT ENCODING k"))
    end)

    it("says redis unavailable while Redis is down, and answers again once it is back", function()
      local x = helpers.connect(a, "/")
      cluster:redis_down()
      assert.same({ err = "redis unavailable" }, ask(x, "redis PING"))
      cluster:redis_up()
      cluster:advance(1000)
      assert.same({ r = "PONG" }, ask(x, "redis PING"))
    end)

    it("loses the data when Redis restarts without it", function()
      local x = helpers.connect(a, "/")
      assert.same({ r = "OK" }, ask(x, "redis SET k v"))
      cluster:redis_down { flush = true }
      cluster:redis_up()
      cluster:advance(1000)
      assert.same({}, ask(x, "redis GET k"))
    end)
  end)
end)
