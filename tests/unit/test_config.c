/* Unit tests for include/moonwire/config.h: defaults, the Lua configuration
 * file, and the cross-checks of mw_config_validate. */
#include "helpers.h"

#include "moonwire/config.h"
#include "moonwire/error.h"
#include "moonwire/log.h"

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct {
    mw_config_t cfg;
    char path[64]; /* the temporary configuration file */
    char err[512];
} fx_t;

static int setup_cfg(void **state)
{
    fx_t *fx = calloc(1, sizeof(*fx));
    int fd;
    if (fx == NULL || mw_config_init(&fx->cfg) != 0)
        return -1;
    snprintf(fx->path, sizeof(fx->path), "/tmp/mw-config-test-XXXXXX");
    fd = mkstemp(fx->path);
    if (fd < 0)
        return -1;
    close(fd);
    *state = fx;
    return 0;
}

static int teardown_cfg(void **state)
{
    fx_t *fx = *state;
    mw_config_close(&fx->cfg);
    unlink(fx->path);
    free(fx);
    return 0;
}

static void write_file(const fx_t *fx, const char *text)
{
    FILE *f = fopen(fx->path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

/* Writes text to the file and loads it over the defaults. */
static int load(fx_t *fx, const char *text)
{
    mw_config_close(&fx->cfg);
    assert_rc(mw_config_init(&fx->cfg), 0);
    write_file(fx, text);
    fx->err[0] = '\0';
    return mw_config_load(&fx->cfg, fx->path, fx->err, sizeof(fx->err));
}

static void assert_contains(const char *haystack, const char *needle)
{
    if (strstr(haystack, needle) == NULL)
        fail_msg("expected \"%s\" in \"%s\"", needle, haystack);
}

static void assert_list(const mw_strlist_t *l, const char *const *want, size_t n)
{
    assert_int_equal(l->n, n);
    for (size_t i = 0; i < n; i++)
        assert_string_equal(l->items[i], want[i]);
}

#define ASSERT_LIST(l, ...)                                                                        \
    do {                                                                                           \
        const char *const want_[] = {__VA_ARGS__};                                                 \
        assert_list((l), want_, NELEM(want_));                                                     \
    } while (0)

/* ---- defaults ---------------------------------------------------------- */

static void test_config_init_fills_the_defaults(void **state)
{
    fx_t *fx = *state;
    const mw_config_t *c = &fx->cfg;

    assert_null(c->path);
    /* The default address is main's to add, when nothing is said about listening. */
    assert_int_equal(c->listen.n, 0);
    assert_int_equal(c->listen_set, 0);
    assert_string_equal(c->script, "scripts/relay.lua");
    assert_null(c->node_id);
    assert_int_equal(c->log_level, MW_LOG_INFO);
    assert_int_equal(c->log_json, 0);
    assert_null(c->log_file);
    ASSERT_LIST(&c->ws_paths, "/*");
    assert_int_equal(c->subprotocols.n, 0);
    assert_int_equal(c->allowed_origins.n, 0);
    assert_int_equal(c->max_message_size, 16u << 20);
    assert_int_equal(c->max_connections, 100000);
    assert_int_equal(c->max_connections_per_ip, 0);
    assert_int_equal(c->max_head_size, 8192);
    assert_int_equal(c->handshake_timeout, 10000);
    assert_int_equal(c->idle_timeout, 60000);
    assert_int_equal(c->ping_timeout, 15000);
    assert_int_equal(c->close_timeout, 3000);
    assert_int_equal(c->shutdown_timeout, 5000);
    assert_int_equal(c->max_buffered, 1u << 20);
    assert_int_equal(c->backpressure, MW_BP_CLOSE);
    assert_int_equal(c->backpressure_timeout, 2000);
    assert_int_equal(c->time_limit, 200);
    assert_int_equal(c->memory_limit, 256u << 20);
    assert_int_equal(c->healthz, 1);
    assert_null(c->L);
}

static void test_config_defaults_pass_validation(void **state)
{
    fx_t *fx = *state;
    assert_rc(mw_config_validate(&fx->cfg, fx->err, sizeof(fx->err)), 0);
}

/* ---- loading a file ---------------------------------------------------- */

static const char every_section[] =
    "-- every key the server knows\n"
    "return {\n"
    "  listen = { '0.0.0.0:9000', '[::1]:9001' },\n"
    "  script = 'scripts/chat.lua',\n"
    "  node_id = 'node-7',\n"
    "  log = { level = 'debug', json = true, file = '/tmp/mw.log' },\n"
    "  websocket = {\n"
    "    paths = { '/chat', '/echo' },\n"
    "    subprotocols = 'chat.v1',\n"
    "    allowed_origins = { 'https://a.example', 'https://b.example' },\n"
    "    max_message_size = 65536,\n"
    "  },\n"
    "  limits = {\n"
    "    max_connections = 5000, max_connections_per_ip = 20, max_head_size = 4096,\n"
    "    handshake_timeout = 2.5, idle_timeout = 30, ping_timeout = 5,\n"
    "    close_timeout = 1, shutdown_timeout = 10,\n"
    "    max_buffered = 262144, backpressure = 'drop', backpressure_timeout = 0.5,\n"
    "  },\n"
    "  lua = { time_limit = 0.05, memory_limit = 64 * 1024 * 1024 },\n"
    "  http = { healthz = false },\n"
    "  app = { greeting = 'hi', rooms = { 'lobby', 'dev' }, limits = { per_room = 50 } },\n"
    "}\n";

static void test_config_load_applies_every_section(void **state)
{
    fx_t *fx = *state;
    const mw_config_t *c = &fx->cfg;

    assert_rc(load(fx, every_section), 0);
    assert_string_equal(c->path, fx->path);
    ASSERT_LIST(&c->listen, "0.0.0.0:9000", "[::1]:9001");
    assert_string_equal(c->script, "scripts/chat.lua");
    assert_string_equal(c->node_id, "node-7");
    assert_int_equal(c->log_level, MW_LOG_DEBUG);
    assert_int_equal(c->log_json, 1);
    assert_string_equal(c->log_file, "/tmp/mw.log");
    ASSERT_LIST(&c->ws_paths, "/chat", "/echo");
    ASSERT_LIST(&c->subprotocols, "chat.v1");
    ASSERT_LIST(&c->allowed_origins, "https://a.example", "https://b.example");
    assert_int_equal(c->max_message_size, 65536);
    assert_int_equal(c->max_connections, 5000);
    assert_int_equal(c->max_connections_per_ip, 20);
    assert_int_equal(c->max_head_size, 4096);
    /* Times are seconds in the file and milliseconds in the struct. */
    assert_int_equal(c->handshake_timeout, 2500);
    assert_int_equal(c->idle_timeout, 30000);
    assert_int_equal(c->ping_timeout, 5000);
    assert_int_equal(c->close_timeout, 1000);
    assert_int_equal(c->shutdown_timeout, 10000);
    assert_int_equal(c->max_buffered, 262144);
    assert_int_equal(c->backpressure, MW_BP_DROP);
    assert_int_equal(c->backpressure_timeout, 500);
    assert_int_equal(c->time_limit, 50);
    assert_int_equal(c->memory_limit, 64u << 20);
    assert_int_equal(c->healthz, 0);
    assert_rc(mw_config_validate(c, fx->err, sizeof(fx->err)), 0);
}

static int push_config(lua_State *L)
{
    const mw_config_t *cfg = lua_touserdata(L, 1);
    mw_config_push(cfg, L);
    return 1;
}

/* Evaluates a Lua expression over the pushed configuration table `c`; returns it as a string. */
static void assert_pushed(lua_State *L, const char *expr, const char *want)
{
    char code[256];
    snprintf(code, sizeof(code), "local c = ...; return tostring(%s)", expr);
    assert_int_equal(luaL_loadstring(L, code), LUA_OK);
    lua_pushvalue(L, 1);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK)
        fail_msg("%s: %s", expr, lua_tostring(L, -1));
    if (strcmp(lua_tostring(L, -1), want) != 0)
        fail_msg("%s: expected %s, got %s", expr, want, lua_tostring(L, -1));
    lua_pop(L, 1);
}

static void test_config_push_gives_lua_the_keys_as_the_file_spells_them(void **state)
{
    fx_t *fx = *state;
    lua_State *L;

    assert_rc(load(fx, every_section), 0);
    L = luaL_newstate();
    assert_non_null(L);
    luaL_openlibs(L);
    lua_pushcfunction(L, push_config);
    lua_pushlightuserdata(L, &fx->cfg);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        lua_close(L);
        fail_msg("mw_config_push raised");
    }
    assert_pushed(L, "c.listen[2]", "[::1]:9001");
    assert_pushed(L, "c.node_id", "node-7");
    assert_pushed(L, "c.log.level", "debug");
    assert_pushed(L, "c.log.json", "true");
    assert_pushed(L, "c.websocket.paths[1]", "/chat");
    assert_pushed(L, "c.websocket.max_message_size", "65536");
    assert_pushed(L, "c.limits.idle_timeout", "30"); /* whole seconds are integers */
    assert_pushed(L, "c.limits.handshake_timeout", "2.5");
    assert_pushed(L, "c.limits.backpressure", "drop");
    assert_pushed(L, "c.http.healthz", "false");
    assert_pushed(L, "c.app.greeting", "hi");
    assert_pushed(L, "c.app.rooms[2]", "dev");
    assert_pushed(L, "c.app.limits.per_room", "50");
    lua_close(L);
}

