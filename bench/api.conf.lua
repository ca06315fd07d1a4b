-- moonwire's configuration in the server API's benchmarks (bench/api.py):
-- quiet logs, the API on with the key the driver sends, and a queue consumer
-- that reads in large batches when bench/run.py adds a Redis.
return {
  log = { level = "warn" },
  api = { key = "bench-key" },
  queue = { read_count = 256, max_pending = 4096 },
}
