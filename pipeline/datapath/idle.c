/* Idle back-off for polling lcores: spin first, then yield or sleep by policy.
 * With more lcores than cores, a loop that only yields still takes its share of a CPU from the
 * stage that has work (measured: a stage ran at a quarter of its speed next to three yielding
 * loops), so "yield" escalates to short sleeps once the loop has been idle for a while. */
#include <sched.h>
#include <unistd.h>

#include <rte_pause.h>

#include "app_pvt.h"

#define YIELDS_BEFORE_SLEEP 16

void fz_idle(enum fz_idle policy, unsigned *empty_polls)
{
	unsigned n = ++*empty_polls;
	unsigned spins = (unsigned)fz_app.cfg.idle_spins;
	if (policy == FZ_IDLE_SPIN || n < spins) {
		rte_pause();
		return;
	}
	if (policy == FZ_IDLE_YIELD && n < spins + YIELDS_BEFORE_SLEEP)
		sched_yield();
	else
		usleep(fz_app.cfg.sleep_us);
}