static void test_config_load_keeps_defaults_for_keys_it_does_not_set(void **state)
{
    fx_t *fx = *state;
    const mw_config_t *c = &fx->cfg;

    assert_rc(load(fx, "return { limits = { idle_timeout = 120 } }\n"), 0);
    assert_int_equal(c->idle_timeout, 120000);
    assert_int_equal(c->ping_timeout, 15000);
    assert_int_equal(c->max_connections, 100000);
    assert_int_equal(c->listen.n, 0);
    assert_string_equal(c->script, "scripts/relay.lua");
    assert_int_equal(c->healthz, 1);

    assert_rc(load(fx, "return {}\n"), 0);
    assert_int_equal(c->idle_timeout, 60000);
}

static void test_config_load_replaces_a_list_rather_than_appending(void **state)
{
    fx_t *fx = *state;

    assert_rc(load(fx, "return { listen = '0.0.0.0:80', websocket = { paths = {} } }\n"), 0);
    ASSERT_LIST(&fx->cfg.listen, "0.0.0.0:80");
    assert_int_equal(fx->cfg.ws_paths.n, 0);
}

static void test_config_load_runs_lua_with_a_small_environment(void **state)
{
    fx_t *fx = *state;

    setenv("MW_TEST_PORT", "9123", 1);
    assert_rc(load(fx, "local port = tonumber(os.getenv('MW_TEST_PORT')) + 1\n"
                       "return { listen = string.format('127.0.0.1:%d', port),\n"
                       "         limits = { max_connections = math.floor(10.7) } }\n"),
              0);
    ASSERT_LIST(&fx->cfg.listen, "127.0.0.1:9124");
    assert_int_equal(fx->cfg.max_connections, 10);
    unsetenv("MW_TEST_PORT");
}

