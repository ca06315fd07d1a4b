-- Shared helpers for specs: a sim server factory and message decoding.
local sim = require "moonwire.sim"
local cjson = require "cjson.safe"

local helpers = {}

-- A fresh sim server for the app at `script`, with optional config sections.
function helpers.server(script, config)
  return sim.new { script = script, config = config }
end

-- Connects and fails the spec when the handshake is refused.
function helpers.connect(srv, path, opts)
  local client, status, body = srv:connect(path or "/", opts)
  assert(client, ("handshake refused: %s %s"):format(tostring(status), tostring(body)))
  return client
end

-- The data of every message a client received since the last call.
function helpers.texts(client)
  local out = {}
  for i, m in ipairs(client:received()) do
    out[i] = m.data
  end
  return out
end

-- Every message a client received, decoded from JSON.
function helpers.json_messages(client)
  local out = {}
  for i, m in ipairs(client:received()) do
    out[i] = assert(cjson.decode(m.data), "not JSON: " .. m.data)
  end
  return out
end

-- The decoded messages of one type ("say", "error", ...).
function helpers.of_type(messages, type_)
  local out = {}
  for _, m in ipairs(messages) do
    if m.type == type_ then
      out[#out + 1] = m
    end
  end
  return out
end

-- Drops what the clients received so far.
function helpers.drain(...)
  for i = 1, select("#", ...) do
    select(i, ...):received()
  end
end

-- Writes text to a new temporary file; returns its path (remove it with os.remove).
function helpers.tempfile(text)
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
  return path
end

-- A fresh sim server for an app given as source text: written to a temporary
-- file that is gone again once the server has loaded it.
function helpers.app_server(source, config)
  local path = helpers.tempfile(source)
  local ok, srv = pcall(helpers.server, path, config)
  os.remove(path)
  assert(ok, srv)
  return srv
end

-- A modified copy of the app at `script` in a temporary file: `code` runs at
-- the end of the script, where its locals are in scope, before the final
-- `return app`. Returns the path.
function helpers.modified_script(script, code)
  local f = assert(io.open(script))
  local source = f:read("a")
  f:close()
  local n
  source, n = source:gsub("\nreturn app%s*$", function()
    return "\n" .. code .. "\nreturn app\n"
  end)
  assert(n == 1, script .. " does not end with 'return app'")
  return helpers.tempfile(source)
end

helpers.json = cjson

return helpers
