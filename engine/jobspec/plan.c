// plan.c: see plan.h.
#include "engine/jobspec/plan.h"

#include <stdlib.h>

uint64_t eng_plan_want(const eng_share *sh, eng_method method, uint64_t rows,
                       uint64_t cols)
{
    uint64_t numel = rows * cols;
    switch (sh->pattern.kind) {
    case ENG_PATTERN_NM:
        return numel / (uint64_t)sh->pattern.m *
               (uint64_t)(sh->pattern.m - sh->pattern.n);
    case ENG_PATTERN_ROWS: return eng_count_for(sh->sparsity, rows) * cols;
    default:
        if (eng_methods[method].compete == ENG_COMPETE_ROW)
            return eng_count_for(sh->sparsity, cols) * rows;
        return eng_count_for(sh->sparsity, numel);
    }
}

int eng_plan_build(eng_plan *p, const eng_spec *s, const eng_model *m,
                   sh_diag *d)
{
    size_t n = eng_model_tensor_count(m);
    *p = (eng_plan){.m = m, .s = s, .n = n};
    p->rows = calloc(n ? n : 1, sizeof *p->rows);
    if (!p->rows)
        return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    bool global = s->scope == ENG_SCOPE_GLOBAL;
    for (size_t i = 0; i < n; i++) {
        const eng_tensor_info *t = eng_model_tensor(m, i);
        eng_plan_row *r = &p->rows[i];
        eng_spec_share(s, t, &r->share);
        eng_tensor_rows_cols(t, &r->rows, &r->cols);
        if (!r->share.target)
            continue;
        r->pooled = global && r->share.override_index < 0;
        if (r->pooled)
            p->pool_params += t->numel;
        else
            r->want = eng_plan_want(&r->share, s->method, r->rows, r->cols);
        r->k = eng_count_for(
            r->share.sparsity,
            r->share.pattern.kind == ENG_PATTERN_ROWS ? r->rows : r->cols);
    }
    if (global)
        p->pool_want = eng_count_for(s->sparsity, p->pool_params);
    return 0;
}

void eng_plan_deinit(eng_plan *p)
{
    json_decref(p->config);
    p->config = NULL;
    for (size_t i = 0; i < p->n_names; i++)
        free(p->names[i]);
    free(p->names);
    p->names = NULL;
    p->n_names = p->cap_names = 0;
    free(p->rows);
    p->rows = NULL;
    p->n = 0;
}

char *eng_plan_keep_name(eng_plan *p, char *name)
{
    if (name && p->n_names == p->cap_names) {
        size_t cap = p->cap_names ? 2 * p->cap_names : 64;
        char **n = realloc(p->names, cap * sizeof *n);
        if (!n) {
            free(name);
            return NULL;
        }
        p->names = n;
        p->cap_names = cap;
    }
    if (name)
        p->names[p->n_names++] = name;
    return name;
}

bool eng_plan_quantizes(const eng_plan *p)
{
    for (size_t i = 0; i < p->n; i++)
        if (p->rows[i].share.target && p->rows[i].share.quant.bits)
            return true;
    return false;
}
