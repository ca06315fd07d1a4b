// The reference for bench/apps/fanout.lua: a client joins the room named in
// its query string (/?room=7); every message it sends goes to every other
// member of that room. Usage: node fanout.js PORT
'use strict';
const { WebSocketServer, WebSocket } = require('ws');

const port = Number(process.argv[2] || 8081);
const wss = new WebSocketServer({ host: '127.0.0.1', port, clientTracking: false });
const rooms = new Map(); // room name -> Set of sockets

wss.on('connection', (ws, req) => {
  const name = new URL(req.url, 'http://x').searchParams.get('room') || 'lobby';
  if (!rooms.has(name)) rooms.set(name, new Set());
  const room = rooms.get(name);
  room.add(ws);
  ws.on('message', (data, isBinary) => {
    for (const client of room)
      if (client !== ws && client.readyState === WebSocket.OPEN) client.send(data, { binary: isBinary });
  });
  ws.on('close', () => { room.delete(ws); if (room.size === 0) rooms.delete(name); });
  ws.on('error', () => {});
});
wss.on('listening', () => console.log(`ws fanout listening on 127.0.0.1:${port}`));
