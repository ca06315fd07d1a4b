<?php
// The example's settings. run.sh sets the environment; each value that two
// programs must agree on (the JWT secret, audience and issuer, the API key,
// the streams) is named once here for PHP and once in moonwire.conf.lua.

function env(string $name, ?string $default = null): string {
    $v = getenv($name);
    if ($v === false || $v === '') {
        if ($default === null) {
            throw new RuntimeException("$name is not set (start the example with run.sh)");
        }
        return $default;
    }
    return $v;
}

const JWT_AUDIENCE = 'moonwire-chat';          // app.chat.jwt.aud in moonwire.conf.lua
const JWT_ISSUER = 'moonwire-php-example';     // app.chat.jwt.iss
const JWT_LIFETIME = 300;                      // seconds: the page asks for a new token at each connect
const ARCHIVE_STREAM = 'chat:archive';         // app.chat.archive
const ARCHIVE_GROUP = 'archivers';
const QUEUE_STREAM = 'mw:api';                 // moonwire's queue.stream (the default)
const ROOM_PATTERN = '/^[A-Za-z0-9_.-]{1,64}$/';

// The users: a fixed list, each with a password hash (password_hash()).
// The passwords are in README.md; "admin" may use the admin page.
const USERS = [
    'ann'   => ['hash' => '$2y$10$fAmesQwxv3xEIKNHJZ94mecRwDKSgv800omUuE5Xilnz.IPBLA7d2', 'admin' => false], // wonderland
    'bob'   => ['hash' => '$2y$10$Ww9Mv/3mg33d3lM31cpjSuYBLRLEbQjwvrSQRea49xiKLtrOAgeVm', 'admin' => false], // builder
    'carol' => ['hash' => '$2y$10$9zn0vk0lYT4Kmr1uu50ihea8AqYxTZ.xAKwgD4qZh16NzOzz9qji6', 'admin' => false], // carols
    'admin' => ['hash' => '$2y$10$O3O0sh7rOI45uL4nS6btoeHSzNRmNuhr6QLf.mHoWgbHbMgGgFeVK', 'admin' => true],  // admin-secret
];

function jwt_secret(): string { return env('CHAT_JWT_SECRET'); }
function api_url(): string { return env('MW_API_URL'); }          // http://127.0.0.1:PORT of moonwire
function api_key(): string { return env('MW_API_KEY'); }
function ws_port(): string { return env('MW_WS_PORT'); }          // the page connects to ws://HOST:PORT/chat
function redis_host(): string { return env('REDIS_HOST', '127.0.0.1'); }
function redis_port(): int { return (int) env('REDIS_PORT'); }
function archive_db(): string { return env('ARCHIVE_DB'); }       // the SQLite file of the worker
