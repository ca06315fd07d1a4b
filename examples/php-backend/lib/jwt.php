<?php
// An HS256 JSON Web Token without a library: what moonwire's app.chat.jwt
// (moonwire.jwt.verify) checks. docs/backend.md shows this function.

function b64url(string $s): string { return rtrim(strtr(base64_encode($s), '+/', '-_'), '='); }

function jwt_sign(array $claims, string $secret): string {
    $head = b64url(json_encode(['alg' => 'HS256', 'typ' => 'JWT']));
    $body = b64url(json_encode($claims));
    return "$head.$body." . b64url(hash_hmac('sha256', "$head.$body", $secret, true));
}

// The token of a logged-in user: sub and name are the user, for JWT_LIFETIME seconds.
function chat_token(string $user): string {
    $now = time();
    return jwt_sign(['sub' => $user, 'name' => $user, 'aud' => JWT_AUDIENCE, 'iss' => JWT_ISSUER,
                     'iat' => $now, 'exp' => $now + JWT_LIFETIME], jwt_secret());
}
