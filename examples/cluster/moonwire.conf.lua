-- One node of the cluster example (run.sh passes --listen, --node-id, --redis).
return {
  script = "scripts/chat.lua",
  static = { root = "examples/chat/public", cache_control = "no-cache" },
  history = { topics = { "room:*" }, size = 100 },
  cluster = { presence_ttl = 15 },
  log = { level = "info" },
}
