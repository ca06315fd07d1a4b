/* The request table and its seed: see lua_request.h. */
#include "lua_request.h"
#include "conn.h"
#include "http.h"

#include <lauxlib.h>
#include <stddef.h>
#include <string.h>

/* Pushes the table of req, from the client at addr (behind a trusted proxy,
 * the client it names) through peer (both as text), on the connection named
 * id. */
static void build(lua_State *L, const mw_http_req_t *req, const char *addr, size_t addr_len,
                  const char *peer, size_t peer_len, const char *id, size_t id_len)
{
    size_t len, qlen;
    const char *path = mw_http_path(req, &len);
    const char *query = mw_http_query(req, &qlen);
    char *tmp;

    lua_createtable(L, 0, 9);
    lua_pushstring(L, http_method_str((enum http_method)req->parser.method));
    lua_setfield(L, -2, "method");
    lua_pushlstring(L, path, len);
    lua_setfield(L, -2, "path");

    tmp = lua_newuserdatauv(L, req->url_len + 2, 0); /* scratch, collected later */
    lua_newtable(L);
    while (query != NULL && qlen > 0) {
        const char *amp = memchr(query, '&', qlen);
        size_t item = amp ? (size_t)(amp - query) : qlen;
        const char *eq = memchr(query, '=', item);
        size_t klen = eq ? (size_t)(eq - query) : item;
        if (klen > 0) {
            lua_pushlstring(L, tmp, mw_http_unescape(query, klen, tmp, 1));
            if (eq != NULL)
                lua_pushlstring(L, tmp, mw_http_unescape(eq + 1, item - klen - 1, tmp, 1));
            else
                lua_pushliteral(L, "");
            lua_rawset(L, -3);
        }
        if (amp == NULL)
            break;
        qlen -= item + 1;
        query = amp + 1;
    }
    lua_setfield(L, -3, "query");
    lua_pop(L, 1);

    lua_createtable(L, 0, (int)req->nheaders);
    for (uint32_t i = 0; i < req->nheaders; i++) {
        const mw_http_header_t *h = &req->headers[i];
        luaL_Buffer b;
        char *name = luaL_buffinitsize(L, &b, h->name_len);
        for (uint32_t j = 0; j < h->name_len; j++) {
            char ch = req->buf[h->name_off + j];
            name[j] = (ch >= 'A' && ch <= 'Z') ? (char)(ch + 32) : ch;
        }
        luaL_pushresultsize(&b, h->name_len);
        lua_pushvalue(L, -1);
        if (lua_rawget(L, -3) == LUA_TSTRING) {
            /* Repeated header: join the values as a list (RFC 9110 5.3). */
            size_t vlen = h->value_len;
            lua_pushliteral(L, ", ");
            lua_pushlstring(L, req->buf + h->value_off, vlen);
            lua_concat(L, 3);
        } else {
            lua_pop(L, 1);
            lua_pushlstring(L, req->buf + h->value_off, h->value_len);
        }
        lua_rawset(L, -3);
    }
    lua_setfield(L, -2, "headers");

    /* req.addr, the client's address (behind a trusted proxy, the client it
     * names); remote_addr is its older name, kept for existing apps. */
    lua_pushlstring(L, addr, addr_len);
    lua_pushvalue(L, -1);
    lua_setfield(L, -3, "addr");
    lua_setfield(L, -2, "remote_addr");
    lua_pushlstring(L, peer, peer_len);
    lua_setfield(L, -2, "peer_addr");

    lua_newtable(L);
    {
        char list[1024];
        size_t n = mw_http_header_join(req, "Sec-WebSocket-Protocol", list, sizeof(list));
        const char *p = list;
        int k = 0;
        while (n > 0) {
            const char *comma = memchr(p, ',', n);
            size_t item = comma ? (size_t)(comma - p) : n, ilen = item;
            const char *s = p;
            while (ilen > 0 && (*s == ' ' || *s == '\t')) {
                s++;
                ilen--;
            }
            while (ilen > 0 && (s[ilen - 1] == ' ' || s[ilen - 1] == '\t'))
                ilen--;
            if (ilen > 0) {
                lua_pushlstring(L, s, ilen);
                lua_rawseti(L, -2, ++k);
            }
            if (comma == NULL)
                break;
            n -= item + 1;
            p = comma + 1;
        }
    }
    lua_setfield(L, -2, "subprotocols");
    lua_pushlstring(L, id, id_len);
    lua_setfield(L, -2, "id");
}

void mw_lua_request_push(lua_State *L, mw_conn_t *c)
{
    char id[MW_ID_MAX], addr[64], peer[64];
    size_t id_len = mw_conn_id(c, id);

    mw_addr_format(&c->addr, addr, sizeof(addr));
    mw_addr_format(&c->hs->peer, peer, sizeof(peer));
    build(L, c->http, addr, strlen(addr), peer, strlen(peer), id, id_len);
}

