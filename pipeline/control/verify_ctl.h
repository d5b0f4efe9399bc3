/* Self-checking's decisions on the control thread (control/verify_ctl.c): the self-check
 * context fed with the samples the last stage scored, its decisions published to the data path
 * (a point's gate, the front tiers' off-bits), logged and counted. Private to the appliance. */
#ifndef FZ_CTL_VERIFY_H
#define FZ_CTL_VERIFY_H

#include <stdint.h>

#include "fz_selfcheck.h"

/* The context from the `verify:` config (after the caches are loaded): 0, -ENOMEM, -EINVAL. */
int fz_verify_ctl_init(void);
void fz_verify_ctl_fini(void);
/* Control thread (and once more after the lcores stopped): follow the current snapshot, take
 * every sample waiting, decide, publish. Must run before a reload and before retired sets are
 * reclaimed in the same round (see verify_ctl.c on the snapshot tag). */
void fz_verify_ctl_poll(void);

/* Telemetry: a point's (index in the set) or a tier's state; -EINVAL out of range or off. */
int fz_verify_ctl_view(enum fz_selfcheck_kind kind, int index, struct fz_selfcheck_view *v);
/* Samples dropped because a reload replaced the snapshot they were scored against. */
uint64_t fz_verify_ctl_stale(void);

#endif /* FZ_CTL_VERIFY_H */
