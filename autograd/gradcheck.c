/* autograd/gradcheck.c — analytic gradients against central finite
 * differences, like torch.autograd.gradcheck. The scalar checked is
 * L = sum(w * f(inputs)) for fixed random weights w, accumulated in double;
 * each partial is (L(x+h) - L(x-h)) / (x+h - (x-h)) with the step measured
 * after rounding to float, so the quotient is exact up to the kernels' own
 * float32 rounding. */
#include "autograd.h"

#include <math.h>
#include <stdlib.h>

static double project(const tg_tensor *out, const double *w)
{
    double s = 0.0;
    for (int64_t i = 0; i < out->numel; i++)
        s += w[i] * (double)out->data[i];
    return s;
}

tg_gradcheck_result tg_gradcheck(tg_gradcheck_fn f, void *ctx, tg_tensor **inputs, int n_inputs, double eps,
                                 double atol, double rtol)
{
    tg_gradcheck_result r = {0};
    tg_check_ptr("tg_gradcheck", f, "function");
    tg_check_ptr("tg_gradcheck", inputs, "input list");
    if (n_inputs < 1 || n_inputs > TG_GRADCHECK_MAX_INPUTS)
        tg_error("tg_gradcheck", "takes 1 to %d inputs, got %d", TG_GRADCHECK_MAX_INPUTS, n_inputs);
    if (!(eps > 0.0))
        tg_error("tg_gradcheck", "eps must be positive, got %g", eps);
    for (int k = 0; k < n_inputs; k++) {
        tg_check_ptr("tg_gradcheck", inputs[k], "an input");
        for (int j = 0; j < k; j++)
            if (inputs[j] == inputs[k])
                tg_error("tg_gradcheck", "input %d is the same tensor as input %d", k, j);
    }
    r.n_inputs = n_inputs;
    r.ok = true;

    tg_tape *tape = tg_tape_new();
    tg_tape *prev = tg_tape_use(tape);
    float *user_grads[TG_GRADCHECK_MAX_INPUTS];
    for (int k = 0; k < n_inputs; k++) {
        user_grads[k] = inputs[k]->grad;
        inputs[k]->grad = NULL;
    }

    /* The analytic pass: backward of f with seed w. */
    tg_tensor *out = f(inputs, ctx);
    const int64_t n_out = out->numel;
    double *w = malloc((size_t)(n_out ? n_out : 1) * sizeof *w);
    tg_tensor *seed = tg_empty(out->ndim, out->shape);
    tg_generator g;
    tg_manual_seed(&g, 20240601);
    for (int64_t i = 0; i < n_out; i++) {
        seed->data[i] = tg_random_float(&g) * 2.0f - 1.0f;
        w[i] = seed->data[i];
    }
    bool any_grad = false;
    for (int k = 0; k < n_inputs; k++)
        any_grad |= inputs[k]->requires_grad;
    if (any_grad && out->requires_grad)
        tg_backward(out, seed);
    tg_free(seed);
    tg_tape_reset(tape);

    /* The numeric pass. */
    const bool was = tg_set_grad_enabled(false);
    for (int k = 0; k < n_inputs; k++) {
        tg_tensor *x = inputs[k];
        r.worst_index[k] = -1;
        if (!x->requires_grad)
            continue;
        for (int64_t i = 0; i < x->numel; i++) {
            const float x0 = x->data[i];
            const float xp = (float)((double)x0 + eps), xm = (float)((double)x0 - eps);
            x->data[i] = xp;
            const double lp = project(f(inputs, ctx), w);
            tg_tape_reset(tape);
            x->data[i] = xm;
            const double lm = project(f(inputs, ctx), w);
            tg_tape_reset(tape);
            x->data[i] = x0;
            const double numeric = (lp - lm) / ((double)xp - (double)xm);
            const double analytic = x->grad ? (double)x->grad[i] : 0.0;
            const double abs_err = fabs(analytic - numeric);
            double denom = fmax(fabs(analytic), fabs(numeric));
            const double rel_err = abs_err / fmax(denom, 1e-3);
            if (abs_err > r.max_abs_err[k] || r.worst_index[k] < 0) {
                r.max_abs_err[k] = abs_err;
                r.worst_index[k] = (int)i;
            }
            if (rel_err > r.max_rel_err[k])
                r.max_rel_err[k] = rel_err;
            if (!(abs_err <= atol + rtol * fabs(numeric)))
                r.ok = false;
        }
    }
    tg_set_grad_enabled(was);

    for (int k = 0; k < n_inputs; k++) {
        free(inputs[k]->grad);
        inputs[k]->grad = user_grads[k];
    }
    free(w);
    tg_tape_use(prev);
    tg_tape_free(tape);
    return r;
}
