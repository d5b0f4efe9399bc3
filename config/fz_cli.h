/* Command-line helpers shared by the freeze binary's offline commands and the appliance. */
#ifndef FZ_CLI_H
#define FZ_CLI_H

/* Seconds on the monotonic clock. */
double fz_now_s(void);

/* Parse an integer option value in [min, max], or exit(2) with a message naming the option
 * (start-up only: never called on a data path). */
int fz_opt_int(const char *opt, const char *val, int min, int max);

#endif /* FZ_CLI_H */
