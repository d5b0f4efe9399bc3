/* Self-checking caches on the data path (datapath/verify.c): shadows of early answers, their
 * lookups, and the guard at the last stage. Private to the appliance. */
#ifndef FZ_DP_VERIFY_H
#define FZ_DP_VERIFY_H

#include <stdbool.h>

struct fz_req;
struct fz_cascade_row;
struct fz_cache_result;
struct fz_cache_set;

/* Windows and the shadow ring from the config (before the lcores start): 0 or -1. */
int fz_verify_init(void);
void fz_verify_fini(void);
bool fz_verify_on(void);
/* TX, for each answer it sent: maybe a shadow of it, to stage 1. */
void fz_verify_tx(const struct fz_req *rq);
/* The stages' lookup hook (fz_cascade_run.lookup) while a batch holds shadows. */
void fz_verify_lookup(void *arg, int cache, const struct fz_cascade_row *rows,
		      const struct fz_cache_result *res, unsigned n);
/* The last stage: a shadow's full-model answer scores every point; the shadow is released. */
void fz_verify_done(struct fz_req *rq, int full_label, const struct fz_cache_set *cs);
/* A shadow back to the pool (a failed batch, a full ring). */
void fz_verify_release(struct fz_req *rq);

#endif /* FZ_DP_VERIFY_H */
