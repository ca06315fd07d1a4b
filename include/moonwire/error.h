/* Error codes shared by every part of the core.
 *
 * Functions return 0 or a negative MW_E* code. MW_EAGAIN means "not yet"
 * and is not a failure. The map below is the only place a code is defined.
 */
#ifndef MOONWIRE_ERROR_H
#define MOONWIRE_ERROR_H

#define MW_ERRNO_MAP(XX)                                                                           \
    XX(EAGAIN, "not yet")                                                                          \
    XX(ENOMEM, "out of memory")                                                                    \
    XX(EINVAL, "invalid argument")                                                                 \
    XX(ECLOSED, "connection closed")                                                               \
    XX(EBACKPRESSURE, "write queue full")                                                          \
    XX(ECANCELED, "operation canceled")                                                            \
    XX(EPROTO, "protocol error")                                                                   \
    XX(ETOOBIG, "message too big")                                                                 \
    XX(EUTF8, "invalid UTF-8")                                                                     \
    XX(ECONFIG, "bad configuration")                                                               \
    XX(ELUA, "Lua error")                                                                          \
    XX(EIO, "input/output error")                                                                  \
    XX(ENOTFOUND, "not found")                                                                     \
    XX(EEXIST, "already exists")                                                                   \
    XX(ELIMIT, "limit reached")                                                                    \
    XX(ETOPICS, "too many topics")                                                                 \
    XX(ESUBS, "too many subscriptions")                                                            \
    XX(EHISTTOPICS, "too many history topics")                                                     \
    XX(EHISTSIZE, "too large for history")

enum {
    MW__EBASE = -4000,
#define XX(name, msg) MW_##name,
    MW_ERRNO_MAP(XX)
#undef XX
        MW__ELAST
};

/* Returns a static description of a MW_E* code, or "unknown error". */
const char *mw_strerror(int err);

/* Returns the code's name without the MW_ prefix ("ECLOSED"), or "UNKNOWN". */
const char *mw_err_name(int err);

#endif