static void test_config_load_gives_the_file_no_io_and_no_require(void **state)
{
    fx_t *fx = *state;

    assert_rc(load(fx, "io.open('/tmp/x', 'w')\nreturn {}\n"), MW_ECONFIG);
    assert_contains(fx->err, fx->path);
    assert_rc(load(fx, "require 'os'\nreturn {}\n"), MW_ECONFIG);
    assert_rc(load(fx, "os.execute('true')\nreturn {}\n"), MW_ECONFIG);
    assert_rc(load(fx, "load('return 1')\nreturn {}\n"), MW_ECONFIG);
}

/* ---- errors ------------------------------------------------------------ */

static void test_config_load_refuses_an_unknown_key_naming_section_and_key(void **state)
{
    fx_t *fx = *state;

    assert_rc(load(fx, "return { limits = { max_conections = 10 } }\n"), MW_ECONFIG);
    assert_contains(fx->err, "limits.max_conections");
    assert_contains(fx->err, fx->path);

    assert_rc(load(fx, "return { log = { colour = true } }\n"), MW_ECONFIG);
    assert_contains(fx->err, "log.colour");

    assert_rc(load(fx, "return { websocket = { max_frame_size = 10 } }\n"), MW_ECONFIG);
    assert_contains(fx->err, "websocket.max_frame_size");

    /* A key of another section is not a key of this one. */
    assert_rc(load(fx, "return { lua = { idle_timeout = 10 } }\n"), MW_ECONFIG);
    assert_contains(fx->err, "lua.idle_timeout");
}

