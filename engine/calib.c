// calib.c: calibrated methods (placeholder until the forward pass lands).
#include "engine/engine_int.h"

int eng_prune_calibrated(const eng_model *m, const eng_spec *s,
                         const eng_options *o, const eng_hooks *h, eng_out *w,
                         eng_report *r, sh_diag *d)
{
    (void)m, (void)o, (void)h, (void)w, (void)r;
    return sh_diag_set(d, SH_EUNSUPPORTED, "method",
                       "method %s is not available yet",
                       eng_methods[s->method].name);
}
