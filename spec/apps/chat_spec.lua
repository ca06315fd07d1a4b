-- scripts/chat.lua through moonwire.sim: one node, no backplane, so presence
-- and history run in their standalone form (the room topics keep history:
-- history.topics = { "room:*" }). What crosses nodes is tested end to end in
-- tests/e2e/test_chat_cluster.py.
local helpers = require "helpers"
local json = helpers.json

local SCRIPT = "scripts/chat.lua"
local HISTORY = { topics = { "room:*" } }

describe("chat.lua", function()
  local srv
  local temps = {}
  local epochs = {} -- each room's history epoch, learned from the first message that has one

  -- Checks and removes what varies: "time" (wall clock seconds) and "epoch"
  -- (one per room: each room's history starts its own), so the rest compares exactly.
  local function norm(m)
    if m.time ~= nil then
      assert.is_number(m.time)
      assert.is_true(m.time > 1.6e9)
      m.time = nil
    end
    if m.epoch ~= nil then
      assert.is_string(m.epoch)
      local room = m.room or "?"
      epochs[room] = epochs[room] or m.epoch
      assert.equal(epochs[room], m.epoch)
      m.epoch = nil
    end
    if m.type == "history" then
      for _, h in ipairs(m.messages) do
        norm(h)
      end
    end
    return m
  end

  local function msgs(client)
    local out = helpers.json_messages(client)
    for _, m in ipairs(out) do
      norm(m)
    end
    return out
  end

  local function say(room, from, text, offset)
    return { type = "say", room = room, from = from, text = text, offset = offset }
  end

  local function presence(room, event, nick, offset, extra)
    local m = { type = "presence", room = room, event = event, nick = nick, offset = offset }
    for k, v in pairs(extra or {}) do
      m[k] = v
    end
    return m
  end

  local function history(room, offset, recovered, messages, extra)
    local m = { type = "history", room = room, offset = offset, recovered = recovered, messages = messages or {} }
    for k, v in pairs(extra or {}) do
      m[k] = v
    end
    return m
  end

  local function err(code, message, extra)
    local m = { type = "error", code = code, message = message }
    for k, v in pairs(extra or {}) do
      m[k] = v
    end
    return m
  end

  -- A chat server whose rate limit is out of the way unless a spec sets one,
  -- with history on the room topics unless config says otherwise.
  local function server(chat, config)
    chat = chat or {}
    if chat.rate == nil then
      chat.rate = { burst = 100000, per_second = 100000 }
    end
    config = config or {}
    if config.history == nil then
      config.history = HISTORY
    elseif config.history == false then
      config.history = nil
    end
    config.app = { chat = chat }
    srv = helpers.server(SCRIPT, config)
    epochs = {}
    return srv
  end

  -- A client connected with ?nick=&room= whose first messages are dropped.
  local function client(nick, rooms)
    local path = "/chat"
    if nick then
      path = path .. "?nick=" .. nick .. (rooms and ("&room=" .. rooms) or "")
    end
    local c = helpers.connect(srv, path)
    msgs(c) -- dropped, but the epoch is learned
    return c
  end

  local function send(c, msg)
    assert(c:send(type(msg) == "string" and msg or json.encode(msg)))
  end

  local function texts_of(list)
    local out = {}
    for i, m in ipairs(list) do
      out[i] = m.text or (m.event and m.event .. ":" .. m.nick)
    end
    return out
  end

  local function temp(path)
    temps[#temps + 1] = path
    return path
  end

  before_each(function()
    server()
  end)

  after_each(function()
    srv:close()
    for _, p in ipairs(temps) do
      os.remove(p)
    end
    temps = {}
  end)

  describe("on_open", function()
    it("sends a welcome with the connection id and the limits", function()
      local c = helpers.connect(srv, "/chat")
      local m = msgs(c)
      assert.equal(1, #m)
      assert.same({
        type = "welcome",
        id = c.id,
        node = m[1].node,
        protocol = 2,
        limits = {
          nick_length = 32,
          room_length = 64,
          max_length = 2000,
          max_rooms = 20,
          history = 50,
          history_bytes = 65536,
          join_history_bytes = 262144,
          rate = { burst = 100000, per_second = 100000 },
          new_rooms = { burst = 10, per_second = 0.1 },
        },
      }, m[1])
      assert.is_string(m[1].node)
    end)

    it("states the configured limits and the default rate", function()
      srv:close()
      srv = helpers.server(SCRIPT, { app = { chat = { history = 5, max_length = 100, max_rooms = 3 } } })
      local m = msgs(helpers.connect(srv, "/"))[1]
      assert.same({ nick_length = 32, room_length = 64, max_length = 100, max_rooms = 3, history = 5,
        history_bytes = 65536, join_history_bytes = 262144, rate = { burst = 10, per_second = 5 },
        new_rooms = { burst = 10, per_second = 0.1 } }, m.limits)
    end)

    it("sets the nick and joins the rooms of the query string", function()
      local c = helpers.connect(srv, "/chat?nick=ann&room=a,b")
      local m = msgs(c)
      assert.equal(8, #m)
      assert.equal("welcome", m[1].type)
      assert.same({
        { type = "nick_set", nick = "ann" },
        { type = "joined", room = "a", nick = "ann", members = { "ann" } },
        history("a", 0, true),
        presence("a", "join", "ann", 1),
        { type = "joined", room = "b", nick = "ann", members = { "ann" } },
        history("b", 0, true),
        presence("b", "join", "ann", 1),
      }, { table.unpack(m, 2) })
    end)

    it("takes rooms= as well as room=", function()
      local m = msgs(helpers.connect(srv, "/?rooms=a,b&nick=ann"))
      assert.same({ "a", "b" }, { m[3].room, m[6].room })
    end)

    it("answers a query room without a nick with nick_required", function()
      local c = helpers.connect(srv, "/chat?room=lobby")
      local m = msgs(c)
      assert.equal(2, #m)
      assert.same(err("nick_required", "set a nick before you join a room (add &nick=...)"), m[2])
      assert.is_true(c:is_open())
    end)

    it("answers a bad query nick with bad_nick and joins nothing", function()
      local c = helpers.connect(srv, "/chat?nick=a%20b&room=lobby")
      local m = msgs(c)
      assert.same({ "welcome", "error", "error" }, { m[1].type, m[2].type, m[3].type })
      assert.equal("bad_nick", m[2].code)
      assert.equal("nick_required", m[3].code)
      assert.equal(3, #m)
    end)

    it("refuses more query rooms than max_rooms", function()
      srv:close()
      server { max_rooms = 2 }
      local m = msgs(helpers.connect(srv, "/chat?nick=ann&room=a,b,c"))
      assert.same(err("too_many_rooms", "at most 2 rooms per connection"), m[3])
      assert.equal(3, #m)
    end)
  end)

  describe("on_message", function()
    describe("nick", function()
      it("sets a nick and answers nick_set with the ref", function()
        local c = client()
        send(c, { type = "nick", nick = "ann", id = "r1" })
        assert.same({ { type = "nick_set", nick = "ann", ref = "r1" } }, msgs(c))
      end)

      it("accepts 32 characters of letters, digits, '_', '-' and '.'", function()
        local c = client()
        local nick = "a_B-9." .. ("x"):rep(26)
        send(c, { type = "nick", nick = nick })
        assert.same({ { type = "nick_set", nick = nick } }, msgs(c))
      end)

      it("refuses a nick that is too long, empty or has other characters with bad_nick", function()
        local c = client()
        local length = "a nick is 1 to 32 characters long"
        local charset = "a nick is letters, digits, '_', '-' and '.', and starts with a letter, digit or '_'"
        for _, case in ipairs {
          { ("x"):rep(33), length },
          { "", length },
          { "ann smith", charset },
          { "-ann", charset },
          { ".ann", charset },
          { "zoë", charset },
          { "a<b>", charset },
        } do
          send(c, { type = "nick", nick = case[1], id = 3 })
          assert.same({ err("bad_nick", case[2], { ref = 3 }) }, msgs(c))
        end
      end)

      it("refuses a nick that is not a string with bad_field, and no nick with missing_field", function()
        local c = client()
        send(c, { type = "nick", nick = 12 })
        send(c, { type = "nick" })
        assert.same({ err("bad_field", "nick must be a string"), err("missing_field", "'nick' is required") }, msgs(c))
      end)

      it("renames in every room: the reply, a presence event to each room, members updated", function()
        local ann = client("ann", "a,b")
        local bob = client("bob", "a")
        local cat = client("cat", "b")
        helpers.drain(ann, bob, cat)
        send(ann, { type = "nick", nick = "anna", id = 1 })
        assert.same({
          { type = "nick_set", nick = "anna", old = "ann", ref = 1 },
          presence("a", "nick", "anna", 3, { old = "ann" }),
          presence("b", "nick", "anna", 3, { old = "ann" }),
        }, msgs(ann))
        assert.same({ presence("a", "nick", "anna", 3, { old = "ann" }) }, msgs(bob))
        assert.same({ presence("b", "nick", "anna", 3, { old = "ann" }) }, msgs(cat))
        send(bob, { type = "members", room = "a" })
        assert.same({ { type = "members", room = "a", members = { "anna", "bob" } } }, msgs(bob))
        -- the old nick is free, the new one is taken
        local ann2 = helpers.connect(srv, "/chat?nick=ann&room=a")
        assert.same({ "ann", "anna", "bob" }, msgs(ann2)[3].members)
        local dup = helpers.connect(srv, "/chat?nick=ANNA&room=a")
        assert.same(err("nick_taken", 'the nick "ANNA" is taken in room "a"', { room = "a" }), msgs(dup)[3])
      end)

      it("refuses a nick taken in one of your rooms, ignoring case, and says which room", function()
        local ann = client("ann", "a,b")
        local bob = client("Bob", "b")
        helpers.drain(ann, bob)
        send(ann, { type = "nick", nick = "bob", id = "n" })
        assert.same({ err("nick_taken", 'the nick "bob" is taken in room "b"', { room = "b", ref = "n" }) }, msgs(ann))
        assert.same({}, msgs(bob))
        send(ann, { type = "members", room = "b" })
        assert.same({ "Bob", "ann" }, msgs(ann)[1].members)
      end)

      it("allows a nick taken only in rooms you are not in", function()
        local ann = client("ann", "a")
        client("bob", "b")
        send(ann, { type = "nick", nick = "bob" })
        assert.same({ { type = "nick_set", nick = "bob", old = "ann" }, presence("a", "nick", "bob", 2, { old = "ann" }) },
          msgs(ann))
      end)

      it("lets you change the case of your own nick", function()
        local ann = client("ann", "a")
        local bob = client("bob", "a")
        helpers.drain(ann)
        send(ann, { type = "nick", nick = "Ann" })
        assert.same({ type = "nick_set", nick = "Ann", old = "ann" }, msgs(ann)[1])
        assert.same({ presence("a", "nick", "Ann", 3, { old = "ann" }) }, msgs(bob))
      end)

      it("answers the same nick again without telling the rooms", function()
        local ann = client("ann", "a")
        local bob = client("bob", "a")
        helpers.drain(ann)
        send(ann, { type = "nick", nick = "ann" })
        assert.same({ { type = "nick_set", nick = "ann", old = "ann" } }, msgs(ann))
        assert.same({}, msgs(bob))
      end)
    end)

    describe("join", function()
      it("sends joined with the members, then the history, then the join event to every member", function()
        local ann = client("ann", "lobby")
        local bob = client("bob")
        send(bob, { type = "join", room = "lobby", id = "j" })
        assert.same({
          { type = "joined", room = "lobby", nick = "bob", members = { "ann", "bob" }, ref = "j" },
          history("lobby", 1, false, { presence("lobby", "join", "ann", 1) }),
          presence("lobby", "join", "bob", 2),
        }, msgs(bob))
        assert.same({ presence("lobby", "join", "bob", 2) }, msgs(ann))
      end)

      it("joins several rooms at once", function()
        local ann = client("ann")
        send(ann, { type = "join", rooms = { "a", "b" } })
        assert.same({
          { type = "joined", room = "a", nick = "ann", members = { "ann" } },
          history("a", 0, true),
          presence("a", "join", "ann", 1),
          { type = "joined", room = "b", nick = "ann", members = { "ann" } },
          history("b", 0, true),
          presence("b", "join", "ann", 1),
        }, msgs(ann))
      end)

      it("reports each failing room of a list and joins the others", function()
        local ann = client("ann")
        send(ann, { type = "join", rooms = { "a", "no way", "b", "a" }, id = 9 })
        local m = msgs(ann)
        assert.equal(8, #m)
        assert.same({ "joined", "history", "presence" }, { m[1].type, m[2].type, m[3].type })
        assert.same(err("bad_room", 'a room name is 1 to 64 letters, digits, \'_\', \'-\' and \'.\' (got "no way")',
          { room = "no way", ref = 9 }), m[4])
        assert.same({ "joined", "history", "presence" }, { m[5].type, m[6].type, m[7].type })
        assert.same(err("already_in_room", 'you are already in room "a"', { room = "a", ref = 9 }), m[8])
      end)

      it("refuses a room whose member has your nick, ignoring case, and leaves you out of it", function()
        local ann = client("ann", "lobby")
        local other = client("ANN")
        helpers.drain(ann)
        send(other, { type = "join", room = "lobby" })
        assert.same({ err("nick_taken", 'the nick "ANN" is taken in room "lobby"', { room = "lobby" }) }, msgs(other))
        assert.same({}, msgs(ann))
        send(other, { type = "say", room = "lobby", text = "x" })
        assert.equal("not_in_room", msgs(other)[1].code)
        send(ann, { type = "say", text = "only ann hears this" })
        assert.same({}, msgs(other))
        send(ann, { type = "members" })
        assert.same({ "ann" }, helpers.of_type(msgs(ann), "members")[1].members)
      end)

      it("wants a nick first", function()
        local c = client()
        send(c, { type = "join", room = "lobby", id = 1 })
        assert.same({ err("nick_required", "set a nick before you join a room", { ref = 1 }) }, msgs(c))
      end)

      it("refuses a room you are in with already_in_room", function()
        local ann = client("ann", "lobby")
        send(ann, { type = "join", room = "lobby" })
        assert.same({ err("already_in_room", 'you are already in room "lobby"', { room = "lobby" }) }, msgs(ann))
      end)

      it("refuses bad room names with bad_room and other types with bad_field", function()
        local ann = client("ann")
        local bad = 'a room name is 1 to 64 letters, digits, \'_\', \'-\' and \'.\' (got "%s")'
        send(ann, { type = "join", room = ("r"):rep(65) })
        send(ann, { type = "join", room = "" })
        send(ann, { type = "join", room = "a/b" })
        send(ann, { type = "join", room = 5 })
        assert.same({
          err("bad_room", bad:format(("r"):rep(64) .. "…"), { room = ("r"):rep(64) .. "…" }),
          err("bad_room", bad:format(""), { room = "" }),
          err("bad_room", bad:format("a/b"), { room = "a/b" }),
          err("bad_field", "a room name must be a string"),
        }, msgs(ann))
        send(ann, { type = "join", room = ("r"):rep(64) })
        assert.equal("joined", msgs(ann)[1].type)
      end)

      it("wants a room or a non-empty list of rooms", function()
        local ann = client("ann")
        send(ann, { type = "join" })
        send(ann, { type = "join", rooms = "a" })
        send(ann, '{"type":"join","rooms":[]}')
        send(ann, { type = "join", rooms = { { since = 1, epoch = "e" } } })
        assert.same({
          err("missing_field", "'room' (a name) or 'rooms' (a list of names) is required"),
          err("bad_field", "'rooms' must be a non-empty list of room names"),
          err("bad_field", "'rooms' must be a non-empty list of room names"),
          err("missing_field", "each object in 'rooms' needs a 'room'"),
        }, msgs(ann))
      end)

      it("refuses more than max_rooms rooms with too_many_rooms", function()
        srv:close()
        server { max_rooms = 2 }
        local ann = client("ann", "a")
        send(ann, { type = "join", rooms = { "b", "c" } })
        local m = msgs(ann)
        assert.same({ "joined", "history", "presence" }, { m[1].type, m[2].type, m[3].type })
        assert.same(err("too_many_rooms", "at most 2 rooms per connection", { room = "c" }), m[4])
        send(ann, { type = "join", rooms = { "x", "y", "z" } })
        assert.same({ err("too_many_rooms", "at most 2 rooms per connection") }, msgs(ann))
        -- leaving makes room again
        send(ann, { type = "leave", room = "a" })
        send(ann, { type = "join", room = "c" })
        m = msgs(ann)
        assert.same({ "left", "joined", "history", "presence" }, { m[1].type, m[2].type, m[3].type, m[4].type })
      end)
    end)

    describe("room creation (new_rooms)", function()
      before_each(function()
        srv:close()
        server { new_rooms = { burst = 3, per_second = 0.5 } }
      end)

      local too_many = "too many new rooms: you may create at most 3 at once and 0.5 a second; "
        .. "retry in %d ms, or join a room someone is in"

      it("refuses a room nobody is in past the connection's new_rooms, and joins nothing", function()
        local ann = client("ann")
        for i = 1, 3 do
          send(ann, { type = "join", room = "r" .. i })
          send(ann, { type = "leave", room = "r" .. i })
        end
        msgs(ann)
        send(ann, { type = "join", room = "r4", id = 4 })
        assert.same({ err("too_many_new_rooms", too_many:format(2000), { room = "r4", ref = 4, retry_after = 2000 }) },
          msgs(ann))
        assert.matches("\nmoonwire_topics 0\n", srv:metrics(), 1, true)
        send(ann, { type = "say", room = "r4", text = "x" })
        assert.equal("not_in_room", msgs(ann)[1].code)
      end)

      it("lets anyone join a room someone is in", function()
        local ann = client("ann")
        send(ann, { type = "join", rooms = { "a", "b", "c" } })
        msgs(ann)
        local bob = client("bob")
        send(bob, { type = "join", rooms = { "a", "b", "c", "d", "e", "f" } })
        local m = msgs(bob)
        assert.equal(6, #helpers.of_type(m, "joined"))
        send(bob, { type = "join", rooms = { "x", "y", "z" } })
        m = msgs(bob)
        assert.equal(0, #helpers.of_type(m, "joined"))
        assert.same({ "x", "y", "z" }, { m[1].room, m[2].room, m[3].room })
        assert.equal("too_many_new_rooms", m[1].code)
      end)

      it("counts the rooms of the connect query, and refills as time passes", function()
        local c = helpers.connect(srv, "/chat?nick=ann&room=a,b,c,d")
        local m = msgs(c)
        assert.equal(3, #helpers.of_type(m, "joined"))
        assert.same(err("too_many_new_rooms", too_many:format(2000), { room = "d", retry_after = 2000 }), m[#m])
        srv:advance(2000)
        send(c, { type = "join", room = "d" })
        assert.equal("joined", msgs(c)[1].type)
      end)

      it("is per connection", function()
        local ann, bob = client("ann"), client("bob")
        send(ann, { type = "join", rooms = { "a", "b", "c", "d" } })
        assert.equal("too_many_new_rooms", msgs(ann)[10].code)
        send(bob, { type = "join", rooms = { "x", "y", "z" } })
        assert.equal(3, #helpers.of_type(msgs(bob), "joined"))
      end)

      it("is off with new_rooms = false", function()
        srv:close()
        server { new_rooms = false }
        local ann = client("ann")
        for i = 1, 50 do
          send(ann, { type = "join", room = "r" .. i })
          send(ann, { type = "leave", room = "r" .. i })
        end
        assert.equal(50, #helpers.of_type(msgs(ann), "joined"))
      end)
    end)

    describe("the server's bounds", function()
      it("answers server_full when the server has as many topics as it allows", function()
        srv:close()
        server({}, { limits = { max_topics = 2 } })
        local ann = client("ann", "a,b")
        send(ann, { type = "join", room = "c", id = 1 })
        assert.same({ err("server_full",
          "could not join: this server has as many rooms as it allows (too many topics); try again later",
          { room = "c", ref = 1 }) }, msgs(ann))
        local bob = client("bob")
        send(bob, { type = "join", room = "a" }) -- a room that exists is no new topic
        assert.equal("joined", msgs(bob)[1].type)
        helpers.drain(ann)
        send(ann, { type = "members", room = "c" })
        assert.equal("not_in_room", msgs(ann)[1].code)
      end)

      it("answers too_many_rooms when the connection is in limits.max_subscriptions topics", function()
        srv:close()
        server({}, { limits = { max_subscriptions = 1 } })
        local ann = client("ann", "a")
        send(ann, { type = "join", room = "b" })
        assert.same({ err("too_many_rooms",
          "could not join: this connection is in as many topics as the server allows (too many subscriptions)",
          { room = "b" }) }, msgs(ann))
      end)

      it("answers a say the room's history can not keep with server_full, and nobody gets it", function()
        srv:close()
        server({ max_length = 1000000 }, { history = { topics = { "room:*" }, max_bytes = 65536 } })
        local ann, bob = client("ann", "a"), client("bob", "a")
        helpers.drain(ann)
        send(ann, { type = "say", text = ("x"):rep(70000), id = 2 })
        assert.same({ err("server_full",
          "not sent: the server can not keep it in the room's history (too large for history)",
          { room = "a", ref = 2 }) }, msgs(ann))
        assert.same({}, msgs(bob))
        send(ann, { type = "say", text = "short" })
        assert.equal("short", msgs(bob)[1].text)
      end)
    end)

    describe("join with since and epoch (recovery)", function()
      -- ann stays in lobby and talks; bob was there, saw up to `seen`, then dropped.
      local function missed_conversation(n)
        local ann = client("ann", "lobby") -- offset 1: ann's join
        local bob = client("bob", "lobby") -- 2: bob's join
        for i = 1, n do
          send(ann, { type = "say", text = "m" .. i }) -- 3 .. n + 2
        end
        helpers.drain(ann)
        local seen = msgs(bob)
        bob:drop() -- n + 3: bob's leave
        return ann, seen
      end

      it("gives exactly the messages after the offset, recovered", function()
        local ann, seen = missed_conversation(2)
        assert.same({ say("lobby", "ann", "m1", 3), say("lobby", "ann", "m2", 4) }, seen)
        send(ann, { type = "say", text = "while bob was away" }) -- 6
        local bob = client("bob")
        send(bob, { type = "join", room = "lobby", since = 4, epoch = epochs.lobby, id = "back" })
        assert.same({
          { type = "joined", room = "lobby", nick = "bob", members = { "ann", "bob" }, ref = "back" },
          history("lobby", 6, true, {
            presence("lobby", "leave", "bob", 5, { reason = "disconnected" }),
            say("lobby", "ann", "while bob was away", 6),
          }),
          presence("lobby", "join", "bob", 7),
        }, msgs(bob))
      end)

      it("is recovered and empty when nothing was missed", function()
        local ann = client("ann", "lobby")
        send(ann, { type = "say", text = "hello" })
        local bob = client("bob")
        send(bob, { type = "join", room = "lobby", since = 2, epoch = epochs.lobby })
        assert.same(history("lobby", 2, true), msgs(bob)[2])
      end)

      it("takes each room's position in a list of rooms", function()
        local ann = client("ann", "a,b")
        send(ann, { type = "say", room = "a", text = "a2" })
        send(ann, { type = "say", room = "a", text = "a3" })
        send(ann, { type = "say", room = "b", text = "b2" })
        local bob = client("bob")
        send(bob, { type = "join", rooms = { { room = "a", since = 2, epoch = epochs.a }, "b" } })
        local h = helpers.of_type(msgs(bob), "history")
        assert.same(history("a", 3, true, { say("a", "ann", "a3", 3) }), h[1])
        assert.same(history("b", 2, false, { presence("b", "join", "ann", 1), say("b", "ann", "b2", 2) }), h[2])
      end)

      it("gives the latest messages, not recovered, for another epoch", function()
        missed_conversation(2)
        local bob = client("bob")
        send(bob, { type = "join", room = "lobby", since = 4, epoch = "another-epoch" })
        local h = msgs(bob)[2]
        assert.is_false(h.recovered)
        assert.equal(5, h.offset)
        assert.same({ "join:ann", "join:bob", "m1", "m2", "leave:bob" }, texts_of(h.messages))
      end)

      it("gives the latest messages, not recovered, when what was missed is no longer kept", function()
        srv:close()
        server({}, { history = { topics = { "room:*" }, size = 5 } })
        local ann = missed_conversation(2) -- offsets 1 .. 5
        for i = 3, 8 do
          send(ann, { type = "say", text = "m" .. i }) -- 6 .. 11
        end
        local bob = client("bob")
        send(bob, { type = "join", room = "lobby", since = 3, epoch = epochs.lobby })
        local h = msgs(bob)[2]
        assert.is_false(h.recovered)
        assert.equal(11, h.offset)
        assert.same({ "m4", "m5", "m6", "m7", "m8" }, texts_of(h.messages))
      end)

      it("wants since and epoch together, as an offset and a string", function()
        local bob = client("bob")
        send(bob, { type = "join", room = "lobby", since = 3 })
        send(bob, { type = "join", room = "lobby", epoch = "e" })
        send(bob, { type = "join", room = "lobby", since = -1, epoch = "e" })
        send(bob, { type = "join", room = "lobby", since = 1.5, epoch = "e" })
        send(bob, { type = "join", room = "lobby", since = "3", epoch = "e" })
        send(bob, { type = "join", room = "lobby", since = 3, epoch = 7 })
        send(bob, { type = "join", rooms = { { room = "lobby", since = 3, epoch = ("e"):rep(65) } } })
        local offset = "'since' must be an offset (an integer, 0 or more)"
        local epoch_text = "'epoch' must be a string of 1 to 64 bytes"
        local function bad(message)
          return err("bad_field", message, { room = "lobby" })
        end
        assert.same({
          bad("'epoch' is required with 'since'"), bad("'since' is required with 'epoch'"),
          bad(offset), bad(offset), bad(offset), bad(epoch_text), bad(epoch_text),
        }, msgs(bob))
        send(bob, { type = "members", room = "lobby" })
        assert.equal("not_in_room", msgs(bob)[1].code)
      end)
    end)

    describe("leave", function()
      it("answers left and tells the others, who stop reaching the leaver", function()
        local ann = client("ann", "lobby")
        local bob = client("bob", "lobby")
        helpers.drain(ann)
        send(bob, { type = "leave", room = "lobby", id = "l" })
        assert.same({ { type = "left", room = "lobby", ref = "l" } }, msgs(bob))
        assert.same({ presence("lobby", "leave", "bob", 3, { reason = "left" }) }, msgs(ann))
        send(ann, { type = "say", room = "lobby", text = "still there?" })
        assert.same({}, msgs(bob))
        helpers.drain(ann)
        send(ann, { type = "members" })
        assert.same({ "ann" }, msgs(ann)[1].members)
      end)

      it("leaves several rooms at once", function()
        local ann = client("ann", "a,b,c")
        send(ann, { type = "leave", rooms = { "a", "c" } })
        assert.same({ { type = "left", room = "a" }, { type = "left", room = "c" } }, msgs(ann))
        send(ann, { type = "say", text = "only b is left" })
        assert.same("b", msgs(ann)[1].room)
      end)

      it("refuses a room you are not in with not_in_room", function()
        local ann = client("ann", "a")
        send(ann, { type = "leave", room = "b", id = 2 })
        assert.same({ err("not_in_room", 'you are not in room "b"', { room = "b", ref = 2 }) }, msgs(ann))
      end)

      it("frees the nick in that room", function()
        local ann = client("ann", "lobby")
        send(ann, { type = "leave", room = "lobby" })
        local other = helpers.connect(srv, "/chat?nick=Ann&room=lobby")
        assert.equal("joined", msgs(other)[3].type)
      end)

      it("sends nothing to nobody when the last member leaves", function()
        local ann = client("ann", "lobby")
        local bob = client("bob", "other")
        send(ann, { type = "leave", room = "lobby" })
        assert.same({ { type = "left", room = "lobby" } }, msgs(ann))
        assert.same({}, msgs(bob))
      end)
    end)

    describe("say", function()
      it("delivers a say with its offset to every member, and acknowledges it with sent", function()
        local ann = client("ann", "lobby")
        local bob = client("bob", "lobby")
        local cat = client("cat", "lobby")
        helpers.drain(ann, bob)
        send(ann, { type = "say", room = "lobby", text = "hi all", id = "s1" })
        assert.same({ say("lobby", "ann", "hi all", 4), { type = "sent", room = "lobby", offset = 4, ref = "s1" } },
          msgs(ann))
        assert.same({ say("lobby", "ann", "hi all", 4) }, msgs(bob))
        assert.same({ say("lobby", "ann", "hi all", 4) }, msgs(cat))
      end)

      it("numbers the messages of each room on their own", function()
        local ann = client("ann", "a,b") -- a: 1, b: 1
        local bob = client("bob", "a,b") -- a: 2, b: 2
        helpers.drain(ann, bob)
        send(ann, { type = "say", room = "a", text = "1" })
        send(bob, { type = "say", room = "a", text = "2" })
        send(ann, { type = "say", room = "b", text = "3" })
        local m = msgs(ann)
        assert.same({ say("a", "ann", "1", 3), say("a", "bob", "2", 4), say("b", "ann", "3", 3) },
          helpers.of_type(m, "say"))
        local sent = helpers.of_type(m, "sent")
        assert.same({ { type = "sent", room = "a", offset = 3 }, { type = "sent", room = "b", offset = 3 } }, sent)
        assert.same(helpers.of_type(m, "say"), helpers.of_type(msgs(bob), "say"))
      end)

      it("goes only to the room named", function()
        local ann = client("ann", "a,b")
        local bob = client("bob", "a")
        local cat = client("cat", "b")
        helpers.drain(ann, bob, cat)
        send(ann, { type = "say", room = "b", text = "for b" })
        assert.same({}, msgs(bob))
        assert.same({ say("b", "ann", "for b", 3) }, msgs(cat))
      end)

      it("uses the only room of the connection when none is named", function()
        local ann = client("ann", "lobby")
        local bob = client("bob", "lobby")
        send(ann, '{"type":"say","text":"hi"}')
        assert.same({ say("lobby", "ann", "hi", 3) }, msgs(bob))
      end)

      it("wants a room when the connection is in several or none", function()
        local ann = client("ann", "a,b")
        local bob = client("bob")
        send(ann, { type = "say", text = "where?" })
        send(bob, { type = "say", text = "where?" })
        assert.same({ err("missing_field", "'room' is required when you are in several rooms") }, msgs(ann))
        assert.same({ err("not_in_room", "you are in no room: join one first") }, msgs(bob))
      end)

      it("refuses a room you are not in with not_in_room, and nobody gets it", function()
        local ann = client("ann", "a")
        local bob = client("bob", "b")
        send(ann, { type = "say", room = "b", text = "sneaky", id = 4 })
        assert.same({ err("not_in_room", 'you are not in room "b"', { room = "b", ref = 4 }) }, msgs(ann))
        assert.same({}, msgs(bob))
      end)

      it("trims the text and masks the configured words for everyone", function()
        srv:close()
        server { words = { "darn", "heck" } }
        local ann = client("ann", "lobby")
        local bob = client("bob", "lobby")
        helpers.drain(ann)
        send(ann, { type = "say", text = "  Darn, what the HECK.  \n" })
        assert.same(say("lobby", "ann", "***, what the ***.", 3), msgs(ann)[1])
        assert.same({ say("lobby", "ann", "***, what the ***.", 3) }, msgs(bob))
      end)

      it("masks with the configured mask", function()
        srv:close()
        server { words = { "darn" }, mask = "[bleep]" }
        local ann = client("ann", "lobby")
        send(ann, { type = "say", text = "darn" })
        assert.equal("[bleep]", msgs(ann)[1].text)
      end)

      it("refuses an empty or blank text with empty", function()
        local ann = client("ann", "lobby")
        local bob = client("bob", "lobby")
        helpers.drain(ann)
        send(ann, { type = "say", text = "", id = 1 })
        send(ann, { type = "say", text = " \n\t ", id = 2 })
        assert.same({
          err("empty", "the message is empty", { room = "lobby", ref = 1 }),
          err("empty", "the message is empty", { room = "lobby", ref = 2 }),
        }, msgs(ann))
        assert.same({}, msgs(bob))
      end)

      it("refuses a text over max_length characters with too_long", function()
        srv:close()
        server { max_length = 5 }
        local ann = client("ann", "lobby")
        local bob = client("bob", "lobby")
        helpers.drain(ann)
        send(ann, { type = "say", text = "ééééé" }) -- 5 characters, 10 bytes
        send(ann, { type = "say", text = "éééééé" })
        local m = msgs(ann)
        assert.same({ "say", "sent" }, { m[1].type, m[2].type })
        assert.same(err("too_long", "the message is 6 characters long; the limit is 5", { room = "lobby" }), m[3])
        assert.same({ say("lobby", "ann", "ééééé", 3) }, msgs(bob))
      end)

      it("wants a text string", function()
        local ann = client("ann", "lobby")
        send(ann, { type = "say" })
        send(ann, { type = "say", text = 42 })
        assert.same({
          err("missing_field", "'text' is required", { room = "lobby" }),
          err("bad_field", "'text' must be a string", { room = "lobby" }),
        }, msgs(ann))
      end)

      it("carries unicode text unchanged, escaped or not", function()
        local ann = client("ann", "lobby")
        local bob = client("bob", "lobby")
        local text = "héllo wörld — 日本語 🎉"
        send(ann, { type = "say", text = text })
        send(ann, [[{"type":"say","text":"\u00e9\ud83c\udf89"}]])
        assert.same({ say("lobby", "ann", text, 3), say("lobby", "ann", "é🎉", 4) }, msgs(bob))
      end)

      it("removes control characters", function()
        local ann = client("ann", "lobby")
        local bob = client("bob", "lobby")
        send(ann, { type = "say", text = "a\0b\27[31mc\r\nd" })
        assert.same({ say("lobby", "ann", "ab[31mc\nd", 3) }, msgs(bob))
      end)

      it("reaches each of 200 members once", function()
        local members = {}
        for i = 1, 200 do
          members[i] = client("u" .. i, "big")
        end
        for i = 1, 200 do
          members[i]:received()
        end
        send(members[1], { type = "say", text = "to everyone" })
        assert.same({ say("big", "u1", "to everyone", 201), { type = "sent", room = "big", offset = 201 } },
          msgs(members[1]))
        for i = 2, 200 do
          assert.same({ say("big", "u1", "to everyone", 201) }, msgs(members[i]))
        end
        send(members[200], { type = "members" })
        assert.equal(200, #msgs(members[200])[1].members)
      end)
    end)

    describe("private", function()
      it("reaches that member only, with a copy to the sender carrying the ref", function()
        local ann = client("ann", "lobby")
        local bob = client("bob", "lobby")
        local cat = client("cat", "lobby")
        helpers.drain(ann, bob)
        send(ann, { type = "private", room = "lobby", to = "bob", text = "psst", id = "p" })
        local pm = { type = "private", room = "lobby", from = "ann", to = "bob", text = "psst" }
        assert.same({ pm }, msgs(bob))
        pm.ref = "p"
        assert.same({ pm }, msgs(ann))
        assert.same({}, msgs(cat))
      end)

      it("finds the nick whatever its case and names it as it is spelled", function()
        local ann = client("ann", "lobby")
        local bob = client("Bob", "lobby")
        send(ann, { type = "private", to = "BOB", text = "hey" })
        assert.same({ { type = "private", room = "lobby", from = "ann", to = "Bob", text = "hey" } }, msgs(bob))
      end)

      it("refuses a nick nobody has in the room with no_such_member", function()
        local ann = client("ann", "a")
        client("bob", "b")
        send(ann, { type = "private", room = "a", to = "bob", text = "hey", id = 1 })
        assert.same({ err("no_such_member", 'nobody called "bob" is in room "a"', { room = "a", ref = 1 }) }, msgs(ann))
      end)

      it("refuses a room you are not in with not_in_room", function()
        local ann = client("ann", "a")
        local bob = client("bob", "b")
        send(ann, { type = "private", room = "b", to = "bob", text = "hey" })
        assert.same({ err("not_in_room", 'you are not in room "b"', { room = "b" }) }, msgs(ann))
        assert.same({}, msgs(bob))
      end)

      it("wants a 'to' string", function()
        local ann = client("ann", "a")
        send(ann, { type = "private", text = "hey" })
        send(ann, { type = "private", to = true, text = "hey" })
        assert.same({
          err("missing_field", "'to' (a nick) is required", { room = "a" }),
          err("bad_field", "'to' must be a string", { room = "a" }),
        }, msgs(ann))
      end)

      it("runs the filters", function()
        srv:close()
        server { words = { "darn" } }
        local ann = client("ann", "a")
        local bob = client("bob", "a")
        helpers.drain(ann)
        send(ann, { type = "private", to = "bob", text = " darn " })
        send(ann, { type = "private", to = "bob", text = "  " })
        assert.same({ { type = "private", room = "a", from = "ann", to = "bob", text = "***" } }, msgs(bob))
        local m = msgs(ann)
        assert.equal("***", m[1].text)
        assert.same(err("empty", "the message is empty", { room = "a" }), m[2])
      end)

      it("sends one copy when you write to yourself", function()
        local ann = client("ann", "a")
        send(ann, { type = "private", to = "ann", text = "note" })
        assert.same({ { type = "private", room = "a", from = "ann", to = "ann", text = "note" } }, msgs(ann))
      end)

      it("is not kept in the history and takes no offset", function()
        local ann = client("ann", "a")
        client("bob", "a")
        send(ann, { type = "private", to = "bob", text = "secret" })
        send(ann, { type = "say", text = "public" })
        local cat = helpers.connect(srv, "/chat?nick=cat&room=a")
        assert.same(history("a", 3, false, {
          presence("a", "join", "ann", 1), presence("a", "join", "bob", 2), say("a", "ann", "public", 3),
        }), msgs(cat)[4])
      end)

      it("answers undelivered when the member's queue is full", function()
        srv:close()
        server({}, { limits = { max_buffered = 1024, backpressure = "drop" } })
        local ann = client("ann", "a")
        local bob = client("bob", "a")
        helpers.drain(ann)
        -- A slow reader: bob's queue already holds more than twice the bound
        -- when the private comes (a queue may pass the bound within a turn,
        -- not twice it).
        assert.is_true(srv:reload(temp(helpers.modified_script(SCRIPT, ([[
  local private = handlers.private
  function handlers.private(conn, d, msg, ref)
    mw.send(%q, ("p"):rep(2100))
    return private(conn, d, msg, ref)
  end]]):format(bob.id)))))
        send(ann, { type = "private", to = "bob", text = ("x"):rep(100) })
        assert.same({ ("p"):rep(2100) }, helpers.texts(bob))
        assert.same({ err("undelivered", 'the message to "bob" was not delivered (backpressure)', { room = "a" }) },
          msgs(ann))
        assert.matches("moonwire_backpressure_drops_total 1", srv:metrics(), 1, true)
      end)
    end)

    describe("members", function()
      it("answers the sorted member list of a room you are in", function()
        local cat = client("cat", "lobby")
        client("ann", "lobby")
        client("Bob", "lobby")
        helpers.drain(cat)
        send(cat, { type = "members", room = "lobby", id = "m" })
        assert.same({ { type = "members", room = "lobby", members = { "Bob", "ann", "cat" }, ref = "m" } }, msgs(cat))
      end)

      it("refuses a room you are not in with not_in_room", function()
        local ann = client("ann", "a")
        client("bob", "b")
        send(ann, { type = "members", room = "b" })
        assert.same({ err("not_in_room", 'you are not in room "b"', { room = "b" }) }, msgs(ann))
      end)
    end)

    describe("ping", function()
      it("answers pong with the ref", function()
        local c = client()
        send(c, { type = "ping", id = 17 })
        assert.same({ { type = "pong", ref = 17 } }, msgs(c))
      end)
    end)

    describe("bad requests", function()
      it("answers what is not JSON with bad_json", function()
        local c = client()
        send(c, "hello")
        send(c, '{"type":"say"')
        assert.same({
          err("bad_json", "not valid JSON: Expected value but found invalid token at character 1"),
          err("bad_json", "not valid JSON: Expected comma or object end but found T_END at character 14"),
        }, msgs(c))
        assert.is_true(c:is_open())
      end)

      it("answers JSON that is not an object with bad_json", function()
        local c = client()
        send(c, '"say"')
        send(c, "[1,2]")
        send(c, "42")
        local expected = err("bad_json", "a message must be a JSON object")
        assert.same({ expected, expected, expected }, msgs(c))
      end)

      it("answers a binary message with binary_not_supported", function()
        local c = client()
        assert(c:send('{"type":"ping"}', "binary"))
        assert.same({ err("binary_not_supported", "send JSON text messages, not binary") }, msgs(c))
      end)

      it("answers an unknown type with unknown_type and the ref", function()
        local c = client()
        send(c, { type = "shout", id = "u" })
        send(c, { type = "__index" })
        assert.same({
          err("unknown_type", 'unknown message type "shout"', { ref = "u" }),
          err("unknown_type", 'unknown message type "__index"'),
        }, msgs(c))
      end)

      it("quotes at most 64 characters of what the client sent, on a character boundary", function()
        local c = client()
        send(c, { type = ("é"):rep(100) })
        assert.same({ err("unknown_type", 'unknown message type "' .. ("é"):rep(64) .. '…"') }, msgs(c))
      end)

      it("wants a type string", function()
        local c = client()
        send(c, { id = 1 })
        send(c, { type = 5, id = 2 })
        assert.same({
          err("missing_field", "'type' is required", { ref = 1 }),
          err("bad_field", "'type' must be a string", { ref = 2 }),
        }, msgs(c))
      end)

      it("refuses an id that is not a short string or a number with bad_field", function()
        local c = client()
        send(c, { type = "ping", id = { 1 } })
        send(c, { type = "ping", id = ("i"):rep(65) })
        send(c, '{"type":"ping","id":NaN}')
        local expected = err("bad_field", "'id' must be a string of at most 64 bytes or a number")
        assert.same({ expected, expected, expected }, msgs(c))
        send(c, { type = "ping", id = ("i"):rep(64) })
        send(c, '{"type":"ping","id":null}')
        assert.same({ { type = "pong", ref = ("i"):rep(64) }, { type = "pong" } }, msgs(c))
      end)
    end)

    describe("rate limit", function()
      before_each(function()
        srv:close()
        server { rate = { burst = 3, per_second = 2 } }
      end)

      it("answers rate_limited past the burst and keeps the connection", function()
        local c = client()
        for i = 1, 3 do
          send(c, { type = "ping", id = i })
        end
        send(c, { type = "ping", id = 4 })
        local m = msgs(c)
        assert.same({ "pong", "pong", "pong" }, { m[1].type, m[2].type, m[3].type })
        assert.same(err("rate_limited", "too many messages: at most 3 at once and 2 a second; retry in 500 ms",
          { retry_after = 500, ref = 4 }), m[4])
        assert.is_true(c:is_open())
      end)

      it("refills the bucket as time passes", function()
        local c = client()
        for i = 1, 4 do
          send(c, { type = "ping", id = i })
        end
        c:received()
        srv:advance(500)
        send(c, { type = "ping", id = 5 })
        send(c, { type = "ping", id = 6 })
        local m = msgs(c)
        assert.same({ type = "pong", ref = 5 }, m[1])
        assert.equal("rate_limited", m[2].code)
        srv:advance(60000)
        for i = 1, 4 do
          send(c, { type = "ping", id = i })
        end
        m = msgs(c)
        assert.same({ "pong", "pong", "pong", "error" }, { m[1].type, m[2].type, m[3].type, m[4].type })
      end)

      it("counts every message, bad ones too, per connection", function()
        local a, b = client(), client()
        for _ = 1, 3 do
          send(a, "not json")
        end
        send(a, { type = "say", text = "x" })
        assert.equal("rate_limited", msgs(a)[4].code)
        send(b, { type = "ping" })
        assert.same({ { type = "pong" } }, msgs(b))
      end)

      it("charges the query's nick and rooms as the requests they stand for", function()
        local c = helpers.connect(srv, "/chat?nick=ann&room=a,b,c,d")
        assert.equal(14, #msgs(c)) -- two tokens of three: the nick, then the four rooms
        send(c, { type = "ping" })
        send(c, { type = "ping" })
        local m = msgs(c)
        assert.same({ type = "pong" }, m[1])
        assert.equal("rate_limited", m[2].code)
      end)

      it("refuses the query's rooms with rate_limited when the nick took the last token", function()
        srv:close()
        server { rate = { burst = 1, per_second = 1 } }
        local c = helpers.connect(srv, "/chat?nick=ann&room=a")
        local m = msgs(c)
        assert.same({ "welcome", "nick_set", "error" }, { m[1].type, m[2].type, m[3].type })
        assert.same(err("rate_limited", "too many messages: at most 1 at once and 1 a second; retry in 1000 ms",
          { retry_after = 1000 }), m[3])
        assert.equal(0, #helpers.of_type(m, "joined"))
        assert.is_true(c:is_open())
      end)

      it("is off with rate = false", function()
        srv:close()
        srv = helpers.server(SCRIPT, { app = { chat = { rate = false } } })
        local c = client()
        for _ = 1, 100 do
          send(c, { type = "ping" })
        end
        assert.equal(100, #helpers.of_type(msgs(c), "pong"))
      end)
    end)

    describe("history", function()
      it("sends the room's last messages on join, oldest first, says and presence events", function()
        local ann = client("ann", "lobby")
        for i = 1, 3 do
          send(ann, { type = "say", text = "m" .. i })
        end
        local bob = helpers.connect(srv, "/chat?nick=bob&room=lobby")
        assert.same(history("lobby", 4, false, {
          presence("lobby", "join", "ann", 1),
          say("lobby", "ann", "m1", 2), say("lobby", "ann", "m2", 3), say("lobby", "ann", "m3", 4),
        }), msgs(bob)[4])
      end)

      it("sends the last 'history' messages on join", function()
        srv:close()
        server { history = 3 }
        local ann = client("ann", "lobby")
        for i = 1, 10 do
          send(ann, { type = "say", text = "m" .. i })
        end
        local bob = helpers.connect(srv, "/chat?nick=bob&room=lobby")
        local h = msgs(bob)[4]
        assert.same({ "m8", "m9", "m10" }, texts_of(h.messages))
        assert.same({ 9, 10, 11 }, { h.messages[1].offset, h.messages[2].offset, h.messages[3].offset })
        assert.equal(11, h.offset)
      end)

      it("sends 50 by default", function()
        local ann = client("ann", "lobby")
        for i = 1, 60 do
          send(ann, { type = "say", text = "m" .. i })
        end
        local h = msgs(helpers.connect(srv, "/chat?nick=bob&room=lobby"))[4].messages
        assert.equal(50, #h)
        assert.equal("m11", h[1].text)
        assert.equal("m60", h[50].text)
      end)

      it("sends none with history = 0, but the position", function()
        srv:close()
        server { history = 0 }
        local ann = client("ann", "lobby")
        send(ann, { type = "say", text = "not for bob" })
        assert.same(history("lobby", 2, false), msgs(helpers.connect(srv, "/chat?nick=bob&room=lobby"))[4])
      end)

      it("is per room", function()
        local ann = client("ann", "a,b")
        send(ann, { type = "say", room = "a", text = "in a" })
        send(ann, { type = "say", room = "b", text = "in b" })
        local m = msgs(helpers.connect(srv, "/chat?nick=bob&room=b"))
        assert.same({ presence("b", "join", "ann", 1), say("b", "ann", "in b", 2) }, m[4].messages)
      end)

      it("outlives the room's members, and is forgotten after history.ttl of silence", function()
        srv:close()
        server({}, { history = { topics = { "room:*" }, ttl = 120 } })
        local ann = client("ann", "lobby")
        send(ann, { type = "say", text = "remember me" })
        ann:close()
        srv:advance(60000)
        local bob = helpers.connect(srv, "/chat?nick=bob&room=lobby")
        assert.same({ "join:ann", "remember me", "leave:ann" }, texts_of(msgs(bob)[4].messages))
        bob:close()
        srv:advance(121000)
        epochs.lobby = nil -- a room whose history expired starts a new epoch
        local cat = helpers.connect(srv, "/chat?nick=cat&room=lobby")
        assert.same(history("lobby", 0, true), msgs(cat)[4])
      end)

      it("answers a history request with the ref, and after an offset with recovered", function()
        local ann = client("ann", "a,b")
        send(ann, { type = "say", room = "b", text = "hello b" })
        send(ann, { type = "say", room = "b", text = "again" })
        helpers.drain(ann)
        send(ann, { type = "history", room = "b", id = "h" })
        send(ann, { type = "history", room = "b", since = 2, epoch = epochs.b, id = "s" })
        send(ann, { type = "history", room = "b", limit = 1 })
        send(ann, { type = "history", room = "c" })
        assert.same({
          history("b", 3, false, { presence("b", "join", "ann", 1), say("b", "ann", "hello b", 2),
            say("b", "ann", "again", 3) }, { ref = "h" }),
          history("b", 3, true, { say("b", "ann", "again", 3) }, { ref = "s" }),
          history("b", 3, false, { say("b", "ann", "again", 3) }),
          err("not_in_room", 'you are not in room "c"', { room = "c" }),
        }, msgs(ann))
      end)

      it("refuses a bad position or limit in a history request with bad_field", function()
        local ann = client("ann", "a")
        send(ann, { type = "history", since = 1 })
        send(ann, { type = "history", limit = 0 })
        send(ann, { type = "history", limit = "all" })
        assert.same({
          err("bad_field", "'epoch' is required with 'since'", { room = "a" }),
          err("bad_field", "'limit' must be a positive integer", { room = "a" }),
          err("bad_field", "'limit' must be a positive integer", { room = "a" }),
        }, msgs(ann))
      end)

      it("truncates the histories of a many-room join to fit the write queue", function()
        srv:close()
        server({}, { limits = { max_buffered = 4096 } })
        local ann = client("ann", "a,b")
        for _, room in ipairs { "a", "b" } do
          for i = 1, 4 do
            send(ann, { type = "say", room = room, text = room .. i .. ("x"):rep(700) }) -- offsets 2 .. 5
          end
        end
        local bob = client("bob")
        send(bob, { type = "join", rooms = { "a", "b" } })
        assert.is_true(bob:is_open())
        local m = msgs(bob)
        local h = helpers.of_type(m, "history")
        assert.equal(2, #h)
        -- the newest messages that fit, oldest first, and so not a recovery
        for _, x in ipairs(h) do
          assert.is_true(x.truncated)
          assert.is_false(x.recovered)
          assert.equal(5, x.offset)
          assert.is_true(#x.messages < 5)
          for i, say_ in ipairs(x.messages) do
            assert.equal(5 - #x.messages + i, say_.offset)
          end
        end
        assert.is_true(#h[1].messages >= 1)
        -- asked alone, the whole history comes
        send(bob, { type = "history", room = "b" })
        m = msgs(bob)[1]
        assert.is_nil(m.truncated)
        assert.same({ "join:ann", "b1" .. ("x"):rep(700), "b2" .. ("x"):rep(700), "b3" .. ("x"):rep(700),
          "b4" .. ("x"):rep(700), "join:bob" }, texts_of(m.messages))
      end)

      -- The bytes of the messages of a history reply (what is between its brackets).
      local function history_bytes(raw)
        return #raw:match('"messages":%[(.*)%]}$')
      end

      it("sends at most history_bytes of a room's history on a join: the newest, truncated", function()
        srv:close()
        server { history_bytes = 2048 }
        local ann = client("ann", "lobby")
        for i = 1, 10 do
          send(ann, { type = "say", text = i .. ("x"):rep(500) }) -- offsets 2 .. 11
        end
        local bob = helpers.connect(srv, "/chat?nick=bob&room=lobby")
        local raw = helpers.texts(bob)[4]
        local h = json.decode(raw)
        assert.equal("history", h.type)
        assert.is_true(h.truncated)
        assert.is_false(h.recovered)
        assert.is_true(history_bytes(raw) <= 2048)
        assert.equal(3, #h.messages)
        assert.equal(11, h.messages[3].offset)
        -- a history request is not a join: it may send more
        send(bob, { type = "history", room = "lobby" })
        assert.equal(12, #msgs(bob)[1].messages)
      end)

      it("sends at most join_history_bytes for all the rooms of one join or of the connect query", function()
        srv:close()
        server { history_bytes = 3000, join_history_bytes = 4096 }
        local ann = client("ann", "a,b,c")
        for _, room in ipairs { "a", "b", "c" } do
          for i = 1, 5 do
            send(ann, { type = "say", room = room, text = room .. i .. ("x"):rep(900) })
          end
        end
        for _, path in ipairs { "/chat?nick=bob&room=a,b,c", "join" } do
          local c
          if path == "join" then
            c = client("cat")
            send(c, { type = "join", rooms = { "a", "b", "c" } })
          else
            c = helpers.connect(srv, path)
          end
          local total, rooms = 0, 0
          for _, raw in ipairs(helpers.texts(c)) do
            local m = json.decode(raw)
            if m.type == "history" then
              rooms = rooms + 1
              total = total + history_bytes(raw)
              assert.is_true(history_bytes(raw) <= 3000)
              assert.is_true(m.truncated)
            end
          end
          assert.equal(3, rooms)
          assert.is_true(total <= 4096 and total > 3000)
        end
      end)

      it("never sends a history larger than the write queue, even alone", function()
        srv:close()
        server({}, { limits = { max_buffered = 4096 } })
        local ann = client("ann", "lobby")
        for i = 1, 6 do
          send(ann, { type = "say", text = i .. ("x"):rep(900) }) -- offsets 2 .. 7
        end
        helpers.drain(ann)
        send(ann, { type = "history", id = 1 })
        local h = msgs(ann)[1]
        assert.is_true(ann:is_open())
        assert.is_true(h.truncated)
        assert.equal(7, h.offset)
        assert.is_true(#h.messages >= 3)
        assert.equal(7, h.messages[#h.messages].offset)
        assert.equal(8 - #h.messages, h.messages[1].offset)
      end)

      it("leaves out offsets, epochs and histories when the room topics keep none", function()
        srv:close()
        server({}, { history = false })
        local ann = client("ann", "lobby")
        local bob = helpers.connect(srv, "/chat?nick=bob&room=lobby")
        local m = msgs(bob)
        assert.same({ type = "history", room = "lobby", recovered = false, messages = {} }, m[4])
        assert.same({ type = "presence", room = "lobby", event = "join", nick = "bob" }, m[5])
        helpers.drain(ann)
        send(ann, { type = "say", text = "plain", id = 1 })
        assert.same({ { type = "say", room = "lobby", from = "ann", text = "plain" },
          { type = "sent", room = "lobby", ref = 1 } }, msgs(ann))
        helpers.drain(bob)
        send(bob, { type = "join", room = "other", since = 3, epoch = "e" })
        assert.same({ type = "history", room = "other", recovered = false, messages = {} }, msgs(bob)[2])
      end)
    end)
  end)

  describe("on_close", function()
    it("leaves every room and tells the others", function()
      local ann = client("ann", "a,b")
      local bob = client("bob", "a")
      local cat = client("cat", "b")
      helpers.drain(ann)
      ann:close()
      assert.same({ presence("a", "leave", "ann", 3, { reason = "disconnected" }) }, msgs(bob))
      assert.same({ presence("b", "leave", "ann", 3, { reason = "disconnected" }) }, msgs(cat))
      send(bob, { type = "members" })
      assert.same({ "bob" }, msgs(bob)[1].members)
    end)

    it("does the same when the connection drops", function()
      local ann = client("ann", "a")
      local bob = client("bob", "a")
      ann:drop()
      assert.same({ presence("a", "leave", "ann", 3, { reason = "disconnected" }) }, msgs(bob))
      assert.equal(1, srv:count())
    end)

    it("frees the nick", function()
      local ann = client("ann", "lobby")
      client("bob", "lobby")
      ann:close()
      local again = helpers.connect(srv, "/chat?nick=ann&room=lobby")
      assert.same({ "ann", "bob" }, msgs(again)[3].members)
    end)

    it("cannot leave a member behind even when it fails: the member list is the room's presence", function()
      local ann = client("ann", "lobby")
      local bob = client("bob", "lobby")
      assert.is_true(srv:reload(temp(helpers.modified_script(SCRIPT, [[app.on_close = function() error("lost") end]]))))
      helpers.drain(bob)
      assert.error_matches(function()
        ann:close()
      end, "on_close raised an error %(conn %S+%): %S+: lost")
      assert.same({}, msgs(bob)) -- no leave event: that was on_close's job
      send(bob, { type = "members" })
      assert.same({ "bob" }, msgs(bob)[1].members)
      local again = helpers.connect(srv, "/chat?nick=ann&room=lobby")
      assert.equal("joined", msgs(again)[3].type)
      assert.error_matches(function()
        srv:close() -- bob's and again's on_close fail too
      end, "on_close raised an error .*and 1 more hook failure in this call")
    end)
  end)

  describe("reload", function()
    it("keeps rooms, members, nicks and history", function()
      local ann = client("ann", "lobby")
      local bob = client("bob", "lobby")
      send(ann, { type = "say", text = "before" })
      helpers.drain(ann, bob)
      assert.is_true(srv:reload())
      send(ann, { type = "say", text = "after" })
      assert.same({ say("lobby", "ann", "after", 4) }, msgs(bob))
      local cat = helpers.connect(srv, "/chat?nick=cat&room=lobby")
      local m = msgs(cat)
      assert.same({ "ann", "bob", "cat" }, m[3].members)
      assert.same({ "join:ann", "join:bob", "before", "after" }, texts_of(m[4].messages))
      local dup = helpers.connect(srv, "/chat?nick=bob&room=lobby")
      assert.equal("nick_taken", msgs(dup)[3].code)
    end)

    it("uses the new code for the next message", function()
      local ann = client("ann", "lobby")
      local bob = client("bob", "lobby")
      local path = temp(helpers.modified_script(SCRIPT, [[
table.insert(chain, function(text) return text:upper() end)
function handlers.shout(conn, d, msg, ref) conn:send("shouted") end]]))
      assert.is_true(srv:reload(path))
      send(ann, { type = "say", text = "quiet please" })
      assert.same({ say("lobby", "ann", "QUIET PLEASE", 3) }, msgs(bob))
      send(bob, { type = "shout" })
      assert.same({ "shouted" }, helpers.texts(bob))
    end)

    it("keeps the old app when the new one does not load", function()
      local ann = client("ann", "lobby")
      local bob = client("bob", "lobby")
      local path = temp(helpers.tempfile("local app = {\nfunction app.on_message(\nreturn app\n"))
      local ok, reload_err = srv:reload(path)
      assert.is_nil(ok)
      assert.matches(path:gsub("%p", "%%%0") .. ":2: '%(' expected near 'app'", reload_err)
      send(ann, { type = "say", text = "still here" })
      assert.same({ say("lobby", "ann", "still here", 3) }, msgs(bob))
      assert.matches("moonwire_reload_failures_total 1", srv:metrics(), 1, true)
      local logs = table.concat(srv:logs(), "\n")
      assert.matches("reload failed, the previous app keeps serving", logs, 1, true)
    end)

    it("uses the new history limit for the next join", function()
      local ann = client("ann", "lobby")
      for i = 1, 5 do
        send(ann, { type = "say", text = "m" .. i })
      end
      assert.is_true(srv:reload(temp(helpers.modified_script(SCRIPT, "cfg.history = 2"))))
      local h = msgs(helpers.connect(srv, "/chat?nick=bob&room=lobby"))[4].messages
      assert.same({ "m4", "m5" }, texts_of(h))
    end)

    it("works for connections opened by another app", function()
      srv:close()
      srv = helpers.server("scripts/echo.lua", { history = HISTORY })
      local c = helpers.connect(srv, "/")
      assert.is_true(srv:reload(SCRIPT))
      send(c, { type = "nick", nick = "ann" })
      send(c, { type = "join", room = "lobby" })
      local m = msgs(c)
      assert.same({ "nick_set", "joined", "history", "presence" }, { m[1].type, m[2].type, m[3].type, m[4].type })
    end)
  end)

  describe("on_error", function()
    it("answers internal with the ref and keeps the connection", function()
      local ann = client("ann", "lobby")
      local path = temp(helpers.modified_script(SCRIPT, [[function handlers.boom() error("kaboom") end]]))
      assert.is_true(srv:reload(path))
      assert.error_matches(function()
        send(ann, { type = "boom", id = "b" })
      end, "on_message raised an error %(conn %S+%): %S+: kaboom")
      assert.same({ err("internal", "the server failed to handle that message", { ref = "b" }) }, msgs(ann))
      assert.is_true(ann:is_open())
      assert.matches("kaboom", table.concat(srv:logs(), "\n"), 1, true)
      send(ann, { type = "ping" })
      assert.same({ { type = "pong" } }, msgs(ann))
    end)
  end)

  describe("config", function()
    local function load_error(chat, config)
      config = config or {}
      config.app = { chat = chat }
      local ok, e = pcall(helpers.server, SCRIPT, config)
      assert.is_false(ok)
      return e
    end

    it("refuses bad values with the key and what it wants", function()
      assert.matches("chat: config app.chat.history must be an integer from 0 to 10000 (got -1)",
        load_error { history = -1 }, 1, true)
      assert.matches("chat: config app.chat.max_length must be an integer from 1 to 1000000 (got 2.5)",
        load_error { max_length = 2.5 }, 1, true)
      assert.matches('chat: config app.chat.words word 1 must be letters and digits only (got "two words")',
        load_error { words = { "two words" } }, 1, true)
      assert.matches("chat: config app.chat.rate.per_second must be a number above 0 (got 0)",
        load_error { rate = { per_second = 0 } }, 1, true)
      assert.matches("chat: config app.chat.rate must be a table { burst, per_second } or false (got 5)",
        load_error { rate = 5 }, 1, true)
      assert.matches("chat: config app.chat.new_rooms must be a table { burst, per_second } or false (got 5)",
        load_error { new_rooms = 5 }, 1, true)
      assert.matches("chat: config app.chat.new_rooms.per_second must be a number above 0 (got 0)",
        load_error { new_rooms = { per_second = 0 } }, 1, true)
      assert.matches("chat: config app.chat.history_bytes must be an integer from 1024 to 1000000000 (got 10)",
        load_error { history_bytes = 10 }, 1, true)
      assert.matches("chat: config app.chat.join_history_bytes must be an integer from 1024 to 1000000000 (got x)",
        load_error { join_history_bytes = "x" }, 1, true)
    end)

    it("refuses room history under another field name than offset", function()
      assert.matches('chat: history.field must be "offset" for room topics (got seq)',
        load_error({}, { history = { topics = { "room:*" }, field = "seq" } }), 1, true)
      assert.matches('chat: history.field must be "offset" for room topics (got seq)',
        load_error({}, { history = { topics = { "room:lobby" }, field = "seq" } }), 1, true)
      srv:close()
      srv = helpers.server(SCRIPT, { history = { topics = { "news:*" }, field = "seq" } })
    end)

    it("says room_ttl is no longer used", function()
      srv:close()
      srv = helpers.server(SCRIPT, { history = HISTORY, app = { chat = { room_ttl = 1000 } } })
      assert.matches("app.chat.room_ttl is no longer used", table.concat(srv:logs(), "\n"), 1, true)
    end)
  end)
end)
