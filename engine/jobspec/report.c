// report.c: the run report and its JSON form.
#include "engine/jobspec/report.h"

#include "common/util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const phase_names[ENG_PHASE_COUNT] = {
    [ENG_PHASE_READ] = "read",
    [ENG_PHASE_FORWARD] = "forward",
    [ENG_PHASE_STATISTICS] = "statistics",
    [ENG_PHASE_SOLVE] = "solve",
    [ENG_PHASE_RECON] = "recon",
    [ENG_PHASE_WRITE] = "write",
    [ENG_PHASE_EVALUATE] = "evaluate",
    [ENG_PHASE_HASH] = "hash",
};

const char *eng_phase_name(eng_phase p) { return phase_names[p]; }

double eng_report_lap(eng_report *r, eng_layer_report *l, eng_phase p,
                      double since)
{
    double now = sh_time_mono();
    r->timings[p] += now - since;
    if (l)
        l->timings[p] =
            (isnan(l->timings[p]) ? 0 : l->timings[p]) + now - since;
    return now;
}

void eng_report_init(eng_report *r, const eng_spec *s)
{
    memset(r, 0, sizeof *r);
    r->method = s->method;
    r->pattern = s->pattern;
    r->scope = s->scope;
    r->sparsity = s->sparsity;
    r->quant = s->quant;
}

void eng_report_deinit(eng_report *r)
{
    for (size_t i = 0; i < r->n_layers; i++)
        free(r->layers[i].name);
    free(r->layers);
    json_decref(r->structure);
    json_decref(r->size);
    json_decref(r->allocation);
    memset(r, 0, sizeof *r);
}

eng_layer_report *eng_report_add_layer(eng_report *r, const eng_tensor_info *t,
                                       const eng_share *p)
{
    if (r->n_layers == r->cap_layers) {
        size_t cap = r->cap_layers ? 2 * r->cap_layers : 32;
        eng_layer_report *l = realloc(r->layers, cap * sizeof *l);
        if (!l)
            return NULL;
        r->layers = l;
        r->cap_layers = cap;
    }
    eng_layer_report *l = &r->layers[r->n_layers];
    memset(l, 0, sizeof *l);
    if (!(l->name = strdup(t->name)))
        return NULL;
    r->n_layers++;
    l->dtype = t->dtype;
    l->ndim = t->ndim;
    memcpy(l->shape, t->shape, sizeof l->shape);
    l->params = t->numel;
    l->target_sparsity = p->sparsity;
    l->pattern = p->pattern;
    l->recon_error = NAN;
    l->damping = NAN;
    for (int k = 0; k < ENG_PHASE_COUNT; k++)
        l->timings[k] = NAN;
    return l;
}

eng_layer_report *eng_report_layer(eng_report *r, const char *name)
{
    for (size_t i = 0; i < r->n_layers; i++)
        if (strcmp(r->layers[i].name, name) == 0)
            return &r->layers[i];
    return NULL;
}

static double ratio(uint64_t a, uint64_t b)
{
    return b ? (double)a / (double)b : 0.0;
}

// {"read": s, ...}; phases that are NAN are left out.
static json_t *timings_json(const double *t)
{
    json_t *j = json_object();
    for (int k = 0; k < ENG_PHASE_COUNT; k++)
        if (!isnan(t[k]))
            json_object_set_new(j, phase_names[k], json_real(t[k]));
    return j;
}

static json_t *layer_json(const eng_layer_report *l)
{
    char pat[16];
    eng_pattern_format(pat, sizeof pat, l->pattern);
    json_t *shape = json_array();
    for (int k = 0; k < l->ndim; k++)
        json_array_append_new(shape, json_integer(l->shape[k]));
    json_t *j = json_pack(
        "{s:s, s:o, s:s, s:I, s:I, s:f, s:f, s:s, s:b}", "name", l->name,
        "shape", shape, "dtype", eng_dtype_name(l->dtype), "params",
        (json_int_t)l->params, "zeros", (json_int_t)l->zeros, "sparsity",
        ratio(l->zeros, l->params), "target_sparsity", l->target_sparsity,
        "pattern", pat, "pattern_ok", l->pattern_ok);
    if (!isnan(l->recon_error))
        json_object_set_new(j, "recon_error", json_real(l->recon_error));
    if (!isnan(l->damping))
        json_object_set_new(j, "damping", json_real(l->damping));
    if (l->quant.bits)
        json_object_set_new(j, "quantize",
                            json_pack("{s:i, s:I, s:b}", "bits", l->quant.bits,
                                      "group_size",
                                      (json_int_t)l->quant.group_size,
                                      "symmetric", l->quant.symmetric));
    if (l->stored_as) {
        json_t *st = json_pack(
            "{s:s, s:I, s:I, s:f}", "as", l->stored_as, "bytes_before",
            (json_int_t)l->bytes_before, "bytes_after",
            (json_int_t)l->bytes_after, "bits_per_weight",
            l->params ? 8.0 * (double)l->bytes_after / (double)l->params : 0.0);
        if (l->store_note)
            json_object_set_new(st, "note", json_string(l->store_note));
        json_object_set_new(j, "storage", st);
    }
    json_object_set_new(j, "timings", timings_json(l->timings));
    return j;
}

