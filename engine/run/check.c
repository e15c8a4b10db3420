// check.c: a spec against an open model, with what the model's family
// says of it (the spec parser knows no family).
#include "engine/engine.h"

#include "engine/nets/net.h"
#include "engine/run/run.h"

#include <stdlib.h>

int eng_check(const eng_spec *s, const eng_model *m, double deadline,
              eng_model_needs *needs, sh_diag *d)
{
    size_t n = eng_model_tensor_count(m);
    const eng_tensor_info **ts = malloc((n ? n : 1) * sizeof *ts);
    if (!ts)
        return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    for (size_t i = 0; i < n; i++)
        ts[i] = eng_model_tensor(m, i);
    const json_t *cfg = eng_model_config(m);
    if (cfg && json_object_get(cfg, "quantization_config")) {
        free(ts);
        return sh_diag_set(d, SH_ESPEC, "checkpoint",
                           "the checkpoint is stored compressed (config.json "
                           "has a quantization_config): pruning reads dense "
                           "weights; decompress it first (shears "
                           "decompress), then prune the dense folder");
    }
    const char *arch = eng_model_arch(m);
    bool runs = eng_model_config(m) && eng_net_runs(arch);
    int rc = eng_spec_check(s, ts, n, arch, runs, deadline, d);
    free(ts);
    if (rc == 0 && s->structure.on)
        rc = eng_shrink_check(s, m, d);
    if (rc == 0 && needs)
        *needs = (eng_model_needs){.model_runs = runs,
                                   .dataset_kind = eng_net_kind_for(arch)};
    return rc;
}