static void test_config_load_refuses_an_unknown_top_level_key(void **state)
{
    fx_t *fx = *state;

    assert_rc(load(fx, "return { lisen = '0.0.0.0:80' }\n"), MW_ECONFIG);
    assert_contains(fx->err, "'lisen'");
    assert_rc(load(fx, "return { max_connections = 10 }\n"), MW_ECONFIG);
    assert_contains(fx->err, "max_connections");
    assert_rc(load(fx, "return { websockets = {} }\n"), MW_ECONFIG);
    assert_contains(fx->err, "websockets");
}

static void test_config_load_refuses_wrong_types_naming_the_key(void **state)
{
    fx_t *fx = *state;
    static const struct {
        const char *file;
        const char *key;
    } cases[] = {
        {"return { listen = 8080 }", "'listen'"},
        {"return { listen = { '0.0.0.0:1', 2 } }", "'listen'"},
        {"return { script = true }", "'script'"},
        {"return { node_id = 7 }", "'node_id'"},
        {"return { log = { level = 'loud' } }", "'log.level'"},
        {"return { log = { level = 1 } }", "'log.level'"},
        {"return { log = { json = 'yes' } }", "'log.json'"},
        {"return { log = { file = {} } }", "'log.file'"},
        {"return { websocket = { paths = { '/a', 5 } } }", "'websocket.paths'"},
        {"return { websocket = { subprotocols = true } }", "'websocket.subprotocols'"},
        {"return { websocket = { max_message_size = 'big' } }", "'websocket.max_message_size'"},
        {"return { websocket = { max_message_size = 1.5 } }", "'websocket.max_message_size'"},
        {"return { limits = { max_connections = -1 } }", "'limits.max_connections'"},
        {"return { limits = { max_connections = 1.5 } }", "'limits.max_connections'"},
        {"return { limits = { max_connections = 2^32 } }", "'limits.max_connections'"},
        {"return { limits = { max_head_size = '8192' } }", "'limits.max_head_size'"},
        {"return { limits = { idle_timeout = '30s' } }", "'limits.idle_timeout'"},
        {"return { limits = { idle_timeout = -1 } }", "'limits.idle_timeout'"},
        {"return { limits = { idle_timeout = 1e10 } }", "'limits.idle_timeout'"},
        {"return { limits = { backpressure = 'maybe' } }", "'limits.backpressure'"},
        {"return { limits = { backpressure = 1 } }", "'limits.backpressure'"},
        {"return { lua = { time_limit = 0/0 } }", "'lua.time_limit'"},
        {"return { lua = { memory_limit = true } }", "'lua.memory_limit'"},
        {"return { http = { healthz = 1 } }", "'http.healthz'"},
        {"return { limits = 5 }", "'limits'"},
        {"return { app = 'x' }", "'app'"},
        {"return { app = { f = function() end } }", "'app'"},
    };

    for (size_t i = 0; i < NELEM(cases); i++) {
        int r = load(fx, cases[i].file);
        if (r != MW_ECONFIG)
            fail_msg("%s: expected MW_ECONFIG, got %d", cases[i].file, r);
        if (strstr(fx->err, cases[i].key) == NULL)
            fail_msg("%s: the error \"%s\" does not name %s", cases[i].file, fx->err, cases[i].key);
    }
}

