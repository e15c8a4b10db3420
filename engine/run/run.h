// run.h: the drivers behind eng_prune (not public).
#ifndef ENG_RUN_H
#define ENG_RUN_H

#include "engine/engine.h"
#include "engine/formats/output.h"

// --- calibrated methods (calib.c)

int eng_prune_calibrated(const eng_model *m, const eng_spec *s,
                         const eng_options *o, const eng_hooks *h, eng_out *w,
                         eng_report *r, sh_diag *d);

#endif
