/* libFuzzer harness: a whole connection, from the first HTTP byte through
 * the upgrade, the WebSocket parser and the Lua hooks, on a real server
 * context with an in-memory transport. Half of the inputs are prefixed with a
 * valid upgrade request, so the fuzzer spends its time past the handshake.
 */
#include "conn.h"
#include "node.h"
#include "registry.h"
#include "moonwire/config.h"
#include "moonwire/log.h"
#include "moonwire/server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char app_src[] =
    "local mw = require 'moonwire'\n"
    "local app = {}\n"
    "function app.on_open(conn, req) conn:subscribe('room') end\n"
    "function app.on_message(conn, data, kind)\n"
    "  if data:sub(1, 1) == '!' then mw.publish('room', data, {binary = kind == 'binary'})\n"
    "  elseif data:sub(1, 1) == '#' then conn:close(4000, data:sub(2, 100))\n"
    "  else conn:send(data, kind) end\n"
    "  local v = mw.json.decode(data)\n"
    "  if v ~= nil then mw.json.encode(v) end\n"
    "end\n"
    "return app\n";

static const char handshake[] = "GET /chat?x=1 HTTP/1.1\r\n"
                                "Host: fuzz\r\n"
                                "Sec-WebSocket-Extensions: permessage-deflate\r\n"
                                "Upgrade: websocket\r\n"
                                "Connection: Upgrade\r\n"
                                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                "Sec-WebSocket-Version: 13\r\n\r\n";

typedef struct {
    mw_conn_t c;
    int done;
} fconn_t;

static mw_server_t *srv;
static mw_node_t *node;
static mw_config_t cfg;

static void f_flush(mw_conn_t *c)
{
    mw_frame_t *f;
    while ((f = mw_outq_head(&c->outq)) != NULL)
        mw_conn_on_written(c, f->len);
}

static void f_done(mw_conn_t *c)
{
    ((fconn_t *)c)->done = 1;
}

static void f_pause(mw_conn_t *c, int paused)
{
    (void)c;
    (void)paused;
}

static const mw_transport_t transport = {"fuzz", f_flush, f_done, f_done, f_pause};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char path[] = "/tmp/moonwire-fuzz-app-XXXXXX.lua";
    char err[512];
    int fd = mkstemps(path, 4);

    (void)argc;
    (void)argv;
    if (fd < 0 || write(fd, app_src, sizeof(app_src) - 1) != (ssize_t)(sizeof(app_src) - 1))
        abort();
    close(fd);
    mw_log_configure(MW_LOG_OFF, 0, NULL);
    mw_config_init(&cfg);
    mw_config_set_str(&cfg.script, path);
    cfg.max_message_size = 1 << 20;
    cfg.compression = 1;
    cfg.compression_threshold = 32;
    cfg.time_limit = 100;
    if ((srv = mw_server_new(&cfg, 0, err, sizeof(err))) == NULL) {
        fprintf(stderr, "fuzz_conn: %s\n", err);
        abort();
    }
    node = mw_server_node(srv);
    mw_server_start(srv);
    unlink(path);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fconn_t *fc;
    size_t chunk, off = 2;
    mw_addr_t addr;

    if (size < 2)
        return 0;
    fc = calloc(1, sizeof(*fc));
    memset(&addr, 0, sizeof(addr));
    addr.in4.sin_family = AF_INET;
    if (mw_conn_init(&fc->c, node->conns, &transport, &addr) != 0)
        abort();
    if (data[0] & 1)
        mw_conn_on_read(&fc->c, (const uint8_t *)handshake, sizeof(handshake) - 1);
    chunk = (size_t)data[1] * 13 % 2049 + 1;
    while (off < size && !fc->done) {
        size_t n = size - off < chunk ? size - off : chunk;
        mw_conn_on_read(&fc->c, data + off, n);
        mw_server_run_deferred(srv);
        off += n;
    }
    if (!fc->done)
        mw_conn_on_eof(&fc->c);
    mw_server_run_deferred(srv);
    mw_conn_release(&fc->c);
    mw_server_run_deferred(srv);
    if (node->conns->count != 0 || node->reg->nopen != 0)
        abort(); /* a connection outlived its release */
    free(fc);
    return 0;
}