/* A seed: this, then the client's address as text, the peer's when it is
 * another, and the head as received, packed (below). Kept per idle
 * connection: small. */
typedef struct {
    uint32_t max_head; /* the limit it was read under (http-parser's is process-wide) */
    uint32_t head_len; /* the head's length as received, unpacked */
    uint8_t addr_len;
    uint8_t peer_len;  /* 0: the peer is the client */
    uint8_t packed;    /* the head's common lines are one byte each */
} seed_t;

/* Header lines that WebSocket clients send byte for byte alike (browsers,
 * Python's websockets, Node's ws): a packed head keeps each as one byte,
 * 0x80 + its index, where a line begins. No line of a head that the parser
 * took begins with such a byte (a method and a header name are tokens); a
 * head where one does is kept as it came. At most 127 entries. */
static const char *const common_lines[] = {
    "Upgrade: websocket\r\n",
    "Connection: Upgrade\r\n",
    "Connection: upgrade\r\n",
    "Connection: keep-alive, Upgrade\r\n",
    "Sec-WebSocket-Version: 13\r\n",
    "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n",
    "Pragma: no-cache\r\n",
    "Cache-Control: no-cache\r\n",
    "Accept-Encoding: gzip, deflate, br\r\n",
    "Accept-Encoding: gzip, deflate, br, zstd\r\n",
    "Accept-Language: en-US,en;q=0.9\r\n",
    "Sec-Fetch-Dest: websocket\r\n",
    "Sec-Fetch-Dest: empty\r\n",
    "Sec-Fetch-Mode: websocket\r\n",
    "Sec-Fetch-Site: same-origin\r\n",
    "Sec-Fetch-Site: cross-site\r\n",
};
#define NCOMMON (sizeof(common_lines) / sizeof(common_lines[0]))

/* A request line "GET <target> HTTP/1.1\r\n", every upgrade's, is kept as
 * this byte, the target and "\n". */
#define GET_LINE 0xff
static const char get_head[] = "GET ", get_tail[] = " HTTP/1.1\r\n";

/* True when line (len bytes, with its LF) is a GET of HTTP/1.1. */
static int get_line(const char *line, size_t len)
{
    return len > sizeof(get_head) - 1 + sizeof(get_tail) - 1 &&
           memcmp(line, get_head, sizeof(get_head) - 1) == 0 &&
           memcmp(line + len - (sizeof(get_tail) - 1), get_tail, sizeof(get_tail) - 1) == 0;
}

/* The index of the common line that head[0..len) begins with (whole, with
 * its CRLF), or -1. */
static int common_line(const char *head, size_t len)
{
    for (size_t i = 0; i < NCOMMON; i++) {
        size_t n = strlen(common_lines[i]);
        if (n <= len && head[0] == common_lines[i][0] && memcmp(head, common_lines[i], n) == 0)
            return (int)i;
    }
    return -1;
}

/* Adds head[0..len) to b packed, or as it is when packing does not apply.
 * Returns whether it packed. */
static int add_packed(luaL_Buffer *b, const char *head, size_t len)
{
    size_t off = 0;
    int found = 0;

    while (off < len) {
        const char *nl = memchr(head + off, '\n', len - off);
        size_t line = nl ? (size_t)(nl - (head + off)) + 1 : len - off;
        if ((unsigned char)head[off] >= 0x80)
            found = -1; /* not a head this packing can tell from its tokens */
        else if (found >= 0 && (common_line(head + off, line) >= 0 ||
                                (off == 0 && get_line(head, line))))
            found = 1;
        off += line;
    }
    if (found <= 0) {
        luaL_addlstring(b, head, len);
        return 0;
    }
    for (off = 0; off < len;) {
        const char *nl = memchr(head + off, '\n', len - off);
        size_t line = nl ? (size_t)(nl - (head + off)) + 1 : len - off;
        int k = common_line(head + off, line);
        if (k >= 0) {
            luaL_addchar(b, (char)(0x80 + k));
        } else if (off == 0 && get_line(head, line)) {
            luaL_addchar(b, (char)GET_LINE);
            luaL_addlstring(b, head + sizeof(get_head) - 1,
                            line - (sizeof(get_head) - 1) - (sizeof(get_tail) - 1));
            luaL_addchar(b, '\n');
        } else {
            luaL_addlstring(b, head + off, line);
        }
        off += line;
    }
    return 1;
}

/* Unpacks p[0..len) into out, which holds cap bytes. Returns the bytes
 * written, or (size_t)-1 when they are not a packed head of that length. */
