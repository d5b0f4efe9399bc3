/* The appliance's control: start-up, configuration, cache reloads and telemetry, apart from the
 * data-path lcores (they only read what control publishes and pass quiescent points). */
#ifndef FZ_CONTROL_H
#define FZ_CONTROL_H

#include <stddef.h>
#include <stdio.h>

/* The appliance: freeze [EAL options] -- [app options]. Returns an exit code. */
int fz_appliance_main(int argc, char **argv);

/* Load the snapshot for the running model (refused whole if it belongs to another model or its
 * caches cannot read the taps' layouts) and set up RCU for reloads. 0 or -errno + message. */
int fz_app_caches_load(const char *path, char *err, size_t errlen);
/* After every stage lcore has stopped: free the running set and any retired ones. */
void fz_app_caches_free(void);
/* Telemetry reading the current set's caches: no retired set is freed meanwhile. */
void fz_app_caches_read_lock(void);
void fz_app_caches_read_unlock(void);

/*
 * Hot reload (control thread, on SIGHUP or /freeze/reload): read cfg.cache_path again, refuse
 * it whole when it is bad or its cache layers / key sizes differ from the running ones (the old
 * set stays), else swap it in with one atomic store; the old set goes to DPDK's RCU defer queue
 * and is freed once every stage has been quiescent. Returns 0 or -errno with a message in err.
 */
int fz_app_caches_reload(char *err, size_t errlen);

/* The control thread (a plain pthread, not an lcore): serves reload requests and reclaims
 * retired sets. Start once the caches are loaded; stop after the lcores have returned. */
int fz_control_start(void);
void fz_control_stop(void);

/* Telemetry (/freeze/...) and the summary printed at exit. */
int fz_app_telemetry_init(void);
void fz_app_summary(FILE *f);

#endif /* FZ_CONTROL_H */
