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

helpers.json = cjson

return helpers
