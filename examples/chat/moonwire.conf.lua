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
    max_topics = 20000,      -- rooms with members at once (a room is a topic)
    max_subscriptions = 100, -- topics per connection (a chat connection has max_rooms)
  },

  log = { level = "info" },

  -- The rooms' history (scripts/chat.lua's room "x" is the topic "room:x"):
  -- each message gets an offset and an epoch, and a page that reconnects
  -- gets exactly what it missed. Kept in this process's memory here; with
  -- --redis URL (docs/scaling.md) in Redis, shared by every node.
  history = {
    topics = { "room:*" },
    size = 200,              -- messages kept per room (says and presence events)
    ttl = 86400,             -- seconds a room's history is kept after its last message
                             -- or its last member leaving
    -- Bounds whatever clients do: past them the history of rooms nobody is in
    -- goes first (least recently used), then the oldest messages of the others.
    max_topics = 20000,      -- rooms whose history is kept
    max_bytes = 64 * 1024 * 1024,
  },

  -- Read by scripts/chat.lua (docs/chat-protocol.md, "Configuration").
  app = {
    chat = {
      history = 100,         -- room messages sent on join (of the history.size kept)
      max_length = 2000,     -- characters per message
      words = {},            -- masked words, e.g. { "darn", "heck" }
      mask = "***",
      rate = { burst = 10, per_second = 5 },
      max_rooms = 10,        -- rooms per connection
      new_rooms = { burst = 10, per_second = 0.1 },  -- rooms nobody is in, made per connection
      history_bytes = 64 * 1024,        -- history sent per room on a join
      join_history_bytes = 256 * 1024,  -- for all the rooms of a join (or of ?room=a,b,...)
    },
  },
}
