/* Free lists of blocks by size class. See pool.h. */
#include "pool.h"

void mw_pool_drain(mw_pool_t *p)
{
    for (unsigned k = 0; k < p->nclasses; k++)
        while (p->head[k] != NULL)
            free(mw_pool_get(p, k));
}
