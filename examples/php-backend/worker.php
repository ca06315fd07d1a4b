<?php
// The archive worker: reads the room messages moonwire hands to the stream
// chat:archive (chat.lua's app.chat.archive) in a consumer group of its own
// and stores them in SQLite, then acknowledges them (XACK).
//
//   php worker.php [--max-seconds N] [--max-entries N] [--consumer NAME]
//
// A bounded run: it stops after N seconds or N entries (0: no bound), or at
// SIGTERM/SIGINT, after the entries in hand are stored; run.sh starts it
// again. Entries it read but had not acknowledged when it stopped (a crash,
// a kill) are its consumer's pending ones: it stores those first at the
// next start. Storing is idempotent (the entry id is the key), so an entry
// stored twice is one row.
require_once __DIR__ . '/lib/config.php';
require_once __DIR__ . '/lib/moonwire.php';
require_once __DIR__ . '/lib/archive.php';

$opts = getopt('', ['max-seconds:', 'max-entries:', 'consumer:']);
$max_seconds = (int) ($opts['max-seconds'] ?? 0);
$max_entries = (int) ($opts['max-entries'] ?? 0);
$consumer = $opts['consumer'] ?? 'worker-1';
const BLOCK_MS = 1000;   // one XREADGROUP waits at most this long: how soon a stop is noticed
const COUNT = 100;       // entries per read

$stop = false;
pcntl_async_signals(true);
foreach ([SIGTERM, SIGINT] as $sig) {
    pcntl_signal($sig, function () use (&$stop) { $stop = true; });
}

function say(string $line): void { fwrite(STDERR, date('H:i:s') . " worker: $line\n"); }

$db = archive_open(archive_db());
$redis = redis_connect();
$redis->setOption(Redis::OPT_READ_TIMEOUT, BLOCK_MS / 1000 + 5);
try {
    $redis->xGroup('CREATE', ARCHIVE_STREAM, ARCHIVE_GROUP, '0', true);   // MKSTREAM
} catch (RedisException $e) {
    // BUSYGROUP: it exists.
}
$redis->clearLastError();

$started = microtime(true);
$stored = 0;
$from = '0';   // first this consumer's pending entries, then new ones ('>')
say("reading " . ARCHIVE_STREAM . " as $consumer of " . ARCHIVE_GROUP
    . ($max_seconds ? ", for $max_seconds s" : '') . ($max_entries ? ", for $max_entries entries" : ''));
while (!$stop) {
    if ($max_seconds && microtime(true) - $started >= $max_seconds) break;
    if ($max_entries && $stored >= $max_entries) break;
    $count = $max_entries ? min(COUNT, $max_entries - $stored) : COUNT;
    try {
        $got = $redis->xReadGroup(ARCHIVE_GROUP, $consumer, [ARCHIVE_STREAM => $from], $count,
                                  $from === '>' ? BLOCK_MS : null);
    } catch (RedisException $e) {
        pcntl_signal_dispatch();   // a signal that cut the read short has not run its handler yet
        if ($stop) break;
        say("redis: " . $e->getMessage() . "; stopping");
        exit(1);            // run.sh starts it again
    }
    $entries = $got[ARCHIVE_STREAM] ?? [];
    if ($from === '0' && count($entries) === 0) {
        $from = '>';        // no pending left: new entries from here on
        continue;
    }
    foreach ($entries as $id => $fields) {
        if (!is_array($fields) || !archive_store($db, $id, $fields)) {
            say("entry $id is not a room message; acknowledged, not stored");
        }
        $redis->xAck(ARCHIVE_STREAM, ARCHIVE_GROUP, [$id]);
        $stored++;
    }
}
say("stored $stored entries; stopping");
