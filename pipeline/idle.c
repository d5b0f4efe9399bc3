/* Idle back-off for polling lcores: spin first, then pause, yield or sleep by policy. */
#include <sched.h>
#include <unistd.h>

#include <rte_pause.h>

#include "app_pvt.h"

void fz_idle(enum fz_idle policy, unsigned *empty_polls)
{
	if (++*empty_polls < (unsigned)fz_app.cfg.idle_spins || policy == FZ_IDLE_SPIN) {
		rte_pause();
		return;
	}
	if (policy == FZ_IDLE_YIELD)
		sched_yield();
	else
		usleep(fz_app.cfg.sleep_us);
}
