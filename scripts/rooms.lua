-- rooms.lua: chat rooms on topics. Connect to ws://127.0.0.1:8080/?nick=ann&room=lobby
local mw = require "moonwire"

local app = {}

local function join(conn, room)
  conn.data.room = "room:" .. room
  conn:subscribe(conn.data.room)
  mw.publish(conn.data.room, conn.data.nick .. " joined", { except = conn })
end

local function leave(conn)
  conn:unsubscribe(conn.data.room)
  mw.publish(conn.data.room, conn.data.nick .. " left")
end

function app.on_upgrade(req)
  local nick = req.query.nick
  if not nick or not nick:match("^%w+$") then
    return false, 400, "add ?nick=NAME (letters and digits)"
  end
end

function app.on_open(conn, req)
  conn.data.nick = req.query.nick
  join(conn, req.query.room or "lobby")
end

function app.on_message(conn, data, kind)
  if kind ~= "text" then
    return
  end
  local room = data:match("^/join (%w+)$")
  if room then
    leave(conn)
    join(conn, room)
    conn:send(("you are in %s (%d here)"):format(room, mw.subscribers(conn.data.room)))
  else
    mw.publish(conn.data.room, conn.data.nick .. ": " .. data, { except = conn })
  end
end

function app.on_close(conn, code, reason)
  leave(conn) -- the core has already taken the connection out of its topics
end

return app
