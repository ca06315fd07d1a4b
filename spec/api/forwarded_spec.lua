-- http.trusted_proxies in the sim: req.addr is the client that a trusted
-- peer's X-Forwarded-For names, and the peer's own otherwise; req.remote_addr
-- is its older name, kept for existing apps.
local helpers = require "helpers"

local APP = [[
local app = {}
function app.on_open(conn, req)
  assert(req.remote_addr == req.addr, "remote_addr is addr's other name")
  conn:send(req.addr .. " via " .. req.peer_addr)
end
return app
]]

describe("http.trusted_proxies", function()
  local srv

  before_each(function()
    srv = helpers.app_server(APP, { http = { trusted_proxies = { "10.0.0.0/8", "fd00::/8" } },
                                    limits = { max_connections_per_ip = 1 } })
  end)

  after_each(function()
    srv:close()
  end)

  local function seen(opts)
    local c = helpers.connect(srv, "/", opts)
    return helpers.texts(c)[1], c
  end

  it("takes the right-most untrusted address from a trusted peer", function()
    assert.equal("198.51.100.7 via 10.1.2.3",
                 (seen { remote_addr = "10.1.2.3",
                         headers = { ["X-Forwarded-For"] = "6.6.6.6, 198.51.100.7, 10.9.9.9" } }))
    assert.equal("2001:db8::1 via fd00::5",
                 (seen { remote_addr = "fd00::5", headers = { ["X-Real-IP"] = "2001:db8::1" } }))
  end)

  it("ignores the headers of a peer it does not trust", function()
    assert.equal("203.0.113.4 via 203.0.113.4",
                 (seen { remote_addr = "203.0.113.4",
                         headers = { ["X-Forwarded-For"] = "198.51.100.7", ["X-Real-IP"] = "1.1.1.1" } }))
  end)

  it("counts the per-address limit for the forwarded client", function()
    local first = seen { remote_addr = "10.0.0.1", headers = { ["X-Forwarded-For"] = "198.51.100.1" } }
    assert.equal("198.51.100.1 via 10.0.0.1", first)
    -- another client through the same proxy: its own count
    assert.equal("198.51.100.2 via 10.0.0.1",
                 (seen { remote_addr = "10.0.0.1", headers = { ["X-Forwarded-For"] = "198.51.100.2" } }))
    -- the first client again: over its limit of one
    local c, status = srv:connect("/", { remote_addr = "10.0.0.1",
                                         headers = { ["X-Forwarded-For"] = "198.51.100.1" } })
    assert.is_nil(c)
    assert.equal(503, status)
  end)

  it("takes the peer's address as opts.addr, or as opts.remote_addr, its older name", function()
    assert.equal("203.0.113.9 via 203.0.113.9", (seen { addr = "203.0.113.9" }))
    assert.equal("203.0.113.8 via 203.0.113.8", (seen { remote_addr = "203.0.113.8" }))
    assert.equal("198.51.100.3 via 10.0.0.3",
                 (seen { addr = "10.0.0.3", headers = { ["X-Forwarded-For"] = "198.51.100.3" } }))
    assert.has_error(function() srv:connect("/", { addr = "nowhere" }) end,
                     "bad argument #2 to 'connect' (addr is not an IP address)")
  end)
end)