static size_t unpack(const char *p, size_t len, char *out, size_t cap)
{
    size_t off = 0, n = 0;

    while (off < len) {
        unsigned char c = (unsigned char)p[off];
        const char *from;
        size_t take;
        if (c == GET_LINE && off == 0) {
            const char *nl = memchr(p + 1, '\n', len - 1);
            size_t target = nl != NULL ? (size_t)(nl - (p + 1)) : 0;
            size_t need = sizeof(get_head) - 1 + target + sizeof(get_tail) - 1;
            if (nl == NULL || need > cap - n)
                return (size_t)-1;
            memcpy(out + n, get_head, sizeof(get_head) - 1);
            memcpy(out + n + sizeof(get_head) - 1, p + 1, target);
            memcpy(out + n + sizeof(get_head) - 1 + target, get_tail, sizeof(get_tail) - 1);
            n += need;
            off = target + 2;
            continue;
        }
        if (c >= 0x80) {
            if (c - 0x80u >= NCOMMON)
                return (size_t)-1;
            from = common_lines[c - 0x80u];
            take = strlen(from);
            off++;
        } else {
            const char *nl = memchr(p + off, '\n', len - off);
            from = p + off;
            take = nl ? (size_t)(nl - from) + 1 : len - off;
            off += take;
        }
        if (take > cap - n)
            return (size_t)-1;
        memcpy(out + n, from, take);
        n += take;
    }
    return n;
}

void mw_lua_request_push_seed(lua_State *L, mw_conn_t *c)
{
    const mw_http_req_t *req = c->http;
    char addr[64], peer[64];
    seed_t s;
    luaL_Buffer b;
    char *packed;

    mw_addr_format(&c->addr, addr, sizeof(addr));
    mw_addr_format(&c->hs->peer, peer, sizeof(peer));
    memset(&s, 0, sizeof(s)); /* no padding bytes of the stack in the string */
    s.max_head = req->max_head > UINT32_MAX ? UINT32_MAX : (uint32_t)req->max_head;
    s.head_len = (uint32_t)req->len;
    s.addr_len = (uint8_t)strlen(addr);
    s.peer_len = strcmp(addr, peer) == 0 ? 0 : (uint8_t)strlen(peer);
    luaL_buffinitsize(L, &b, sizeof(s) + s.addr_len + s.peer_len + s.head_len);
    luaL_addlstring(&b, (const char *)&s, sizeof(s));
    luaL_addlstring(&b, addr, s.addr_len);
    luaL_addlstring(&b, peer, s.peer_len);
    if (add_packed(&b, req->buf, s.head_len)) {
        packed = luaL_buffaddr(&b) + offsetof(seed_t, packed);
        *packed = 1;
    }
    luaL_pushresult(&b);
}

void mw_lua_request_grow(lua_State *L, int idx, const char *id, size_t id_len)
{
    size_t len, consumed;
    const char *p = lua_tolstring(L, idx, &len);
    const char *addr, *peer, *head;
    mw_http_req_t *req;
    seed_t s;
    size_t stored;
    int r;

    if (p == NULL || len < sizeof(s))
        luaL_error(L, "not a request seed");
    memcpy(&s, p, sizeof(s)); /* a string's bytes need not be aligned for it */
    if (len < sizeof(s) + s.addr_len + s.peer_len)
        luaL_error(L, "not a request seed");
    stored = len - (sizeof(s) + s.addr_len + s.peer_len);
    if (!s.packed && stored != s.head_len)
        luaL_error(L, "not a request seed");
    addr = p + sizeof(s);
    peer = addr + s.addr_len;
    head = peer + s.peer_len;
    /* The parse works in Lua memory (scratch, collected later): nothing leaks
     * when a memory error raises out of here. */
    req = lua_newuserdatauv(L, sizeof(*req), 0);
    mw_http_req_init(req, s.max_head);
    req->buf = lua_newuserdatauv(L, s.head_len > 0 ? s.head_len : 1, 0);
    req->cap = s.head_len; /* room for the whole head: the parser never reallocates */
    if (s.packed) {
        /* Unpacked into a scratch of its own: the parser keeps offsets into
         * the buffer it copies to (req->buf), not into its input. */
        char *full = lua_newuserdatauv(L, s.head_len > 0 ? s.head_len : 1, 0);
        if (unpack(head, stored, full, s.head_len) != s.head_len)
            luaL_error(L, "not a request seed");
        head = full; /* on the stack until the end, like the parser's buffer */
    }
    r = mw_http_feed(req, head, s.head_len, &consumed);
    if (r != 0 || !req->complete)
        luaL_error(L, "the request could not be read again");
    build(L, req, addr, s.addr_len, s.peer_len > 0 ? peer : addr,
          s.peer_len > 0 ? s.peer_len : s.addr_len, id, id_len);
    lua_replace(L, s.packed ? -4 : -3); /* over the scratch */
    lua_pop(L, s.packed ? 2 : 1);
}
