-- wss:// on 127.0.0.1:8443 next to ws:// on 127.0.0.1:8080, serving the chat.
-- Run examples/tls/make-cert.sh first (paths are relative to the repository root).
return {
  listen = { "127.0.0.1:8080" },
  tls = {
    listen = { "127.0.0.1:8443" },
    cert = "examples/tls/cert.pem",
    key = "examples/tls/key.pem",
  },
  script = "scripts/chat.lua",
  static = { root = "examples/chat/public" },
  history = { topics = { "room:*" } },
}
