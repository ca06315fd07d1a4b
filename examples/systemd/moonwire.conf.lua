-- /etc/moonwire/moonwire.conf.lua: the chat behind a load balancer, run by
-- examples/systemd/moonwire.service. Every key: docs/configuration.md.
--
-- Paths are relative to WorkingDirectory=/opt/moonwire. The values that differ
-- per node come from the environment (EnvironmentFile=/etc/moonwire/env);
-- an unset variable leaves the key unset.
return {
  -- Every IPv4 address; the load balancer connects here and checks /healthz.
  listen = { ":8080" },

  script = "scripts/chat.lua",
  static = { root = "examples/chat/public" },

  -- "web1": connection ids and logs say which node. Unset: "mw".
  node_id = os.getenv("MW_NODE_ID"),

  -- The Redis backplane (docs/scaling.md); unset: this node runs alone.
  -- Keep the password out of the URL (a --redis flag shows in ps).
  cluster = {
    redis = os.getenv("MW_REDIS"),
    password = os.getenv("MW_REDIS_PASSWORD"),
  },

  -- One JSON object per line, to the journal (stderr).
  log = { level = "info", json = true },

  websocket = {
    max_message_size = 64 * 1024,
    -- The page's public origin(s), so that other sites' pages can not connect
    -- with your users' cookies:
    -- allowed_origins = { "https://chat.example.org" },
  },

  limits = {
    max_connections = 100000,   -- LimitNOFILE= of the unit must be above it
    -- Behind a proxy every connection comes from the proxy's address, so a
    -- per-address limit would count the proxy: 0 (off) unless clients
    -- connect directly (or through a TCP load balancer that keeps addresses).
    max_connections_per_ip = 0,
    idle_timeout = 60,
    ping_timeout = 15,
    shutdown_timeout = 10,      -- TimeoutStopSec= of the unit must be above it
    max_buffered = 1024 * 1024,
    backpressure = "close",
    backpressure_timeout = 2,   -- a client that does not read holds publishers back this long
  },

  -- /healthz for the load balancer, /metrics for Prometheus: only from here.
  http = {
    healthz_allow = { "127.0.0.1", "::1", "10.0.0.0/8" },
    metrics_allow = { "127.0.0.1", "::1", "10.0.0.0/8" },
  },

  -- The rooms' history, in Redis with a cluster (docs/scaling.md): a page
  -- that reconnects to any node gets what it missed.
  history = { topics = { "room:*" }, size = 200, ttl = 86400 },

  app = {
    chat = { history = 100, max_length = 2000 },
  },
}
