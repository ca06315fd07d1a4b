-- moonwire's configuration in the soak scenario (bench/run.py adds --listen
-- and --script scripts/chat.lua): the chat with history, as in
-- examples/chat, sized so that every room's history is full within the
-- first minute (the soak compares RSS at the end with RSS then). Quiet logs;
-- room for every connection from 127.0.0.x.
return {
  log = { level = "warn" },
  limits = { max_connections = 250000 },
  websocket = { max_message_size = 64 * 1024 },
  history = { topics = { "room:*" }, size = 50, ttl = 3600 },
  app = { chat = { history = 20 } },
}
