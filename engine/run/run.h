// run.h: the drivers behind eng_prune (not public).
#ifndef ENG_RUN_H
#define ENG_RUN_H

#include "engine/engine.h"
#include "engine/formats/output.h"
#include "engine/jobspec/plan.h"

// --- calibrated methods (calib.c)

// The sequential driver: the plan's targets pruned block by block from
// statistics of their inputs over the calibration set.
int eng_prune_calibrated(const eng_plan *plan, const eng_options *o,
                         const eng_hooks *h, eng_out *w, eng_report *r,
                         sh_diag *d);

#endif