static void test_config_load_reports_lua_errors_with_the_file(void **state)
{
    fx_t *fx = *state;

    assert_rc(load(fx, "return { listen = \n"), MW_ECONFIG); /* syntax */
    assert_contains(fx->err, fx->path);
    assert_rc(load(fx, "error('nope')\n"), MW_ECONFIG); /* runtime */
    assert_contains(fx->err, "nope");
    assert_rc(load(fx, "return 42\n"), MW_ECONFIG); /* not a table */
    assert_contains(fx->err, fx->path);
    assert_rc(load(fx, "local x = 1\n"), MW_ECONFIG); /* returns nothing */
}

static void test_config_load_reports_a_missing_file(void **state)
{
    fx_t *fx = *state;

    assert_rc(mw_config_load(&fx->cfg, "/nonexistent/moonwire.lua", fx->err, sizeof(fx->err)),
              MW_ECONFIG);
    assert_contains(fx->err, "/nonexistent/moonwire.lua");
}

/* ---- command-line helpers ---------------------------------------------- */

static void test_config_set_str_and_list_add_replace_and_append(void **state)
{
    fx_t *fx = *state;

    assert_rc(mw_config_set_str(&fx->cfg.script, "other.lua"), 0);
    assert_string_equal(fx->cfg.script, "other.lua");
    assert_rc(mw_config_set_str(&fx->cfg.node_id, NULL), 0);
    assert_null(fx->cfg.node_id);
    assert_rc(mw_config_list_add(&fx->cfg.listen, "0.0.0.0:1"), 0);
    ASSERT_LIST(&fx->cfg.listen, "0.0.0.0:1");
    mw_config_list_clear(&fx->cfg.listen);
    assert_int_equal(fx->cfg.listen.n, 0);
    assert_null(fx->cfg.listen.items);
}

/* ---- mw_config_validate ------------------------------------------------ */

static void expect_invalid(fx_t *fx, const char *names)
{
    fx->err[0] = '\0';
    assert_rc(mw_config_validate(&fx->cfg, fx->err, sizeof(fx->err)), MW_ECONFIG);
    assert_contains(fx->err, names);
}

static void test_config_validate_checks_the_listen_addresses(void **state)
{
    fx_t *fx = *state;
    assert_rc(mw_config_list_add(&fx->cfg.listen, "127.0.0.1:8080"), 0);
    assert_rc(mw_config_list_add(&fx->cfg.listen, "[::1]:9000"), 0);
    assert_rc(mw_config_list_add(&fx->cfg.listen, ":80"), 0);
    assert_rc(mw_config_list_add(&fx->cfg.listen, "localhost:80"), 0);
    assert_rc(mw_config_validate(&fx->cfg, fx->err, sizeof(fx->err)), 0);
    assert_rc(mw_config_list_add(&fx->cfg.listen, "local host:80"), 0);
    expect_invalid(fx, "'listen' entry 'local host:80'");
    mw_config_list_clear(&fx->cfg.listen);
    assert_rc(mw_config_list_add(&fx->cfg.tls_listen, "1.2.3.4:99999"), 0);
    expect_invalid(fx, "tls.listen");
}

