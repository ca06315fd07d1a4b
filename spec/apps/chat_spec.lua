local helpers = require "helpers"
local json = helpers.json

local SCRIPT = "scripts/chat.lua"

-- Decoded messages with their "time" (wall clock seconds) checked and removed,
-- so the rest can be compared exactly.
local function untime(m)
  if m.time ~= nil then
    assert.is_number(m.time)
    assert.is_true(m.time > 1.6e9)
    m.time = nil
  end
  if m.type == "history" then
    for _, h in ipairs(m.messages) do
      untime(h)
    end
  end
  return m
end

local function msgs(client)
  local out = helpers.json_messages(client)
  for _, m in ipairs(out) do
    untime(m)
  end
  return out
end

local function say(room, from, text, seq)
  return { type = "say", room = room, from = from, text = text, seq = seq }
end

local function presence(room, event, nick, extra)
  local m = { type = "presence", room = room, event = event, nick = nick }
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

describe("chat.lua", function()
  local srv
  local temps = {}

  -- A chat server whose rate limit is out of the way unless a spec sets one.
  local function server(chat, config)
    chat = chat or {}
    if chat.rate == nil then
      chat.rate = { burst = 100000, per_second = 100000 }
    end
    config = config or {}
    config.app = { chat = chat }
    srv = helpers.server(SCRIPT, config)
    return srv
  end

  -- A client connected with ?nick=&room= whose first messages are dropped.
  local function client(nick, rooms)
    local path = "/chat"
    if nick then
      path = path .. "?nick=" .. nick .. (rooms and ("&room=" .. rooms) or "")
    end
    local c = helpers.connect(srv, path)
    c:received()
    return c
  end

  local function send(c, msg)
    assert(c:send(type(msg) == "string" and msg or json.encode(msg)))
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
        protocol = 1,
        limits = {
          nick_length = 32,
          room_length = 64,
          max_length = 2000,
          max_rooms = 20,
          history = 50,
          rate = { burst = 100000, per_second = 100000 },
        },
      }, m[1])
      assert.is_string(m[1].node)
    end)

    it("states the configured limits and the default rate", function()
      srv:close()
      srv = helpers.server(SCRIPT, { app = { chat = { history = 5, max_length = 100, max_rooms = 3 } } })
      local m = msgs(helpers.connect(srv, "/"))[1]
      assert.same({ nick_length = 32, room_length = 64, max_length = 100, max_rooms = 3, history = 5,
        rate = { burst = 10, per_second = 5 } }, m.limits)
    end)

    it("sets the nick and joins the rooms of the query string", function()
      local c = helpers.connect(srv, "/chat?nick=ann&room=a,b")
      local m = msgs(c)
      assert.same({ "welcome", "nick_set", "joined", "history", "joined", "history" },
        { m[1].type, m[2].type, m[3].type, m[4].type, m[5].type, m[6].type })
      assert.same({ type = "nick_set", nick = "ann" }, m[2])
      assert.same({ type = "joined", room = "a", nick = "ann", members = { "ann" } }, m[3])
      assert.same({ type = "history", room = "a", messages = {} }, m[4])
      assert.same({ type = "joined", room = "b", nick = "ann", members = { "ann" } }, m[5])
    end)

    it("takes rooms= as well as room=", function()
      local m = msgs(helpers.connect(srv, "/?rooms=a,b&nick=ann"))
      assert.same({ "a", "b" }, { m[3].room, m[5].room })
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

      it("renames in every room: presence to the others, members updated", function()
        local ann = client("ann", "a,b")
        local bob = client("bob", "a")
        local cat = client("cat", "b")
        helpers.drain(ann, bob, cat)
        send(ann, { type = "nick", nick = "anna", id = 1 })
        assert.same({ { type = "nick_set", nick = "anna", old = "ann", ref = 1 } }, msgs(ann))
        assert.same({ presence("a", "nick", "anna", { old = "ann" }) }, msgs(bob))
        assert.same({ presence("b", "nick", "anna", { old = "ann" }) }, msgs(cat))
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
        assert.same({ { type = "nick_set", nick = "bob", old = "ann" } }, msgs(ann))
      end)

      it("lets you change the case of your own nick", function()
        local ann = client("ann", "a")
        local bob = client("bob", "a")
        helpers.drain(ann)
        send(ann, { type = "nick", nick = "Ann" })
        assert.same({ { type = "nick_set", nick = "Ann", old = "ann" } }, msgs(ann))
        assert.same({ presence("a", "nick", "Ann", { old = "ann" }) }, msgs(bob))
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
      it("sends joined with the members, then the history, and presence to the others", function()
        local ann = client("ann", "lobby")
        local bob = client("bob")
        send(bob, { type = "join", room = "lobby", id = "j" })
        assert.same({
          { type = "joined", room = "lobby", nick = "bob", members = { "ann", "bob" }, ref = "j" },
          { type = "history", room = "lobby", messages = {} },
        }, msgs(bob))
        assert.same({ presence("lobby", "join", "bob") }, msgs(ann))
      end)

      it("joins several rooms at once", function()
        local ann = client("ann")
        send(ann, { type = "join", rooms = { "a", "b" } })
        local m = msgs(ann)
        assert.same({
          { type = "joined", room = "a", nick = "ann", members = { "ann" } },
          { type = "history", room = "a", messages = {} },
          { type = "joined", room = "b", nick = "ann", members = { "ann" } },
          { type = "history", room = "b", messages = {} },
        }, m)
      end)

      it("reports each failing room of a list and joins the others", function()
        local ann = client("ann")
        send(ann, { type = "join", rooms = { "a", "no way", "b", "a" }, id = 9 })
        local m = msgs(ann)
        assert.equal(6, #m)
        assert.same({ "joined", "history" }, { m[1].type, m[2].type })
        assert.same(err("bad_room", 'a room name is 1 to 64 letters, digits, \'_\', \'-\' and \'.\' (got "no way")',
          { room = "no way", ref = 9 }), m[3])
        assert.same({ "joined", "history" }, { m[4].type, m[5].type })
        assert.same(err("already_in_room", 'you are already in room "a"', { room = "a", ref = 9 }), m[6])
      end)

      it("refuses a room whose member has your nick, ignoring case, with nick_taken", function()
        local ann = client("ann", "lobby")
        local other = client("ANN")
        helpers.drain(ann)
        send(other, { type = "join", room = "lobby" })
        assert.same({ err("nick_taken", 'the nick "ANN" is taken in room "lobby"', { room = "lobby" }) }, msgs(other))
        assert.same({}, msgs(ann))
        send(other, { type = "say", room = "lobby", text = "x" })
        assert.equal("not_in_room", msgs(other)[1].code)
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
        assert.same({
          err("missing_field", "'room' (a name) or 'rooms' (a list of names) is required"),
          err("bad_field", "'rooms' must be a non-empty list of room names"),
          err("bad_field", "'rooms' must be a non-empty list of room names"),
        }, msgs(ann))
      end)

      it("refuses more than max_rooms rooms with too_many_rooms", function()
        srv:close()
        server { max_rooms = 2 }
        local ann = client("ann", "a")
        send(ann, { type = "join", rooms = { "b", "c" } })
        local m = msgs(ann)
        assert.same({ "joined", "history" }, { m[1].type, m[2].type })
        assert.same(err("too_many_rooms", "at most 2 rooms per connection", { room = "c" }), m[3])
        send(ann, { type = "join", rooms = { "x", "y", "z" } })
        assert.same({ err("too_many_rooms", "at most 2 rooms per connection") }, msgs(ann))
        -- leaving makes room again
        send(ann, { type = "leave", room = "a" })
        send(ann, { type = "join", room = "c" })
        m = msgs(ann)
        assert.same({ "left", "joined", "history" }, { m[1].type, m[2].type, m[3].type })
      end)
    end)

    describe("leave", function()
      it("answers left and tells the others, who stop reaching the leaver", function()
        local ann = client("ann", "lobby")
        local bob = client("bob", "lobby")
        helpers.drain(ann)
        send(bob, { type = "leave", room = "lobby", id = "l" })
        assert.same({ { type = "left", room = "lobby", ref = "l" } }, msgs(bob))
        assert.same({ presence("lobby", "leave", "bob", { reason = "left" }) }, msgs(ann))
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
      it("delivers a say to the room but not the sender, who gets sent with the ref", function()
        local ann = client("ann", "lobby")
        local bob = client("bob", "lobby")
        local cat = client("cat", "lobby")
        helpers.drain(ann, bob)
        send(ann, { type = "say", room = "lobby", text = "hi all", id = "s1" })
        assert.same({ { type = "sent", room = "lobby", seq = 1, text = "hi all", ref = "s1" } }, msgs(ann))
        assert.same({ say("lobby", "ann", "hi all", 1) }, msgs(bob))
        assert.same({ say("lobby", "ann", "hi all", 1) }, msgs(cat))
      end)

      it("numbers the messages of each room", function()
        local ann = client("ann", "a,b")
        local bob = client("bob", "a,b")
        send(ann, { type = "say", room = "a", text = "1" })
        send(bob, { type = "say", room = "a", text = "2" })
        send(ann, { type = "say", room = "b", text = "3" })
        local m = msgs(ann)
        assert.same({ say("a", "bob", "2", 2) }, helpers.of_type(m, "say"))
        local sent = helpers.of_type(m, "sent")
        assert.same({ { "a", 1 }, { "b", 1 } }, { { sent[1].room, sent[1].seq }, { sent[2].room, sent[2].seq } })
        m = msgs(bob)
        assert.same({ say("a", "ann", "1", 1), say("b", "ann", "3", 1) }, helpers.of_type(m, "say"))
      end)

      it("goes only to the room named", function()
        local ann = client("ann", "a,b")
        local bob = client("bob", "a")
        local cat = client("cat", "b")
        helpers.drain(ann, bob, cat)
        send(ann, { type = "say", room = "b", text = "for b" })
        assert.same({}, msgs(bob))
        assert.same({ say("b", "ann", "for b", 1) }, msgs(cat))
      end)

      it("uses the only room of the connection when none is named", function()
        local ann = client("ann", "lobby")
        local bob = client("bob", "lobby")
        send(ann, '{"type":"say","text":"hi"}')
        assert.same({ say("lobby", "ann", "hi", 1) }, msgs(bob))
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
        assert.same("***, what the ***.", msgs(ann)[1].text)
        assert.same({ say("lobby", "ann", "***, what the ***.", 1) }, msgs(bob))
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
        assert.equal("sent", m[1].type)
        assert.same(err("too_long", "the message is 6 characters long; the limit is 5", { room = "lobby" }), m[2])
        assert.same({ say("lobby", "ann", "ééééé", 1) }, msgs(bob))
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
        assert.same({ say("lobby", "ann", text, 1), say("lobby", "ann", "é🎉", 2) }, msgs(bob))
      end)

      it("removes control characters", function()
        local ann = client("ann", "lobby")
        local bob = client("bob", "lobby")
        send(ann, { type = "say", text = "a\0b\27[31mc\r\nd" })
        assert.same({ say("lobby", "ann", "ab[31mc\nd", 1) }, msgs(bob))
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
        assert.same({ { type = "sent", room = "big", seq = 1, text = "to everyone" } }, msgs(members[1]))
        for i = 2, 200 do
          assert.same({ say("big", "u1", "to everyone", 1) }, msgs(members[i]))
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

      it("is not kept in the history", function()
        local ann = client("ann", "a")
        client("bob", "a")
        send(ann, { type = "private", to = "bob", text = "secret" })
        local cat = helpers.connect(srv, "/chat?nick=cat&room=a")
        assert.same({ type = "history", room = "a", messages = {} }, msgs(cat)[4])
      end)

      it("answers undelivered when the member's queue is full", function()
        srv:close()
        server({}, { limits = { max_buffered = 1024, backpressure = "drop" } })
        local ann = client("ann", "a")
        local bob = client("bob", "a")
        helpers.drain(ann)
        -- A slow reader: bob's queue already holds 1000 bytes when the private comes.
        assert.is_true(srv:reload(temp(helpers.modified_script(SCRIPT, [[
  local private = handlers.private
  function handlers.private(conn, d, msg, ref)
    mw.send(rooms.a.nicks.bob, ("p"):rep(1000))
    return private(conn, d, msg, ref)
  end]]))))
        send(ann, { type = "private", to = "bob", text = ("x"):rep(100) })
        assert.same({ ("p"):rep(1000) }, helpers.texts(bob))
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

      it("does not limit what the query string does on open", function()
        local c = helpers.connect(srv, "/chat?nick=ann&room=a,b,c,d")
        assert.equal(10, #msgs(c))
        send(c, { type = "ping" })
        assert.same({ { type = "pong" } }, msgs(c))
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
      it("sends the last messages of the room on join, oldest first", function()
        local ann = client("ann", "lobby")
        for i = 1, 3 do
          send(ann, { type = "say", text = "m" .. i })
        end
        local bob = helpers.connect(srv, "/chat?nick=bob&room=lobby")
        assert.same({ type = "history", room = "lobby", messages = {
          say("lobby", "ann", "m1", 1), say("lobby", "ann", "m2", 2), say("lobby", "ann", "m3", 3),
        } }, msgs(bob)[4])
      end)

      it("keeps the last 'history' messages", function()
        srv:close()
        server { history = 3 }
        local ann = client("ann", "lobby")
        for i = 1, 10 do
          send(ann, { type = "say", text = "m" .. i })
        end
        local bob = helpers.connect(srv, "/chat?nick=bob&room=lobby")
        local h = msgs(bob)[4].messages
        assert.same({ "m8", "m9", "m10" }, { h[1].text, h[2].text, h[3].text })
        assert.same({ 8, 9, 10 }, { h[1].seq, h[2].seq, h[3].seq })
        assert.equal(3, #h)
      end)

      it("keeps 50 by default", function()
        local ann = client("ann", "lobby")
        for i = 1, 60 do
          send(ann, { type = "say", text = "m" .. i })
        end
        local h = msgs(helpers.connect(srv, "/chat?nick=bob&room=lobby"))[4].messages
        assert.equal(50, #h)
        assert.equal("m11", h[1].text)
        assert.equal("m60", h[50].text)
      end)

      it("keeps nothing with history = 0", function()
        srv:close()
        server { history = 0 }
        local ann = client("ann", "lobby")
        send(ann, { type = "say", text = "gone" })
        assert.same({}, msgs(helpers.connect(srv, "/chat?nick=bob&room=lobby"))[4].messages)
      end)

      it("is per room", function()
        local ann = client("ann", "a,b")
        send(ann, { type = "say", room = "a", text = "in a" })
        send(ann, { type = "say", room = "b", text = "in b" })
        local m = msgs(helpers.connect(srv, "/chat?nick=bob&room=b"))
        assert.same({ say("b", "ann", "in b", 1) }, m[4].messages)
      end)

      it("outlives an empty room for room_ttl, then is forgotten", function()
        srv:close()
        server { room_ttl = 120000 }
        local ann = client("ann", "lobby")
        send(ann, { type = "say", text = "remember me" })
        ann:close()
        srv:advance(60000)
        local bob = helpers.connect(srv, "/chat?nick=bob&room=lobby")
        assert.same({ say("lobby", "ann", "remember me", 1) }, msgs(bob)[4].messages)
        bob:close()
        srv:advance(120000)
        local cat = helpers.connect(srv, "/chat?nick=cat&room=lobby")
        assert.same({}, msgs(cat)[4].messages)
        send(cat, { type = "say", text = "new" })
        assert.equal(1, msgs(cat)[1].seq)
      end)

      it("answers a history request with the ref", function()
        local ann = client("ann", "a,b")
        send(ann, { type = "say", room = "b", text = "hello b" })
        helpers.drain(ann)
        send(ann, { type = "history", room = "b", id = "h" })
        send(ann, { type = "history", room = "c" })
        assert.same({
          { type = "history", room = "b", ref = "h", messages = { say("b", "ann", "hello b", 1) } },
          err("not_in_room", 'you are not in room "c"', { room = "c" }),
        }, msgs(ann))
      end)

      it("truncates the histories of a many-room join to fit the write queue", function()
        srv:close()
        server({}, { limits = { max_buffered = 4096 } })
        local ann = client("ann", "a,b")
        for _, room in ipairs { "a", "b" } do
          for i = 1, 4 do
            send(ann, { type = "say", room = room, text = room .. i .. ("x"):rep(900) })
          end
        end
        local bob = client("bob")
        send(bob, { type = "join", rooms = { "a", "b" } })
        assert.is_true(bob:is_open())
        local m = msgs(bob)
        assert.same({ "joined", "history", "joined", "history" }, { m[1].type, m[2].type, m[3].type, m[4].type })
        -- the newest messages that fit, oldest first
        assert.is_true(m[2].truncated)
        assert.same({ 3, 4 }, { m[2].messages[1].seq, m[2].messages[2].seq })
        assert.equal(2, #m[2].messages)
        assert.same({ type = "history", room = "b", truncated = true, messages = {} }, m[4])
        -- asked alone, the whole history comes
        send(bob, { type = "history", room = "b" })
        m = msgs(bob)[1]
        assert.is_nil(m.truncated)
        assert.same({ 1, 2, 3, 4 }, { m.messages[1].seq, m.messages[2].seq, m.messages[3].seq, m.messages[4].seq })
      end)

      it("is forgotten with the room at once with room_ttl = 0", function()
        srv:close()
        server { room_ttl = 0 }
        local ann = client("ann", "lobby")
        send(ann, { type = "say", text = "gone" })
        send(ann, { type = "leave", room = "lobby" })
        send(ann, { type = "join", room = "lobby" })
        assert.same({}, msgs(ann)[4].messages)
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
      assert.same({ presence("a", "leave", "ann", { reason = "disconnected" }) }, msgs(bob))
      assert.same({ presence("b", "leave", "ann", { reason = "disconnected" }) }, msgs(cat))
      send(bob, { type = "members" })
      assert.same({ "bob" }, msgs(bob)[1].members)
    end)

    it("does the same when the connection drops", function()
      local ann = client("ann", "a")
      local bob = client("bob", "a")
      ann:drop()
      assert.same({ presence("a", "leave", "ann", { reason = "disconnected" }) }, msgs(bob))
      assert.equal(1, srv:count())
    end)

    it("frees the nick", function()
      local ann = client("ann", "lobby")
      client("bob", "lobby")
      ann:close()
      local again = helpers.connect(srv, "/chat?nick=ann&room=lobby")
      assert.same({ "ann", "bob" }, msgs(again)[3].members)
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
      assert.same({ say("lobby", "ann", "after", 2) }, msgs(bob))
      local cat = helpers.connect(srv, "/chat?nick=cat&room=lobby")
      local m = msgs(cat)
      assert.same({ "ann", "bob", "cat" }, m[3].members)
      assert.same({ say("lobby", "ann", "before", 1), say("lobby", "ann", "after", 2) }, m[4].messages)
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
      assert.same({ say("lobby", "ann", "QUIET PLEASE", 1) }, msgs(bob))
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
      assert.same({ say("lobby", "ann", "still here", 1) }, msgs(bob))
      assert.matches("moonwire_reload_failures_total 1", srv:metrics(), 1, true)
      local logs = table.concat(srv:logs(), "\n")
      assert.matches("reload failed, the previous app keeps serving", logs, 1, true)
    end)

    it("applies a lower history cap to what is kept", function()
      local ann = client("ann", "lobby")
      for i = 1, 5 do
        send(ann, { type = "say", text = "m" .. i })
      end
      assert.is_true(srv:reload(temp(helpers.modified_script(SCRIPT, "cfg.history = 2"))))
      local h = msgs(helpers.connect(srv, "/chat?nick=bob&room=lobby"))[4].messages
      assert.same({ "m4", "m5" }, { h[1].text, h[2].text })
      assert.equal(2, #h)
    end)

    it("starts the room sweeper again", function()
      srv:close()
      server { room_ttl = 1000 }
      local ann = client("ann", "lobby")
      send(ann, { type = "say", text = "old" })
      ann:close()
      assert.is_true(srv:reload())
      srv:advance(2000)
      assert.same({}, msgs(helpers.connect(srv, "/chat?nick=bob&room=lobby"))[4].messages)
    end)

    it("works for connections opened by another app", function()
      srv:close()
      srv = helpers.server("scripts/echo.lua")
      local c = helpers.connect(srv, "/")
      assert.is_true(srv:reload(SCRIPT))
      send(c, { type = "nick", nick = "ann" })
      send(c, { type = "join", room = "lobby" })
      local m = msgs(c)
      assert.same({ "nick_set", "joined", "history" }, { m[1].type, m[2].type, m[3].type })
    end)
  end)

  describe("on_error", function()
    it("answers internal with the ref and keeps the connection", function()
      local ann = client("ann", "lobby")
      local path = temp(helpers.modified_script(SCRIPT, [[function handlers.boom() error("kaboom") end]]))
      assert.is_true(srv:reload(path))
      send(ann, { type = "boom", id = "b" })
      assert.same({ err("internal", "the server failed to handle that message", { ref = "b" }) }, msgs(ann))
      assert.is_true(ann:is_open())
      assert.matches("kaboom", table.concat(srv:logs(), "\n"), 1, true)
      send(ann, { type = "ping" })
      assert.same({ { type = "pong" } }, msgs(ann))
    end)
  end)

  describe("sweeper", function()
    it("removes members whose on_close failed and tells the room", function()
      local ann = client("ann", "lobby")
      local bob = client("bob", "lobby")
      local path = temp(helpers.modified_script(SCRIPT, [[app.on_close = function() error("lost") end]]))
      assert.is_true(srv:reload(path))
      helpers.drain(bob)
      ann:close()
      assert.same({}, msgs(bob))
      srv:advance(60000)
      assert.same({ presence("lobby", "leave", "ann", { reason = "disconnected" }) }, msgs(bob))
      local again = helpers.connect(srv, "/chat?nick=ann&room=lobby")
      assert.equal("joined", msgs(again)[3].type)
    end)
  end)

  describe("config", function()
    local function load_error(chat)
      local ok, e = pcall(helpers.server, SCRIPT, { app = { chat = chat } })
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
    end)
  end)
end)
