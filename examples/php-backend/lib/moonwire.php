<?php
// The two ways in from PHP: moonwire's HTTP API (php-curl) and its queue, a
// Redis stream (php-redis). docs/backend.md shows these functions.

// POST /api/METHOD with the API key; the result, or a RuntimeException with
// moonwire's message (or curl's).
function moonwire(string $method, array $params): array {
    $ch = curl_init(api_url() . "/api/$method");
    curl_setopt_array($ch, [
        CURLOPT_POST => true,
        CURLOPT_POSTFIELDS => json_encode($params),
        CURLOPT_HTTPHEADER => ['X-API-Key: ' . api_key(), 'Content-Type: application/json'],
        CURLOPT_RETURNTRANSFER => true,
        CURLOPT_TIMEOUT => 5,
    ]);
    $body = curl_exec($ch);
    if ($body === false) {
        $err = curl_error($ch);
        curl_close($ch);
        throw new RuntimeException("moonwire unreachable: $err");
    }
    curl_close($ch);
    $answer = json_decode($body, true);
    if (!is_array($answer)) {
        throw new RuntimeException("moonwire answered something that is not JSON");
    }
    if (isset($answer['error'])) {
        throw new RuntimeException($answer['error']['message'], $answer['error']['code']);
    }
    return $answer['result'];
}

function redis_connect(): Redis {
    $redis = new Redis();
    $redis->connect(redis_host(), redis_port(), 2.0);
    return $redis;
}

// One entry of moonwire's queue: the method and params the HTTP API takes.
// Returns the entry's id; a node applies it once.
function moonwire_queue(Redis $redis, string $method, array $params): string {
    return $redis->xAdd(QUEUE_STREAM, '*', [
        'method' => $method,
        'params' => json_encode($params),
    ], 100000, true);   // MAXLEN ~ 100000
}

// What a room shows as an announcement: published to its topic, so every
// member on every node gets it, numbered in the room's history.
function announcement(string $room, string $from, string $text, string $via): string {
    return json_encode(['type' => 'announcement', 'room' => $room, 'from' => $from,
                        'text' => $text, 'via' => $via, 'time' => time()]);
}
