-- relay.lua: every message goes to every other connected client, as the same
-- kind; the sender gets nothing back. This is the Ratchet chat example.
local mw = require "moonwire"

local app = {}

function app.on_message(conn, data, kind)
  mw.broadcast(data, { except = conn, binary = kind == "binary" })
end

return app
