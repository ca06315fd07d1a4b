local nicks = require "nicks"

-- A stand-in for moonwire.redis that runs the EVAL scripts it is given (the
-- real text of nicks.CLAIM and nicks.RELEASE) against hashes in a table, with
-- the few redis.call commands they use. calls counts the round trips.
local function fake_redis()
  local db = { hashes = {}, ttl = {}, calls = 0, down = false }
  local function call(cmd, key, field, value)
    local h = db.hashes[key]
    if cmd == "HGET" then
      return h and h[field] or false
    elseif cmd == "HSET" then
      h = h or {}
      db.hashes[key] = h
      h[field] = value
      return 1
    elseif cmd == "HDEL" then
      if h and h[field] then
        h[field] = nil
        return 1
      end
      return 0
    elseif cmd == "EXPIRE" then
      db.ttl[key] = tonumber(field)
      return 1
    end
    error("unexpected command " .. cmd)
  end
  function db.redis(cmd, script, nkeys, ...)
    db.calls = db.calls + 1
    if db.down then
      return nil, "redis unavailable"
    end
    assert.equal("EVAL", cmd)
    local args = { ... }
    local keys, argv = {}, {}
    for i = 1, nkeys do
      keys[i] = args[i]
    end
    for i = nkeys + 1, #args do
      argv[#argv + 1] = tostring(args[i]) -- Redis passes every argument as a string
    end
    local env = { redis = { call = call }, KEYS = keys, ARGV = argv, string = string, tonumber = tonumber }
    return assert(load(script, "script", "t", env))()
  end
  return db
end

describe("nicks.lua", function()
  describe("holder", function()
    it("finds another member with the nick, ignoring ASCII case", function()
      local members = { ["n.1"] = "Ann", ["n.2"] = "bob" }
      assert.same({ "n.1", "Ann" }, { nicks.holder(members, "ann", "n.9") })
      assert.same({ "n.2", "bob" }, { nicks.holder(members, "bob") })
    end)

    it("ignores the asking connection and nicks that differ", function()
      local members = { ["n.1"] = "ann", ["n.2"] = "anna" }
      assert.is_nil(nicks.holder(members, "ann", "n.1"))
      assert.is_nil(nicks.holder(members, "an", nil))
      assert.is_nil(nicks.holder({}, "ann"))
    end)
  end)

  describe("on one node (no redis)", function()
    it("always grants a claim and has nothing to release", function()
      local claims = nicks.new {}
      assert.is_true(claims:claim("lobby", "ann", "n.1"))
      assert.is_true(claims:claim("lobby", "ann", "n.2"))
      assert.equal(0, claims:release("n.1", { { "lobby", "ann" } }))
    end)
  end)

  describe("with redis", function()
    local db, clock, presence, claims

    before_each(function()
      db = fake_redis()
      clock = 1000000
      presence = { lobby = {} }
      claims = nicks.new {
        redis = db.redis,
        prefix = "mw",
        time = function()
          return clock
        end,
        members = function(room)
          if db.down then
            return nil, "redis unavailable"
          end
          return presence[room] or {}
        end,
      }
    end)

    it("grants a free nick once, to its holder again, and stores the id and time", function()
      assert.is_true(claims:claim("lobby", "ann", "a.1"))
      assert.same({ ann = "a.1 1000000" }, db.hashes["mw:chat:nicks:lobby"])
      assert.equal(nicks.TTL, db.ttl["mw:chat:nicks:lobby"])
      clock = clock + 5
      assert.is_true(claims:claim("lobby", "ann", "a.1"))
      assert.equal("a.1 1000005", db.hashes["mw:chat:nicks:lobby"].ann)
    end)

    it("refuses a nick its holder has in the room's presence", function()
      assert.is_true(claims:claim("lobby", "ann", "a.1"))
      presence.lobby["a.1"] = "Ann"
      clock = clock + 60000
      assert.same({ nil, "taken" }, { claims:claim("lobby", "ann", "b.7") })
      assert.equal("a.1 1000000", db.hashes["mw:chat:nicks:lobby"].ann)
    end)

    it("refuses a fresh claim whose holder is not in presence yet (a join on its way)", function()
      assert.is_true(claims:claim("lobby", "ann", "a.1"))
      clock = clock + nicks.GRACE_MS - 1
      assert.same({ nil, "taken" }, { claims:claim("lobby", "ann", "b.7") })
    end)

    it("takes over a stale claim: old, and its holder gone from presence", function()
      assert.is_true(claims:claim("lobby", "ann", "a.1")) -- then node a died
      clock = clock + nicks.GRACE_MS
      assert.is_true(claims:claim("lobby", "ann", "b.7"))
      assert.equal("b.7 " .. clock, db.hashes["mw:chat:nicks:lobby"].ann)
    end)

    it("takes over a claim whose holder now shows another nick (a release that failed)", function()
      assert.is_true(claims:claim("lobby", "ann", "a.1"))
      presence.lobby["a.1"] = "anna"
      clock = clock + nicks.GRACE_MS
      assert.is_true(claims:claim("lobby", "ann", "b.7"))
    end)

    it("keeps its claims per room and per nick", function()
      assert.is_true(claims:claim("lobby", "ann", "a.1"))
      assert.is_true(claims:claim("other", "ann", "b.7"))
      assert.is_true(claims:claim("lobby", "bob", "b.7"))
    end)

    it("releases only the claims the id holds, in one round trip", function()
      assert.is_true(claims:claim("lobby", "ann", "a.1"))
      assert.is_true(claims:claim("other", "ann", "a.1"))
      assert.is_true(claims:claim("third", "ann", "b.7"))
      db.calls = 0
      assert.equal(2, claims:release("a.1", { { "lobby", "ann" }, { "other", "ann" }, { "third", "ann" } }))
      assert.equal(1, db.calls)
      assert.is_nil(db.hashes["mw:chat:nicks:lobby"].ann)
      assert.equal("b.7 1000000", db.hashes["mw:chat:nicks:third"].ann)
      assert.is_true(claims:claim("lobby", "ann", "c.3"))
    end)

    it("releases many rooms in batches of 100", function()
      local list = {}
      for i = 1, 250 do
        assert.is_true(claims:claim("r" .. i, "ann", "a.1"))
        list[i] = { "r" .. i, "ann" }
      end
      db.calls = 0
      assert.equal(250, claims:release("a.1", list))
      assert.equal(3, db.calls)
    end)

    it("says unavailable when Redis is", function()
      db.down = true
      assert.same({ nil, "unavailable", "redis unavailable" }, { claims:claim("lobby", "ann", "a.1") })
      assert.same({ nil, "redis unavailable" }, { claims:release("a.1", { { "lobby", "ann" } }) })
    end)
  end)
end)
