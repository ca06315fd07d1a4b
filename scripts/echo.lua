-- echo.lua: every message goes back to its sender, as the same kind.
local app = {}

function app.on_message(conn, data, kind)
  conn:send(data, kind)
end

return app
