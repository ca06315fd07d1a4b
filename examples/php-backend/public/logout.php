<?php
require_once __DIR__ . '/../lib/session.php';
$_SESSION = [];
session_destroy();
header('Location: /index.php');
