/* Free lists of blocks by size class. See pool.h. */
#include "pool.h"

#if defined(__has_include)
#if __has_include(<valgrind/memcheck.h>)
#include <valgrind/memcheck.h>
#define MW_HAVE_MEMCHECK_H 1
#endif
#endif

uint8_t mw_pool_bypass;

/* Before main, and when the sim module is loaded: no block is handed out
 * yet, so none has to move between a pool and malloc. Only memcheck answers
 * GET_VBITS (1); other tools, callgrind's instruction counts among them,
 * and a plain run answer 0 and keep the pools. Built without valgrind's
 * header, the pools stay on. */
__attribute__((constructor)) static void pool_check_memcheck(void)
{
#ifdef MW_HAVE_MEMCHECK_H
    unsigned char byte = 0, vbits = 0;
    mw_pool_bypass = VALGRIND_GET_VBITS(&byte, &vbits, 1) == 1;
#endif
}

void mw_pool_drain(mw_pool_t *p)
{
    for (unsigned k = 0; k < p->nclasses; k++)
        while (p->head[k] != NULL)
            free(mw_pool_get(p, k));
}