static void test_config_check_addr_takes_literals_and_host_names_by_their_form(void **state)
{
    static const char *const good[] = {
        "127.0.0.1:8080", "[::1]:9000",           ":80",      "0.0.0.0:0",
        "localhost:8080", "chat.example.org:443", "a-b.c9:1", "xn--bcher-kva.example:80",
    };
    static const char *const bad[] = {
        "localhost",
        "localhost:",
        "localhost:65536",
        "localhost:-1",
        "localhost:+80",
        "localhost: 80",
        "local host:80",
        "1.2.3:80",
        "256.1.1.1:80",
        "-a.example:80",
        "a-.example:80",
        "a..example:80",
        ".example:80",
        "[localhost]:80",
        "[::1:80",
        "host_name:80",
        ":x",
    };
    (void)state;
    for (size_t i = 0; i < NELEM(good); i++)
        if (mw_config_check_addr(good[i]) != 0)
            fail_msg("refused: %s", good[i]);
    for (size_t i = 0; i < NELEM(bad); i++)
        if (mw_config_check_addr(bad[i]) != MW_EINVAL)
            fail_msg("accepted: %s", bad[i]);
}

static void test_config_parse_addr_resolves_a_host_name_to_one_address(void **state)
{
    struct sockaddr_storage addr;
    char err[300] = "";
    (void)state;
    /* localhost is in /etc/hosts: no DNS needed. */
    assert_rc(mw_config_parse_addr("localhost:8080", &addr, err, sizeof(err)), 0);
    if (addr.ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)&addr;
        assert_int_equal(ntohs(in->sin_port), 8080);
        assert_int_equal(ntohl(in->sin_addr.s_addr), 0x7f000001);
    } else {
        assert_int_equal(addr.ss_family, AF_INET6);
        assert_int_equal(ntohs(((const struct sockaddr_in6 *)&addr)->sin6_port), 8080);
    }
    assert_rc(mw_config_parse_addr("[::1]:9", &addr, err, sizeof(err)), 0);
    assert_int_equal(addr.ss_family, AF_INET6);
    assert_rc(mw_config_parse_addr("1.2.3:80", &addr, err, sizeof(err)), MW_EINVAL);
    assert_contains(err, "'1.2.3:80' is not HOST:PORT");
}

static void test_config_validate_needs_a_script(void **state)
{
    fx_t *fx = *state;
    assert_rc(mw_config_set_str(&fx->cfg.script, ""), 0);
    expect_invalid(fx, "script");
    assert_rc(mw_config_set_str(&fx->cfg.script, NULL), 0);
    expect_invalid(fx, "script");
}

static void test_config_validate_checks_the_node_id(void **state)
{
    fx_t *fx = *state;
    static const char *bad[] = {"", "has space", "dot.ted", "slash/",
                                "123456789012345678901234567890123"};

    for (size_t i = 0; i < NELEM(bad); i++) {
        assert_rc(mw_config_set_str(&fx->cfg.node_id, bad[i]), 0);
        expect_invalid(fx, "node_id");
    }
    assert_rc(mw_config_set_str(&fx->cfg.node_id, "Node_7-a"), 0);
    assert_rc(mw_config_validate(&fx->cfg, fx->err, sizeof(fx->err)), 0);
    assert_rc(mw_config_set_str(&fx->cfg.node_id, "12345678901234567890123456789012"), 0);
    assert_rc(mw_config_validate(&fx->cfg, fx->err, sizeof(fx->err)), 0);
}

static void test_config_validate_needs_websocket_paths_to_start_with_a_slash(void **state)
{
    fx_t *fx = *state;
    assert_rc(mw_config_list_add(&fx->cfg.ws_paths, "chat"), 0);
    expect_invalid(fx, "websocket.paths");
    assert_contains(fx->err, "chat");
}

