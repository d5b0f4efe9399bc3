/* Freeze cachecore learned caches: installing a predictor, and its answer from logits and guard. */
#include <errno.h>
#include <math.h>
#include <string.h>

#include "cache_pvt.h"

#define FZ_CONF_MAX 88.0f /* log-odds cap: exp(-88) is the smallest normal float's order */

static bool finite_n(const float *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!isfinite(v[i]))
			return false;
	return true;
}

int fz_cache_set_head(struct fz_cache *c, const struct fz_cache_head *h)
{
	const int P = c->pooled_dim, C = c->n_classes, H = h ? h->hidden : -1;
	const int N1 = H > 0 ? H : C;

	if (!h || c->p.kind != FZ_CACHE_LEARNED || H != c->p.hidden || !h->w1 || !h->b1 ||
	    !h->mean || !h->inv_std || (H > 0 && (!h->w2 || !h->b2)) ||
	    !(h->temperature > 0.0f) || !(h->radius >= 0.0f) || !isfinite(h->temperature) ||
	    !isfinite(h->radius) || !finite_n(h->w1, (size_t)N1 * P) || !finite_n(h->b1, N1) ||
	    !finite_n(h->mean, P) || !finite_n(h->inv_std, P) ||
	    (H > 0 && (!finite_n(h->w2, (size_t)C * H) || !finite_n(h->b2, C))))
		return -EINVAL;
	/* transposed, so one input float scales one padded row of outputs (kern.h k_head) */
	memset(c->h_w1t, 0, (size_t)P * c->h_n1p * sizeof(float));
	memset(c->h_b1, 0, (size_t)c->h_n1p * sizeof(float));
	memset(c->h_w2t, 0, (size_t)c->h_n1p * c->h_cp * sizeof(float));
	memset(c->h_b2, 0, (size_t)c->h_cp * sizeof(float));
	for (int o = 0; o < N1; o++) {
		for (int i = 0; i < P; i++)
			c->h_w1t[(size_t)i * c->h_n1p + o] = h->w1[(size_t)o * P + i];
		c->h_b1[o] = h->b1[o];
	}
	for (int o = 0; H > 0 && o < C; o++) {
		for (int i = 0; i < H; i++)
			c->h_w2t[(size_t)i * c->h_cp + o] = h->w2[(size_t)o * H + i];
		c->h_b2[o] = h->b2[o];
	}
	memcpy(c->h_mean, h->mean, (size_t)P * sizeof(float));
	memcpy(c->h_isd, h->inv_std, (size_t)P * sizeof(float));
	c->h_temp = h->temperature;
	c->h_r2 = h->radius * h->radius;
	c->head_set = true;
	return 0;
}

struct fz_cache *fz_cache_confirmer(const struct fz_cache *c)
{
	return c->sub;
}

bool fz_cache_ready(const struct fz_cache *c)
{
	return c->p.kind != FZ_CACHE_LEARNED || c->head_set;
}

void fz_cache_learned_answer(const struct fz_cache *c, const float *key,
			     const struct fz_cache_result *confirm, struct fz_cache_result *r)
{
	const int C = c->n_classes;
	int best = 0;

	r->label = FZ_CACHE_LABEL_NONE;
	r->conf = 0.0f;
	r->hit = false;
	r->slot = -1;
	if (!c->head_set || !(key[C] <= c->h_r2)) /* outside the guard (or NaN): abstain */
		return;
	for (int j = 1; j < C; j++)
		if (key[j] > key[best])
			best = j;
	if (!isfinite(key[best]))
		return;
	/* log(p / (1 - p)) = -log(sum over the others of exp((z_j - z_best) / T)) */
	double rest = 0.0;
	for (int j = 0; j < C; j++)
		if (j != best)
			rest += exp(((double)key[j] - key[best]) / c->h_temp);
	float conf = rest > 0.0 ? (float)-log(rest) : FZ_CONF_MAX;
	r->label = best;
	if (confirm && !(confirm->hit && confirm->label == best))
		return; /* the neighbours do not vouch for it */
	r->conf = conf > 0.0f ? (conf < FZ_CONF_MAX ? conf : FZ_CONF_MAX) : 0.0f;
	const struct fz_cache_gate g = fz_cache_gate(c); /* one load: a consistent pair */
	r->hit = g.on && r->conf > g.thr;
}