json_t *eng_report_to_json(const eng_report *r)
{
    char pat[16];
    eng_pattern_format(pat, sizeof pat, r->pattern);
    json_t *layers = json_array();
    for (size_t i = 0; i < r->n_layers; i++)
        json_array_append_new(layers, layer_json(&r->layers[i]));
    json_t *j = json_pack(
        "{s:s, s:s, s:s, s:f, s:{s:I, s:I, s:I, s:f}, s:{s:I, s:I, s:f}, "
        "s:o, s:f}",
        "method", eng_methods[r->method].name, "pattern", pat, "scope",
        eng_scope_name(r->scope), "sparsity", r->sparsity, "targets", "tensors",
        (json_int_t)r->target_tensors, "params", (json_int_t)r->target_params,
        "zeros", (json_int_t)r->target_zeros, "sparsity",
        ratio(r->target_zeros, r->target_params), "model", "params",
        (json_int_t)r->model_params, "zeros", (json_int_t)r->model_zeros,
        "sparsity", ratio(r->model_zeros, r->model_params), "layers", layers,
        "seconds", r->seconds);
    json_object_set_new(j, "timings", timings_json(r->timings));
    if (r->has_metric)
        json_object_set_new(j, "metric",
                            json_pack("{s:s, s:f, s:f}", "name", r->metric_name,
                                      "dense", r->metric_dense, "pruned",
                                      r->metric_pruned));
    if (r->calib_samples > 0)
        json_object_set_new(j, "calibration",
                            json_pack("{s:I, s:I, s:I}", "samples",
                                      (json_int_t)r->calib_samples, "tokens",
                                      (json_int_t)r->calib_tokens, "recon_rows",
                                      (json_int_t)r->recon_rows));
    if (r->quant.bits)
        json_object_set_new(j, "quantize",
                            json_pack("{s:i, s:I, s:b, s:s}", "bits",
                                      r->quant.bits, "group_size",
                                      (json_int_t)r->quant.group_size,
                                      "symmetric", r->quant.symmetric, "method",
                                      r->quant.rtn ? "rtn" : "gptq"));
    if (r->format)
        json_object_set_new(
            j, "storage",
            json_pack("{s:s, s:I, s:I, s:f, s:{s:I, s:I, s:f}}", "format",
                      r->format, "bytes_before", (json_int_t)r->bytes_before,
                      "bytes_after", (json_int_t)r->bytes_after, "ratio",
                      r->bytes_before
                          ? (double)r->bytes_after / (double)r->bytes_before
                          : 0.0,
                      "targets", "bytes_before",
                      (json_int_t)r->target_bytes_before, "bytes_after",
                      (json_int_t)r->target_bytes_after, "bits_per_weight",
                      r->target_params ? 8.0 * (double)r->target_bytes_after /
                                             (double)r->target_params
                                       : 0.0));
    if (r->structure)
        json_object_set(j, "structure", r->structure);
    if (r->size)
        json_object_set(j, "size", r->size);
    if (r->allocation)
        json_object_set(j, "allocation", r->allocation);
    if (r->has_speed)
        json_object_set_new(
            j, "speed",
            json_pack("{s:f, s:f, s:s, s:f}", "dense", r->speed_dense, "pruned",
                      r->speed_pruned, "unit", r->speed_unit, "speedup",
                      r->speed_dense > 0 ? r->speed_pruned / r->speed_dense
                                         : 0.0));
    return j;
}