/* cluster.redis: one URL as a string, shards as a list; an empty list is
 * refused at load, too many or a URL twice by the check; Lua reads one back
 * as the string it was. */
static void test_config_cluster_redis_takes_one_url_or_a_list_of_shards(void **state)
{
    fx_t *fx = *state;
    lua_State *L;

    assert_rc(load(fx, "return { cluster = { redis = 'redis://a:1' } }\n"), 0);
    ASSERT_LIST(&fx->cfg.cluster_redis, "redis://a:1");
    assert_true(mw_config_clustered(&fx->cfg));
    assert_rc(load(fx, "return { cluster = { redis = { 'redis://a:1', 'redis://b:2' } } }\n"), 0);
    ASSERT_LIST(&fx->cfg.cluster_redis, "redis://a:1", "redis://b:2");
    assert_rc(mw_config_validate(&fx->cfg, fx->err, sizeof(fx->err)), 0);
    L = luaL_newstate();
    assert_non_null(L);
    luaL_openlibs(L);
    lua_pushcfunction(L, push_config);
    lua_pushlightuserdata(L, &fx->cfg);
    assert_int_equal(lua_pcall(L, 1, 1, 0), LUA_OK);
    assert_pushed(L, "c.cluster.redis[2]", "redis://b:2");
    lua_close(L);

    assert_rc(load(fx, "return { cluster = { redis = {} } }\n"), MW_ECONFIG);
    assert_non_null(strstr(fx->err, "not an empty list"));
    assert_rc(load(fx, "return { cluster = { redis = { 'redis://a:1', 2 } } }\n"), MW_ECONFIG);
    assert_non_null(strstr(fx->err, "cluster.redis"));
    assert_rc(load(fx, "return { cluster = { redis = { 'redis://a:1', 'redis://a:1' } } }\n"),
              0);
    expect_invalid(fx, "cluster.redis");
    mw_config_list_clear(&fx->cfg.cluster_redis);
    for (int i = 0; i < 17; i++) {
        char url[32];
        snprintf(url, sizeof(url), "redis://h%d:6379", i);
        assert_rc(mw_config_list_add(&fx->cfg.cluster_redis, url), 0);
    }
    expect_invalid(fx, "cluster.redis");
    mw_config_list_clear(&fx->cfg.cluster_redis);
    assert_false(mw_config_clustered(&fx->cfg));
}

static void test_config_validate_checks_max_message_size(void **state)
{
    fx_t *fx = *state;
    fx->cfg.max_message_size = 0;
    expect_invalid(fx, "websocket.max_message_size");
    fx->cfg.max_message_size = (size_t)UINT32_MAX;
    expect_invalid(fx, "websocket.max_message_size");
    fx->cfg.max_message_size = 1;
    assert_rc(mw_config_validate(&fx->cfg, fx->err, sizeof(fx->err)), 0);
}

static void test_config_validate_checks_max_head_size(void **state)
{
    fx_t *fx = *state;
    fx->cfg.max_head_size = 255;
    expect_invalid(fx, "limits.max_head_size");
    fx->cfg.max_head_size = 256;
    assert_rc(mw_config_validate(&fx->cfg, fx->err, sizeof(fx->err)), 0);
}

