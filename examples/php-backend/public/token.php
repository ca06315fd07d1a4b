<?php
// A fresh token for the logged-in user, asked by the chat page before each
// connection (tokens live JWT_LIFETIME seconds): {"token": "...", "user": "..."}.
require_once __DIR__ . '/../lib/session.php';

header('Content-Type: application/json');
header('Cache-Control: no-store');
$user = current_user();
session_write_close();   // the session is only read here: release its lock
if ($user === null) {
    http_response_code(401);
    echo json_encode(['error' => 'log in first']);
    exit;
}
echo json_encode(['token' => chat_token($user), 'user' => $user]);
