<?php // whoami.php: the session's user, for a hook that checks the session cookie (docs/backend.md)
require_once __DIR__ . '/../lib/session.php';
header('Content-Type: application/json');
if (current_user() === null) { http_response_code(401); echo '{}'; exit; }
echo json_encode(['user' => current_user()]);
