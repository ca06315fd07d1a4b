<?php
// The admin page: an announcement into a room, through moonwire's HTTP API
// (php-curl) or through its queue (php-redis XADD); and the archive, the
// room messages worker.php stored in SQLite.
require_once __DIR__ . '/../lib/session.php';

$user = require_user();
if (!is_admin()) {
    http_response_code(403);
    echo "Only admin may use this page.\n";
    exit;
}

$result = null;
$error = null;
$room = (string) ($_POST['room'] ?? 'lobby');
if ($_SERVER['REQUEST_METHOD'] === 'POST') {
    $text = trim((string) ($_POST['text'] ?? ''));
    $via = (string) ($_POST['via'] ?? '');
    if (!csrf_ok()) {
        http_response_code(400);
        $error = 'The form is stale: reload the page.';
    } elseif (!preg_match(ROOM_PATTERN, $room) || !preg_match('/^.{1,2000}$/su', $text)) {
        http_response_code(400);
        $error = 'A room (letters, digits, _ . -) and a text of 1 to 2000 characters, please.';
    } else {
        $data = announcement($room, $user, $text, $via);
        try {
            if ($via === 'api') {
                $r = moonwire('publish', ['topic' => "room:$room", 'data' => $data]);
                $result = "Published through the HTTP API: delivered to {$r['delivered']} connection(s) of that node"
                        . (isset($r['offset']) ? ", offset {$r['offset']}" : '') . '.';
            } elseif ($via === 'stream') {
                $id = moonwire_queue(redis_connect(), 'publish', ['topic' => "room:$room", 'data' => $data]);
                $result = "Queued in " . QUEUE_STREAM . " as entry $id: a moonwire node applies it.";
            } else {
                http_response_code(400);
                $error = 'Choose the HTTP API or the stream.';
            }
        } catch (Exception $e) {
            http_response_code(502);
            $error = 'moonwire refused or is away: ' . $e->getMessage();
        }
    }
}

$archive = [];
$archive_error = null;
try {
    $archive = archive_list(archive_open(archive_db()));
} catch (Exception $e) {
    $archive_error = $e->getMessage();
}
?><!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Admin: moonwire and PHP</title>
  <link rel="icon" href="data:,">
  <link rel="stylesheet" href="/style.css">
</head>
<body>
  <header class="top">
    <h1>Admin</h1>
    <p>You are <strong><?= h($user) ?></strong>. <a href="/chat.php">Chat</a> · <a href="/logout.php">Log out</a></p>
  </header>
  <main class="narrow">
    <h2>Announce</h2>
    <?php if ($result !== null): ?><p id="result" class="ok" role="status"><?= h($result) ?></p><?php endif ?>
    <?php if ($error !== null): ?><p id="error" class="error" role="alert"><?= h($error) ?></p><?php endif ?>
    <form id="announce-form" method="post" action="/admin.php">
      <input type="hidden" name="csrf" value="<?= h(csrf_token()) ?>">
      <label for="room">Room</label>
      <input id="room" name="room" required value="<?= h($room) ?>" autocapitalize="off">
      <label for="text">Announcement</label>
      <input id="text" name="text" required maxlength="2000">
      <button id="via-api" type="submit" name="via" value="api">Send through the HTTP API</button>
      <button id="via-stream" type="submit" name="via" value="stream">Send through the Redis stream</button>
    </form>

    <h2>Archive</h2>
    <p class="hint">The newest room messages, as worker.php stored them in SQLite from the stream
      <?= h(ARCHIVE_STREAM) ?>. <a href="/admin.php">Refresh</a></p>
    <?php if ($archive_error !== null): ?><p class="error"><?= h($archive_error) ?></p><?php endif ?>
    <table id="archive">
      <thead><tr><th>Entry</th><th>Room</th><th>Type</th><th>Who</th><th>Text</th></tr></thead>
      <tbody>
      <?php foreach ($archive as $m): ?>
        <tr><td><?= h($m['stream_id']) ?></td><td><?= h($m['room']) ?></td><td><?= h($m['type']) ?></td>
            <td><?= h($m['nick']) ?></td><td><?= h($m['text']) ?></td></tr>
      <?php endforeach ?>
      </tbody>
    </table>
  </main>
</body>
</html>
