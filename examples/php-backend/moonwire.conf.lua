-- moonwire for the PHP example (run.sh passes --listen and --redis, and sets
-- the environment: CHAT_JWT_SECRET, MW_API_KEY, PHP_ORIGINS).
--
-- scripts/chat.lua with two options: app.chat.jwt (only a connection with a
-- token the PHP side signed opens; the nick is the token's user) and
-- app.chat.archive (every room message also goes to a Redis stream, which
-- worker.php stores in SQLite). The HTTP API (its key from MW_API_KEY) and
-- the queue (the stream mw:api, read through the backplane) let the PHP side
-- push announcements.
local origins = {}
for origin in (os.getenv("PHP_ORIGINS") or ""):gmatch("%S+") do
  origins[#origins + 1] = origin
end

return {
  script = "scripts/chat.lua",

  -- The page comes from php -S on another port: only its origin may open a
  -- WebSocket from a browser (none given: any).
  websocket = { allowed_origins = origins, max_message_size = 64 * 1024 },

  -- The API is for the backend on this machine, not for browsers. Its key is
  -- MW_API_KEY from the environment (api.key here would win).
  api = { allow = { "127.0.0.1", "::1" } },

  -- The queue's stream (the default), what lib/config.php's QUEUE_STREAM names.
  queue = { stream = "mw:api" },

  -- Each room keeps its last 200 messages (in Redis, with --redis): a page
  -- that connects gets the room's recent messages, announcements included.
  history = { topics = { "room:*" }, size = 200, ttl = 86400 },

  log = { level = "info" },

  app = {
    chat = {
      history = 50,
      archive = "chat:archive",               -- lib/config.php's ARCHIVE_STREAM
      jwt = {
        key_env = "CHAT_JWT_SECRET",          -- the secret lib/jwt.php signs with
        aud = "moonwire-chat",                -- lib/config.php's JWT_AUDIENCE
        iss = "moonwire-php-example",         -- and JWT_ISSUER
        leeway = 30,
      },
    },
  },
}
