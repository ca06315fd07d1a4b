-- fanout.lua: the fan-out benchmark's app. A client joins the room named in
-- its query string (/?room=7) and every message it sends goes to every other
-- member of that room through moonwire.publish: one frame, shared by all.
local mw = require "moonwire"

local app = {}

function app.on_open(conn, req)
  local room = req.query.room or "lobby"
  conn.data.room = room
  conn:subscribe(room)
end

function app.on_message(conn, data, kind)
  mw.publish(conn.data.room, data, { except = conn, binary = kind == "binary" })
end

return app
