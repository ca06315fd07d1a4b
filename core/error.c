/* Error code names and messages, generated from MW_ERRNO_MAP. */
#include "moonwire/error.h"

const char *mw_strerror(int err)
{
    switch (err) {
#define XX(name, msg)                                                                              \
    case MW_##name:                                                                                \
        return msg;
        MW_ERRNO_MAP(XX)
#undef XX
    default:
        return "unknown error";
    }
}

const char *mw_err_name(int err)
{
    switch (err) {
#define XX(name, msg)                                                                              \
    case MW_##name:                                                                                \
        return #name;
        MW_ERRNO_MAP(XX)
#undef XX
    default:
        return "UNKNOWN";
    }
}
