<?php
// Who is logged in: PHP's own session (a cookie), as any PHP app has. The
// WebSocket does not see it: the page asks token.php for a JWT instead.
require_once __DIR__ . '/config.php';
require_once __DIR__ . '/jwt.php';
require_once __DIR__ . '/moonwire.php';
require_once __DIR__ . '/archive.php';

session_set_cookie_params(['httponly' => true, 'samesite' => 'Lax']);
session_start();

function current_user(): ?string { return $_SESSION['user'] ?? null; }

function is_admin(): bool {
    $u = current_user();
    return $u !== null && USERS[$u]['admin'];
}

function check_login(string $user, string $password): bool {
    return isset(USERS[$user]) && password_verify($password, USERS[$user]['hash']);
}

// A page for logged-in users only: others go to the login form.
function require_user(): string {
    $u = current_user();
    if ($u === null) {
        header('Location: /index.php');
        exit;
    }
    return $u;
}

// A form's token against cross-site posts.
function csrf_token(): string {
    if (!isset($_SESSION['csrf'])) {
        $_SESSION['csrf'] = bin2hex(random_bytes(16));
    }
    return $_SESSION['csrf'];
}

function csrf_ok(): bool {
    return isset($_POST['csrf'], $_SESSION['csrf']) && hash_equals($_SESSION['csrf'], (string) $_POST['csrf']);
}

function h(?string $s): string { return htmlspecialchars((string) $s, ENT_QUOTES, 'UTF-8'); }
