-- The bounds on topics and history under moonwire.sim: conn:subscribe past
-- limits.max_topics or limits.max_subscriptions, and mw.publish to a history
-- topic past history.max_topics or history.max_bytes, answer nil and an exact
-- reason, are counted in /metrics and logged at most once a second; the
-- history of topics without members goes first.
local helpers = require "helpers"

local APP = [[
local mw = require "moonwire"
local app = {}
function app.on_message(conn, data)
  local cmd, arg = data:match("^(%w+) ?(.*)$")
  local a, b
  if cmd == "sub" then
    a, b = conn:subscribe(arg)
  elseif cmd == "unsub" then
    a, b = conn:unsubscribe(arg)
  elseif cmd == "pub" then
    local topic, size = arg:match("^(%S+) (%d+)$")
    a, b = mw.publish(topic, ("x"):rep(tonumber(size)))
  elseif cmd == "hist" then
    a = #mw.history(arg).messages
  end
  conn:send(tostring(a) .. " " .. tostring(b))
end
return app
]]

describe("bounds on topics and history", function()
  local srv

  local function server(config)
    srv = helpers.app_server(APP, config)
    return srv
  end

  -- The reply to cmd (after what a publish delivered to c itself).
  local function ask(c, cmd)
    assert(c:send(cmd))
    local got = helpers.texts(c)
    return got[#got]
  end

  local function metric(name)
    return tonumber(srv:metrics():match("\n" .. name:gsub("[%[%]%(%)%.%-]", "%%%0") .. " (%d+)\n"))
  end

  local function warnings(pattern)
    local n = 0
    for _, line in ipairs(srv:logs()) do
      if line:find(pattern, 1, true) then
        n = n + 1
      end
    end
    return n
  end

  after_each(function()
    srv:close()
  end)

  describe("conn:subscribe", function()
    it("answers nil, 'too many topics' for a new topic past limits.max_topics", function()
      server { limits = { max_topics = 2 } }
      local a, b = helpers.connect(srv), helpers.connect(srv)
      srv:logs()
      assert.equal("true nil", ask(a, "sub t1"))
      assert.equal("true nil", ask(a, "sub t2"))
      for _ = 1, 5 do
        assert.equal("nil too many topics", ask(b, "sub t3"))
      end
      assert.equal("true nil", ask(b, "sub t1")) -- a topic that exists is no new one
      assert.equal("true nil", ask(a, "unsub t2"))
      assert.equal("true nil", ask(b, "sub t3"))
      assert.equal(5, metric('moonwire_subscribe_refusals_total{limit="max_topics"}'))
      assert.equal(2, metric("moonwire_topics"))
      assert.equal(3, metric("moonwire_subscriptions"))
      assert.equal(1, warnings("limits.max_topics (2) reached"))
    end)

    it("answers nil, 'too many subscriptions' past limits.max_subscriptions", function()
      server { limits = { max_subscriptions = 2 } }
      local a, b = helpers.connect(srv), helpers.connect(srv)
      assert.equal("true nil", ask(a, "sub t1"))
      assert.equal("true nil", ask(a, "sub t2"))
      assert.equal("nil too many subscriptions", ask(a, "sub t3"))
      assert.equal("true nil", ask(a, "sub t2"))
      assert.equal("true nil", ask(b, "sub t3"))
      assert.equal(1, metric('moonwire_subscribe_refusals_total{limit="max_subscriptions"}'))
      assert.equal(1, warnings("limits.max_subscriptions (2) reached"))
    end)

    it("bounds one connection that subscribes to every name it can make", function()
      server { limits = { max_subscriptions = 100 } }
      local a = helpers.connect(srv)
      local refused = 0
      for i = 1, 300 do
        if ask(a, "sub room:" .. i) == "nil too many subscriptions" then
          refused = refused + 1
        end
      end
      assert.equal(200, refused)
      assert.equal(100, metric("moonwire_topics"))
      assert.is_true(a:is_open())
    end)
  end)

  describe("mw.publish to a history topic", function()
    it("drops the least recently used history of a topic without members at history.max_topics", function()
      server { history = { topics = { "h:*" }, max_topics = 3 } }
      local a = helpers.connect(srv)
      for i = 1, 10 do
        assert.matches("^1 0$", ask(a, "pub h:" .. i .. " 10"))
      end
      assert.equal(3, metric("moonwire_history_topics"))
      assert.equal(7, metric('moonwire_history_dropped_total{reason="bounds"}'))
    end)

    it("answers nil, 'too many history topics' when every topic with history has members", function()
      server { history = { topics = { "h:*" }, max_topics = 2 } }
      local a = helpers.connect(srv)
      ask(a, "sub h:1")
      ask(a, "sub h:2")
      assert.equal("1 1", ask(a, "pub h:1 10"))
      assert.equal("1 1", ask(a, "pub h:2 10"))
      assert.equal("nil too many history topics", ask(a, "pub h:3 10"))
      assert.equal("2 1", ask(a, "pub h:1 10"))
      assert.equal(1, metric('moonwire_history_refusals_total{limit="max_topics"}'))
      ask(a, "unsub h:2")
      assert.equal("1 0", ask(a, "pub h:3 10"))
    end)

    it("answers nil, 'too large for history' for a message history.max_bytes can not hold", function()
      server { history = { topics = { "h:*" }, max_bytes = 65536 } }
      local a = helpers.connect(srv)
      ask(a, "sub h:1")
      assert.equal("nil too large for history", ask(a, "pub h:1 70000"))
      assert.equal("1 1", ask(a, "pub h:1 100"))
      assert.equal(1, metric('moonwire_history_refusals_total{limit="max_bytes"}'))
    end)

    it("keeps history within history.max_bytes, the newest messages of topics with members last", function()
      server { history = { topics = { "h:*" }, max_bytes = 65536, size = 1000 } }
      local a = helpers.connect(srv)
      ask(a, "sub h:live")
      for i = 1, 20 do
        ask(a, "pub h:idle" .. i .. " 1000")
      end
      for _ = 1, 200 do
        ask(a, "pub h:live 1000")
        assert.is_true(metric("moonwire_history_bytes") <= 65536)
      end
      assert.equal(20, metric('moonwire_history_dropped_total{reason="bounds"}'))
      assert.is_true(metric("moonwire_history_trimmed_total") > 100)
      assert.equal(1, metric("moonwire_history_topics"))
    end)

    it("raises for a topic name that no subscription could have, as mw.history does", function()
      server { history = { topics = { "h:*" } } }
      local a, b = helpers.connect(srv), helpers.connect(srv)
      assert.error_matches(function()
        a:send("pub h:" .. ("x"):rep(300) .. " 10")
      end, "bad argument #1 to 'publish' (topic must be 1 to 256 bytes)", 1, true)
      assert.is_false(a:is_open()) -- the hook raised: 1011
      assert.matches("topic must be 1 to 256 bytes", table.concat(srv:logs(), "\n"), 1, true)
      assert.equal("0 nil", ask(b, "hist h:" .. ("x"):rep(250)))
      assert.error_matches(function()
        b:send("hist h:" .. ("x"):rep(300))
      end, "topic must be 1 to 256 bytes", 1, true)
      assert.is_false(b:is_open())
      assert.matches("topic must be 1 to 256 bytes", table.concat(srv:logs(), "\n"), 1, true)
    end)
  end)
end)
