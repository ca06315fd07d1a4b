<?php
// The archive: the room messages moonwire hands to the stream chat:archive
// (chat.lua's app.chat.archive), as worker.php stores them in SQLite.

function archive_open(string $path): SQLite3 {
    $db = new SQLite3($path);
    $db->busyTimeout(5000);            // the worker writes while pages read
    $db->exec('PRAGMA journal_mode = WAL');
    $db->exec('CREATE TABLE IF NOT EXISTS messages (
        stream_id TEXT PRIMARY KEY,    -- the entry id: storing an entry twice keeps one row
        room TEXT NOT NULL,
        type TEXT NOT NULL,            -- say, presence
        nick TEXT,
        text TEXT,
        time INTEGER,
        message TEXT NOT NULL          -- the JSON the room got
    )');
    return $db;
}

// Stores one stream entry (fields room, type, message). Returns false for an
// entry that is not one (logged by the caller, acknowledged all the same).
function archive_store(SQLite3 $db, string $id, array $fields): bool {
    if (!isset($fields['room'], $fields['type'], $fields['message'])) {
        return false;
    }
    $m = json_decode($fields['message'], true);
    if (!is_array($m)) {
        return false;
    }
    $st = $db->prepare('INSERT OR IGNORE INTO messages (stream_id, room, type, nick, text, time, message)
                        VALUES (:id, :room, :type, :nick, :text, :time, :message)');
    $st->bindValue(':id', $id);
    $st->bindValue(':room', $fields['room']);
    $st->bindValue(':type', $fields['type']);
    $st->bindValue(':nick', $m['from'] ?? $m['nick'] ?? null);
    $st->bindValue(':text', $m['text'] ?? $m['event'] ?? null);
    $st->bindValue(':time', $m['time'] ?? null, SQLITE3_INTEGER);
    $st->bindValue(':message', $fields['message']);
    $st->execute();
    return true;
}

// The newest archived messages, newest first.
function archive_list(SQLite3 $db, int $limit = 50): array {
    $st = $db->prepare('SELECT stream_id, room, type, nick, text, time FROM messages
                        ORDER BY rowid DESC LIMIT :limit');
    $st->bindValue(':limit', $limit, SQLITE3_INTEGER);
    $res = $st->execute();
    $rows = [];
    while (($r = $res->fetchArray(SQLITE3_ASSOC)) !== false) {
        $rows[] = $r;
    }
    return $rows;
}
