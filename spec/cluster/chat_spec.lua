-- scripts/chat.lua on a cluster of moonwire.sim: two nodes sharing the
-- sim's in-process Redis through the real backplane (envelopes, outbox,
-- dedup, the history and presence scripts). tests/e2e/test_chat_cluster.py
-- runs the same stories against real nodes and a real redis-server: the two
-- agree, or the sim is wrong.
local sim = require "moonwire.sim"
local helpers = require "helpers"
local json = helpers.json

local CONFIG = {
  history = { topics = { "room:*" } },
  app = { chat = { rate = { burst = 100000, per_second = 100000 } } },
}

-- One chat client. Messages not yet expected stay in `seen`, in order: the
-- sim settles after every call, so what is not there has not come.
local Chat = {}
Chat.__index = Chat

local function matches(m, type_, fields)
  if m.type ~= type_ then
    return false
  end
  for k, v in pairs(fields or {}) do
    if m[k] ~= v then
      return false
    end
  end
  return true
end

function Chat:pull()
  for _, m in ipairs(helpers.json_messages(self.c)) do
    self.seen[#self.seen + 1] = m
  end
end

-- The first message of that type with those fields, taken out of `seen`.
function Chat:expect(type_, fields)
  self:pull()
  for i, m in ipairs(self.seen) do
    if matches(m, type_, fields) then
      return table.remove(self.seen, i)
    end
  end
  error(("%s: no %s %s; seen %s"):format(self.nick, type_, json.encode(fields or {}),
    json.encode(self.seen)), 2)
end

-- Every message of that type with those fields, taken out of `seen`.
function Chat:all(type_, fields)
  self:pull()
  local out, rest = {}, {}
  for _, m in ipairs(self.seen) do
    if matches(m, type_, fields) then
      out[#out + 1] = m
    else
      rest[#rest + 1] = m
    end
  end
  self.seen = rest
  return out
end

function Chat:send(msg)
  self.next_id = self.next_id + 1
  msg.id = self.next_id
  assert(self.c:send(json.encode(msg)))
  return self.next_id
end

-- Sends a request; returns its answer (the message with its ref).
function Chat:ask(msg)
  local ref = self:send(msg)
  self:pull()
  for i, m in ipairs(self.seen) do
    if m.ref == ref then
      return table.remove(self.seen, i)
    end
  end
  error(("%s: no answer to %s; seen %s"):format(self.nick, json.encode(msg), json.encode(self.seen)), 2)
end

function Chat:members(room)
  local m = self:ask { type = "members", room = room }
  assert.equal("members", m.type, json.encode(m))
  return m.members
end

local function open(node, nick, room)
  local query = {}
  if nick then query[#query + 1] = "nick=" .. nick end
  if room then query[#query + 1] = "room=" .. room end
  local c = helpers.connect(node, "/chat" .. (#query > 0 and "?" .. table.concat(query, "&") or ""))
  local self = setmetatable({ c = c, seen = {}, next_id = 0, nick = nick }, Chat)
  self.id = self:expect("welcome").id
  if nick then
    self:expect("nick_set")
  end
  return self
end

-- A member of room: joined, its history, then its own join event, which came
-- back through Redis.
local function join(node, nick, room)
  local self = open(node, nick, room)
  self.joined = self:expect("joined", { room = room })
  self.history = self:expect("history", { room = room })
  self.own_join = self:expect("presence", { room = room, event = "join", nick = nick })
  return self
end

local function texts(list)
  local out = {}
  for i, m in ipairs(list) do
    out[i] = m.text or (m.event .. ":" .. m.nick)
  end
  return out
end

local function offsets(list)
  local out = {}
  for i, m in ipairs(list) do
    out[i] = m.offset
  end
  return out
end

local function range(from, to)
  local out = {}
  for i = from, to do
    out[#out + 1] = i
  end
  return out
end

describe("chat.lua on a cluster #cluster", function()
  local cluster, a, b

  before_each(function()
    cluster = sim.cluster { nodes = 2, script = "scripts/chat.lua", config = CONFIG }
    a, b = cluster[1], cluster[2]
  end)

  after_each(function()
    cluster:close()
  end)

  it("shares members, presence events, says and history across nodes", function()
    local ann = join(a, "ann", "lobby")
    assert.same({ "ann" }, ann.joined.members)
    -- A room that never had a message: offset 0, no epoch yet.
    assert.equal(0, ann.history.offset)
    assert.is_nil(ann.history.epoch)
    local bob = join(b, "bob", "lobby")
    assert.same({ "ann", "bob" }, bob.joined.members) -- presence of the other node
    local bob_join = ann:expect("presence", { event = "join", nick = "bob" })
    assert.same({ "ann", "bob" }, ann:members("lobby"))
    assert.same({ "ann", "bob" }, bob:members("lobby"))

    -- A say crosses nodes, with one offset for everyone, the sender included.
    local ref = ann:send { type = "say", room = "lobby", text = "hello from a" }
    local mine = ann:expect("say", { text = "hello from a" })
    local sent = ann:expect("sent", { ref = ref })
    local theirs = bob:expect("say", { text = "hello from a" })
    assert.same(mine, theirs)
    assert.equal("ann", theirs.from)
    assert.equal(bob_join.offset + 1, theirs.offset)
    assert.equal(theirs.offset, sent.offset)
    bob:send { type = "say", text = "hi from b" }
    assert.equal(theirs.offset + 1, ann:expect("say", { text = "hi from b" }).offset)

    -- A nick change on b is an event on a; the member list follows.
    local reply = bob:ask { type = "nick", nick = "robert" }
    assert.equal("nick_set", reply.type)
    assert.equal("bob", reply.old)
    ann:expect("presence", { event = "nick", nick = "robert", old = "bob" })
    assert.same({ "ann", "robert" }, ann:members("lobby"))

    -- A late joiner on b gets the history, says of a included, one gapless sequence.
    local cat = join(b, "cat", "lobby")
    assert.same({ "hello from a", "hi from b" }, texts(helpers.of_type(cat.history.messages, "say")))
    assert.same(range(1, cat.history.offset), offsets(cat.history.messages))
    ann:expect("presence", { event = "join", nick = "cat" })

    -- Leaving on b is an event on a, and the member lists follow at once.
    assert.equal("left", cat:ask({ type = "leave", room = "lobby" }).type)
    assert.equal("left", ann:expect("presence", { event = "leave", nick = "cat" }).reason)
    assert.same({ "ann", "robert" }, ann:members("lobby"))

    -- Closing on a is a leave on b, "disconnected".
    ann.c:close()
    assert.equal("disconnected", bob:expect("presence", { event = "leave", nick = "ann" }).reason)
    assert.same({ "robert" }, bob:members("lobby"))
  end)

  it("delivers a private message to a nick on the other node, and to nobody else", function()
    local ann = join(a, "ann", "lobby")
    local bob = join(b, "Bob", "lobby")
    local cat = join(a, "cat", "lobby")
    local pm = ann:ask { type = "private", room = "lobby", to = "BOB", text = "psst, bob" }
    assert.equal("private", pm.type)
    assert.equal("Bob", pm.to)
    local got = bob:expect("private")
    assert.same({ "ann", "Bob", "psst, bob" }, { got.from, got.to, got.text })
    assert.is_nil(got.ref)
    -- ...and back, from b to a.
    bob:ask { type = "private", to = "ann", text = "hi ann" }
    assert.equal("hi ann", ann:expect("private").text)
    assert.equal("no_such_member", ann:ask({ type = "private", to = "nobody", text = "?" }).code)
    assert.same({}, cat:all("private"))
    assert.same({}, bob:all("private"))
  end)

  it("keeps nicks unique per room across nodes, ignoring case", function()
    join(a, "ann", "lobby")
    local other = open(b, "ANN")
    local e = other:ask { type = "join", room = "lobby" }
    assert.equal("nick_taken", e.code)
    assert.equal("lobby", e.room)
    assert.equal("joined", other:ask({ type = "join", room = "attic" }).type)
    -- Nor can a member of a shared room take it with a nick change.
    local bob = join(b, "bob", "lobby")
    assert.equal("nick_taken", bob:ask({ type = "nick", nick = "Ann" }).code)
  end)

  it("lets a client that dropped recover exactly what it missed, on the other node", function()
    local ann = join(a, "ann", "lobby")
    local bob = join(b, "bob", "lobby")
    local cat = join(a, "cat", "lobby")
    for i = 0, 2 do
      ann:send { type = "say", text = "before " .. i }
    end
    local says = cat:all("say")
    local last = says[#says]
    assert.equal("before 2", last.text)
    local position = { last.offset, last.epoch }
    cat.c:drop() -- cat drops...

    -- ...and misses messages from both nodes.
    bob:expect("presence", { event = "leave", nick = "cat" })
    for i = 0, 2 do
      ann:send { type = "say", text = "missed a" .. i }
      bob:send { type = "say", text = "missed b" .. i }
    end

    -- cat comes back on the other node with its position.
    local back = open(b, "cat")
    back:send { type = "join", room = "lobby", since = position[1], epoch = position[2] }
    assert.same({ "ann", "bob", "cat" }, back:expect("joined", { room = "lobby" }).members)
    local h = back:expect("history", { room = "lobby" })
    assert.is_true(h.recovered)
    assert.equal(position[2], h.epoch)
    assert.same(range(position[1] + 1, h.offset), offsets(h.messages))
    -- One sequence, the same on both nodes: in the order they were said.
    assert.same({ "leave:cat", "missed a0", "missed b0", "missed a1", "missed b1", "missed a2",
      "missed b2" }, texts(h.messages))
    -- Then the live messages go on from there.
    local own = back:expect("presence", { event = "join", nick = "cat" })
    assert.equal(h.offset + 1, own.offset)
    ann:send { type = "say", text = "welcome back" }
    assert.equal(own.offset + 1, back:expect("say", { text = "welcome back" }).offset)

    -- A position from another epoch does not recover: the latest messages come.
    local dan = open(a, "dan")
    dan:send { type = "join", room = "lobby", since = position[1], epoch = "not-this-one" }
    h = dan:expect("history", { room = "lobby" })
    assert.is_false(h.recovered)
    assert.equal(position[2], h.epoch)
    assert.equal(h.offset, h.messages[#h.messages].offset)
  end)

  it("drops a killed node's members from the member list within presence_ttl", function()
    local ann = join(a, "ann", "lobby")
    join(b, "bob", "lobby")
    ann:expect("presence", { event = "join", nick = "bob" })
    cluster:kill(2) -- no on_close reaches Redis: only presence_ttl tells
    assert.same({}, ann:all("presence"))
    assert.same({ "ann", "bob" }, ann:members("lobby"))
    assert.equal("nick_taken", open(a, "bob"):ask({ type = "join", room = "lobby" }).code)
    cluster:advance(29000)
    assert.same({ "ann", "bob" }, ann:members("lobby"))
    cluster:advance(1000) -- cluster.presence_ttl after its last heartbeat
    assert.same({ "ann" }, ann:members("lobby"))
    -- (bob's nick claim goes stale 10 s after it was made on the wall clock,
    -- mw.time(), which virtual time does not move: test_chat_cluster.py
    -- checks that a new bob can then join.)
  end)

  describe("when Redis is down", function()
    local ann, cat, bob, before

    before_each(function()
      ann = join(a, "ann", "lobby")
      cat = join(a, "cat", "lobby")
      bob = join(b, "bob", "lobby")
      before = ann:expect("presence", { event = "join", nick = "bob" })
      cluster:advance(1000) -- the nodes have counted each other on Redis
      cluster:redis_down()
    end)

    local function what_needs_the_cluster_is_unavailable()
      for _, request in ipairs {
        { type = "members" },
        { type = "private", to = "bob", text = "?" },
        { type = "history" },
        { type = "join", room = "other" },
        { type = "nick", nick = "anna" },
      } do
        local reply = ann:ask(request)
        assert.equal("unavailable", reply.code, json.encode(request))
        assert.truthy(reply.message:find("^the cluster is unavailable %("), reply.message)
      end
    end

    it("holds says in the outbox, then delivers them after, in order, once", function()
      cluster:advance(250) -- chat.lua looks at moonwire.cluster() every 250 ms
      for _, c in ipairs { ann, cat, bob } do
        c:expect("delivery", { delayed = true })
      end
      local status, body = a:get("/healthz")
      assert.equal(200, status)
      assert.equal("degraded: redis unavailable; outbox 0 message(s), 0 bytes\n", body)
      local refs = {}
      for i = 1, 3 do
        refs[i] = ann:send { type = "say", text = "during " .. i }
        local sent = ann:expect("sent", { ref = refs[i] })
        assert.is_true(sent.delayed)
        assert.is_nil(sent.offset)
      end
      bob:send { type = "say", text = "during on b" }
      what_needs_the_cluster_is_unavailable()
      -- A room's messages are numbered by Redis: nobody has them yet, on either node.
      for _, c in ipairs { ann, cat, bob } do
        assert.same({}, c:all("say"))
      end
      status, body = a:get("/healthz")
      assert.truthy(body:find("^degraded: redis unavailable; outbox 3 message%(s%)"), body)

      -- The nodes retry with backoff on the virtual clock; nothing goes while Redis is off.
      cluster:advance(10000)
      assert.same({}, ann:all("say"))
      cluster:redis_up()
      cluster:advance(10000)

      -- Each say reaches every member once, in the order said, numbered
      -- after what Redis had (it kept its data).
      local want = { "during 1", "during 2", "during 3", "during on b" }
      local seen = {}
      for i, c in ipairs { ann, cat, bob } do
        local says = c:all("say")
        local own = {}
        for _, m in ipairs(says) do
          if m.from == "ann" then own[#own + 1] = m.text end
        end
        assert.same({ "during 1", "during 2", "during 3" }, own)
        assert.equal(#want, #says)
        seen[i] = says
        c:expect("delivery", { delayed = false })
      end
      assert.same(seen[1], seen[2])
      assert.same(seen[1], seen[3])
      assert.equal(before.epoch, seen[1][1].epoch)
      table.sort(seen[1], function(x, y) return x.offset < y.offset end)
      assert.same(range(before.offset + 1, before.offset + 4), offsets(seen[1]))
      assert.same({ "ok\n" }, { select(2, a:get("/healthz")) })

      -- And the room works across nodes again, from the next offset.
      bob:send { type = "say", text = "back" }
      assert.equal(before.offset + 5, ann:expect("say", { text = "back" }).offset)
      assert.same({ "ann", "bob", "cat" }, ann:members("lobby"))
    end)

    it("starts a new epoch when Redis comes back empty, and still delivers once", function()
      ann:send { type = "say", text = "said while redis is down" }
      cluster:advance(2000)
      cluster:redis_up()
      cluster:redis_down { flush = true } -- a restart that lost the data...
      cluster:redis_up()
      cluster:advance(15000)
      local said = {}
      for i, c in ipairs { ann, cat, bob } do
        local says = c:all("say", { text = "said while redis is down" })
        assert.equal(1, #says)
        said[i] = says[1]
      end
      assert.same(said[1], said[2])
      assert.same(said[1], said[3])
      assert.is_true(said[1].offset >= 1)
      assert.are_not.equal(before.epoch, said[1].epoch)
      -- Its presence came back too: the nodes wrote it again.
      assert.same({ "ann", "bob", "cat" }, bob:members("lobby"))
    end)
  end)
end)
