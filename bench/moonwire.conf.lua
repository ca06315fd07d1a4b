-- moonwire's configuration in the benchmarks (bench/run.py adds --listen and
-- --script): quiet logs, and room for the connect scenario's 100,000 clients,
-- all from 127.0.0.x. Everything else is the default.
return {
  log = { level = "warn" },
  limits = { max_connections = 250000 },
}