static void test_config_bounds_topics_and_history_by_default_and_refuses_no_bound(void **state)
{
    fx_t *fx = *state;

    assert_int_equal(fx->cfg.max_topics, 100000);
    assert_int_equal(fx->cfg.max_subscriptions, 1000);
    assert_int_equal(fx->cfg.history_max_topics, 100000);
    assert_int_equal(fx->cfg.history_max_bytes, 64u << 20);
    assert_rc(load(fx, "return { limits = { max_topics = 5, max_subscriptions = 2 },"
                       " history = { max_topics = 7, max_bytes = 65536 } }"),
              0);
    assert_int_equal(fx->cfg.max_topics, 5);
    assert_int_equal(fx->cfg.max_subscriptions, 2);
    assert_int_equal(fx->cfg.history_max_topics, 7);
    assert_int_equal(fx->cfg.history_max_bytes, 65536);
    assert_rc(mw_config_validate(&fx->cfg, fx->err, sizeof(fx->err)), 0);
    fx->cfg.max_topics = 0;
    expect_invalid(fx, "limits.max_topics");
    fx->cfg.max_topics = 1;
    fx->cfg.max_subscriptions = 0;
    expect_invalid(fx, "limits.max_subscriptions");
    fx->cfg.max_subscriptions = 1;
    fx->cfg.history_max_topics = 0;
    expect_invalid(fx, "history.max_topics");
    fx->cfg.history_max_topics = 1;
    fx->cfg.history_max_bytes = 65535;
    expect_invalid(fx, "history.max_bytes");
}

static void test_config_keepalive_and_streaming_keys_have_defaults_and_bounds(void **state)
{
    fx_t *fx = *state;
    assert_int_equal(fx->cfg.keepalive_timeout, 15000);
    assert_int_equal(fx->cfg.keepalive_requests, 1000);
    assert_int_equal(fx->cfg.static_max_cached_file, 1u << 20);
    assert_int_equal(fx->cfg.static_max_open_files, 256);
    assert_rc(load(fx, "return { http = { keepalive_timeout = 0.5, keepalive_requests = 3 },"
                       " static = { max_cached_file = 4096, max_open_files = 8 } }"),
              0);
    assert_int_equal(fx->cfg.keepalive_timeout, 500);
    assert_int_equal(fx->cfg.keepalive_requests, 3);
    assert_int_equal(fx->cfg.static_max_cached_file, 4096);
    assert_int_equal(fx->cfg.static_max_open_files, 8);
    fx->cfg.keepalive_requests = 0;
    expect_invalid(fx, "http.keepalive_requests");
    fx->cfg.keepalive_requests = 1;
    fx->cfg.static_max_open_files = 0;
    expect_invalid(fx, "static.max_open_files");
    fx->cfg.static_max_open_files = 1;
    fx->cfg.keepalive_timeout = 0; /* keep-alive off is a valid choice */
    assert_rc(mw_config_validate(&fx->cfg, fx->err, sizeof(fx->err)), 0);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup_cfg, teardown_cfg)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_config_init_fills_the_defaults),
        T(test_config_defaults_pass_validation),
        T(test_config_load_applies_every_section),
        T(test_config_push_gives_lua_the_keys_as_the_file_spells_them),
        T(test_config_load_keeps_defaults_for_keys_it_does_not_set),
        T(test_config_load_replaces_a_list_rather_than_appending),
        T(test_config_cluster_redis_takes_one_url_or_a_list_of_shards),
        T(test_config_load_runs_lua_with_a_small_environment),
        T(test_config_load_gives_the_file_no_io_and_no_require),
        T(test_config_load_refuses_an_unknown_key_naming_section_and_key),
        T(test_config_load_refuses_an_unknown_top_level_key),
        T(test_config_load_refuses_wrong_types_naming_the_key),
        T(test_config_load_reports_lua_errors_with_the_file),
        T(test_config_load_reports_a_missing_file),
        T(test_config_set_str_and_list_add_replace_and_append),
        T(test_config_validate_checks_the_listen_addresses),
        T(test_config_check_addr_takes_literals_and_host_names_by_their_form),
        T(test_config_parse_addr_resolves_a_host_name_to_one_address),
        T(test_config_validate_needs_a_script),
        T(test_config_validate_checks_the_node_id),
        T(test_config_validate_needs_websocket_paths_to_start_with_a_slash),
        T(test_config_validate_checks_max_message_size),
        T(test_config_bounds_topics_and_history_by_default_and_refuses_no_bound),
        T(test_config_validate_checks_max_head_size),
        T(test_config_keepalive_and_streaming_keys_have_defaults_and_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
