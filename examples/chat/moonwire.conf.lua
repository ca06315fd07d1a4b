-- The chat example: scripts/chat.lua and its web page, on one port.
--
--   ./build/moonwire --config examples/chat/moonwire.conf.lua   (or: make run)
--
-- then open http://127.0.0.1:8080/ in two browser windows. Paths are relative
-- to the directory moonwire starts in: run it from the repository root.
-- --listen HOST:PORT on the command line replaces `listen`.
return {
  listen = "127.0.0.1:8080",
  script = "scripts/chat.lua",

  -- index.html, app.js and style.css at /. A GET without an Upgrade header
  -- gets a file; a WebSocket upgrade (to any path: the page uses /chat) gets
  -- the chat. "no-cache": a browser revalidates (ETag, 304) on every load,
  -- so an edit to the page shows at the next reload.
  static = {
    root = "examples/chat/public",
    cache_control = "no-cache",
  },

  websocket = {
    -- A say is at most max_length (2000) characters, up to 8000 bytes of
    -- UTF-8 before JSON escaping: 64 KiB is plenty, and caps what one
    -- client can make the server buffer for a single message.
    max_message_size = 64 * 1024,
    -- Behind a public name, list the page's origin(s) here, e.g.
    -- allowed_origins = { "https://chat.example.org" },
  },

  limits = {
    idle_timeout = 60,       -- seconds without traffic before a ping
    ping_timeout = 15,       -- seconds to answer it before the close
    max_connections_per_ip = 50,
  },

  log = { level = "info" },

  -- Read by scripts/chat.lua (docs/chat-protocol.md, "Configuration").
  app = {
    chat = {
      history = 100,         -- say messages kept per room, sent on join
      max_length = 2000,     -- characters per message
      words = {},            -- masked words, e.g. { "darn", "heck" }
      mask = "***",
      rate = { burst = 10, per_second = 5 },
      max_rooms = 10,        -- rooms per connection
      room_ttl = 600000,     -- ms an empty room and its history are kept
    },
  },
}
