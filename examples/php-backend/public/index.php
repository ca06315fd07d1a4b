<?php
// The login form: a user of the fixed list (lib/config.php) and its password.
// Logged in, the chat page; PHP's session remembers who it is.
require_once __DIR__ . '/../lib/session.php';

$error = null;
if ($_SERVER['REQUEST_METHOD'] === 'POST') {
    $user = (string) ($_POST['user'] ?? '');
    if (check_login($user, (string) ($_POST['password'] ?? ''))) {
        session_regenerate_id(true);
        $_SESSION['user'] = $user;
        header('Location: ' . (USERS[$user]['admin'] ? '/admin.php' : '/chat.php'));
        exit;
    }
    http_response_code(401);
    $error = 'Unknown user or wrong password.';
} elseif (current_user() !== null) {
    header('Location: /chat.php');
    exit;
}
?><!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Log in: moonwire and PHP</title>
  <link rel="icon" href="data:,">
  <link rel="stylesheet" href="/style.css">
</head>
<body>
  <main class="narrow">
    <h1>Log in</h1>
    <p class="hint">The PHP backend logs you in and signs a token; the chat connects to moonwire with it.
      Users: ann, bob, carol (passwords in README.md), and admin for the admin page.</p>
    <?php if ($error !== null): ?><p id="login-error" class="error" role="alert"><?= h($error) ?></p><?php endif ?>
    <form id="login-form" method="post" action="/index.php">
      <label for="user">User</label>
      <input id="user" name="user" required autocomplete="username" autocapitalize="off" value="<?= h($_POST['user'] ?? '') ?>">
      <label for="password">Password</label>
      <input id="password" name="password" type="password" required autocomplete="current-password">
      <button type="submit">Log in</button>
    </form>
  </main>
</body>
</html>
