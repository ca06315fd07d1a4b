<?php
// The chat page of a logged-in user. chat.js asks token.php for a token and
// connects to moonwire with it (scripts/chat.lua with app.chat.jwt): the nick
// is the user's, taken from the token by moonwire.
require_once __DIR__ . '/../lib/session.php';

$user = require_user();
$room = (string) ($_GET['room'] ?? 'lobby');
if (!preg_match(ROOM_PATTERN, $room)) {
    $room = 'lobby';
}
?><!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title><?= h($room) ?>: moonwire and PHP</title>
  <link rel="icon" href="data:,">
  <link rel="stylesheet" href="/style.css">
  <script src="/chat.js" defer></script>
</head>
<body>
  <header class="top">
    <h1>Room <?= h($room) ?></h1>
    <p>You are <strong id="me"><?= h($user) ?></strong>.
      <?php if (is_admin()): ?><a href="/admin.php">Admin</a> · <?php endif ?>
      <a href="/logout.php">Log out</a></p>
    <p id="status" class="status" data-state="offline" role="status">not connected</p>
  </header>
  <main id="chat" class="chat" data-room="<?= h($room) ?>" data-ws-port="<?= h(ws_port()) ?>">
    <section class="messages" aria-label="Messages">
      <ol id="log" class="log" role="log" aria-live="polite"></ol>
      <form id="send-form" class="compose">
        <label for="text" class="visually-hidden">Message</label>
        <input id="text" autocomplete="off" placeholder="Write a message" maxlength="2000">
        <button id="send" type="submit" disabled>Send</button>
      </form>
    </section>
    <aside aria-labelledby="members-title">
      <h2 id="members-title">Members</h2>
      <ul id="members" class="members"></ul>
    </aside>
  </main>
</body>
</html>
