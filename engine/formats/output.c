// output.c: the pruned model folder, written beside nothing else: one
// writer per weight file, other files copied, the manifest last.
#include "engine/formats/out_int.h"
#include "engine/math/poll.h"

#include "engine/select/kernels.h"

#include "common/util.h"
#include "common/version.h"

#include <stdlib.h>
#include <string.h>

static int out_path(char *buf, size_t size, const char *dir, const char *name,
                    sh_diag *d)
{
    if (sh_path_join(buf, size, dir, name) != 0)
        return sh_diag_set(d, SH_ETOOBIG, name, "output path too long");
    char *slash = strrchr(buf, '/');
    if (slash && strchr(name, '/')) {
        *slash = '\0';
        int rc = sh_mkdir_p(buf);
        *slash = '/';
        if (rc != 0)
            return sh_diag_set(d, rc, name, "cannot create the folder of %s",
                               name);
    }
    return 0;
}

// The weight file i of the model, laid out from the plan's outputs.
static int open_weights(eng_out *w, const eng_plan *p, size_t i,
                        const char *path, sh_diag *d)
{
    const eng_model *m = p->m;
    const eng_st_header *h = eng_st_header_of(eng_model_file_at(m, i)->st);
    size_t nt = eng_model_tensor_count(m), nout = 0;
    size_t *tis = malloc((h->count ? h->count : 1) * sizeof *tis);
    if (!tis)
        return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    for (size_t ti = 0; ti < nt; ti++) {
        size_t file, idx;
        eng_model_tensor_loc(m, ti, &file, &idx);
        if (file == i) {
            tis[idx] = ti;
            nout += p->rows[ti].n_out;
        }
    }
    eng_tensor_info *outs = calloc(nout ? nout : 1, sizeof *outs);
    if (!outs) {
        free(tis);
        return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    }
    size_t k = 0;
    for (size_t idx = 0; idx < h->count; idx++) {
        const eng_plan_row *r = &p->rows[tis[idx]];
        w->first_out[tis[idx]] = k;
        for (size_t j = 0; j < r->n_out; j++, k++) {
            const eng_plan_out *o = &r->out[j];
            eng_tensor_info *t = &outs[k];
            *t = (eng_tensor_info){.name = (char *)o->name,
                                   .dtype = o->dtype,
                                   .ndim = o->ndim,
                                   .numel = 1};
            for (int q = 0; q < o->ndim; q++) {
                t->shape[q] = o->shape[q];
                t->numel *= (uint64_t)o->shape[q];
            }
        }
    }
    int rc =
        eng_st_writer_create(&w->writers[i], path, outs, nout, h->metadata, d);
    free(outs);
    free(tis);
    return rc;
}

static int write_json(const json_t *j, const char *name, const char *path,
                      bool sync, sh_diag *d)
{
    char *text = json_dumps(j, JSON_INDENT(2));
    int rc = text ? 0 : sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    if (rc == 0 && (rc = sh_file_write_atomic(path, text, strlen(text))) != 0)
        rc = sh_diag_set(d, rc, name, "cannot write %s", name);
    if (rc == 0 && sync && (rc = sh_fsync_path(path)) != 0)
        rc = sh_diag_set(d, rc, name, "cannot sync %s", name);
    free(text);
    return rc;
}

// config.json or the shard index through the format's rewrite.
static int rewrite_json(const eng_plan *p, const eng_model_file *f,
                        int (*rewrite)(const eng_plan *, json_t *, sh_diag *),
                        const char *path, bool sync, sh_diag *d)
{
    json_error_t err;
    json_t *j = json_load_file(f->path, 0, &err);
    if (!j)
        return sh_diag_set(d, SH_EFORMAT, f->name, "%s: %s", f->name, err.text);
    int rc = rewrite(p, j, d);
    if (rc == 0)
        rc = write_json(j, f->name, path, sync, d);
    json_decref(j);
    return rc;
}

// The shard index's weight map from the plan's outputs: each in the file
// of the tensor it comes from.
static int index_from_outputs(const eng_plan *p, json_t *index, sh_diag *d)
{
    json_t *map = json_object();
    if (!map)
        return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    uint64_t total = 0;
    for (size_t ti = 0; ti < p->n; ti++) {
        size_t file, idx;
        eng_model_tensor_loc(p->m, ti, &file, &idx);
        const char *fname = eng_model_file_at(p->m, file)->name;
        for (size_t j = 0; j < p->rows[ti].n_out; j++) {
            const eng_plan_out *o = &p->rows[ti].out[j];
            json_object_set_new(map, o->name, json_string(fname));
            uint64_t n = eng_dtype_size(o->dtype);
            for (int q = 0; q < o->ndim; q++)
                n *= (uint64_t)o->shape[q];
            total += n;
        }
    }
    json_object_set_new(index, "weight_map", map);
    json_t *meta = json_object_get(index, "metadata");
    if (json_is_object(meta)) // the tensors' bytes, as transformers writes
        json_object_set_new(meta, "total_size",
                            json_integer((json_int_t)total));
    return 0;
}

// masks.safetensors: a U8 (rows, ceil(cols / 8)) bitmask per target, in
// the targets' order: bit c % 8 of byte c / 8 of row r set where weight
// [r, c] of the output is not zero (compressed-tensors' bitmask order).
static int open_masks(eng_out *w, const eng_plan *p, sh_diag *d)
{
    size_t n = 0;
    eng_tensor_info *ts = calloc(p->n ? p->n : 1, sizeof *ts);
    if (!ts || !(w->mask_of = malloc((p->n ? p->n : 1) * sizeof *w->mask_of))) {
        free(ts);
        return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    }
    for (size_t i = 0; i < p->n; i++) {
        const eng_plan_row *r = &p->rows[i];
        w->mask_of[i] = r->share.target ? (long)n : -1;
        if (!r->share.target)
            continue;
        ts[n++] = (eng_tensor_info){
            .name = (char *)eng_model_tensor(p->m, i)->name,
            .dtype = ENG_DTYPE_U8,
            .ndim = 2,
            .shape = {(int64_t)r->rows, (int64_t)(r->cols + 7) / 8},
            .numel = r->rows * ((r->cols + 7) / 8)};
    }
    char path[4096];
    json_t *meta = json_pack(
        "{s:s, s:s}", "format", "pt", "shears",
        "masks: bit c%8 of byte c/8 of row r is 1 where weight [r, c] is not "
        "zero");
    int rc = out_path(path, sizeof path, w->o->out_dir, ENG_MASKS_NAME, d);
    if (rc == 0)
        rc = eng_st_writer_create(&w->masks, path, ts, n, meta, d);
    json_decref(meta);
    free(ts);
    return rc;
}

int eng_out_open(eng_out **out, const eng_plan *p, const eng_format *fmt,
                 const eng_options *o, sh_diag *d)
{
    const eng_model *m = p->m;
    eng_out *w = calloc(1, sizeof *w);
    size_t nf = eng_model_file_count(m), nt = eng_model_tensor_count(m);
    if (!w || !(w->writers = calloc(nf ? nf : 1, sizeof *w->writers)) ||
        !(w->first_out = calloc(nt ? nt : 1, sizeof *w->first_out))) {
        if (w)
            free(w->writers);
        free(w);
        return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    }
    w->plan = p;
    w->m = m;
    w->o = o;
    w->fmt = fmt;
    w->nfiles = nf;
    int rc = 0;
    for (size_t i = 0; i < nf && rc == 0; i++) {
        const eng_model_file *f = eng_model_file_at(m, i);
        char path[4096];
        if (strcmp(f->name, ENG_MANIFEST_NAME) == 0)
            continue; // replaced by ours
        if ((rc = out_path(path, sizeof path, o->out_dir, f->name, d)) != 0)
            break;
        if (f->role == ENG_FILE_WEIGHTS)
            rc = open_weights(w, p, i, path, d);
        else if (f->role == ENG_FILE_CONFIG && p->config)
            rc = write_json(p->config, f->name, path, o->sync, d);
        else if (f->role == ENG_FILE_CONFIG && fmt->rewrite_config)
            rc = rewrite_json(p, f, fmt->rewrite_config, path, o->sync, d);
        else if (f->role == ENG_FILE_INDEX && p->reshaped)
            rc = rewrite_json(p, f, index_from_outputs, path, o->sync, d);
        else if (f->role == ENG_FILE_INDEX && fmt->rewrite_index)
            rc = rewrite_json(p, f, fmt->rewrite_index, path, o->sync, d);
        else if ((rc = sh_file_copy(f->path, path, o->sync)) != 0)
            rc = sh_diag_set(d, rc, f->name, "cannot copy %s: %s", f->name,
                             sh_strerror(rc));
    }
    if (rc == 0 && p->s && p->s->masks)
        rc = open_masks(w, p, d);
    if (rc != 0) {
        eng_out_close(w);
        return rc;
    }
    *out = w;
    return 0;
}

int eng_out_copy(eng_out *w, size_t ti, sh_diag *d)
{
    size_t file, index;
    eng_model_tensor_loc(w->m, ti, &file, &index);
    return eng_st_writer_copy(w->writers[file], w->first_out[ti],
                              eng_model_file_at(w->m, file)->st, index, d);
}

int eng_out_put(eng_out *w, size_t ti, uint64_t off, const void *buf, size_t n,
                sh_diag *d)
{
    return eng_out_put_at(w, ti, 0, off, buf, n, d);
}

int eng_out_put_at(eng_out *w, size_t ti, size_t j, uint64_t off,
                   const void *buf, size_t n, sh_diag *d)
{
    size_t file, index;
    eng_model_tensor_loc(w->m, ti, &file, &index);
    return eng_st_writer_put(w->writers[file], w->first_out[ti] + j, off, buf,
                             n, d);
}

int eng_out_finish(eng_out *w, sh_diag *d)
{
    for (size_t i = 0; i < w->nfiles; i++) {
        if (!w->writers[i])
            continue;
        int rc = eng_st_writer_finish(w->writers[i], w->o->sync, d);
        if (rc != 0)
            return rc;
    }
    if (w->masks) {
        int rc = eng_st_writer_finish(w->masks, w->o->sync, d);
        if (rc != 0)
            return rc;
    }
    int rc = w->o->sync ? sh_fsync_path(w->o->out_dir) : 0;
    if (rc != 0)
        return sh_diag_set(d, rc, "", "cannot sync %s", w->o->out_dir);
    return 0;
}

void eng_out_close(eng_out *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->nfiles; i++)
        eng_st_writer_destroy(w->writers[i]);
    eng_st_writer_destroy(w->masks);
    free(w->mask_of);
    free(w->writers);
    free(w->first_out);
    free(w->scratch[0]);
    free(w->scratch[1]);
    free(w);
}

int eng_manifest_write(const eng_model *m, const eng_spec *s,
                       const eng_report *r, const eng_options *o, sh_diag *d)
{
    const char *const *sha =
        o->input_sha ? o->input_sha(o->input_sha_ctx) : NULL;
    json_t *files = json_array();
    for (size_t i = 0; i < eng_model_file_count(m); i++) {
        const eng_model_file *f = eng_model_file_at(m, i);
        json_t *e = json_pack("{s:s, s:I}", "name", f->name, "bytes",
                              (json_int_t)f->bytes);
        if (sha && sha[i])
            json_object_set_new(e, "sha256", json_string(sha[i]));
        json_array_append_new(files, e);
    }
    json_t *inputs = json_pack("{s:o}", "files", files);
    if (o->calibration_sha)
        json_object_set_new(inputs, "calibration",
                            json_pack("{s:s}", "sha256", o->calibration_sha));
    if (o->evaluation_sha)
        json_object_set_new(inputs, "evaluation",
                            json_pack("{s:s}", "sha256", o->evaluation_sha));
    char stamp[40];
    sh_time_rfc3339(stamp, sizeof stamp, sh_time_now_ms());
    json_t *j = json_pack("{s:{s:s}, s:s, s:s, s:I, s:o, s:o, s:o}", "shears",
                          "version", SH_VERSION, "created", stamp,
                          "architecture", eng_model_arch(m), "seed",
                          (json_int_t)s->seed, "spec", eng_spec_to_json(s),
                          "inputs", inputs, "report", eng_report_to_json(r));
    char *text = j ? json_dumps(j, JSON_INDENT(2)) : NULL;
    json_decref(j);
    if (!text)
        return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    char path[4096];
    int rc = sh_path_join(path, sizeof path, o->out_dir, ENG_MANIFEST_NAME);
    if (rc == 0)
        rc = sh_file_write_atomic(path, text, strlen(text));
    free(text);
    if (rc != 0)
        return sh_diag_set(d, rc, "", "cannot write %s", ENG_MANIFEST_NAME);
    return 0;
}

// --- statistics on raw bytes

uint64_t eng_count_zeros(const void *data, eng_dtype dt, uint64_t n)
{
    const unsigned char *p = data;
    uint64_t z = 0;
    switch (dt) { // the common types get loops the compiler vectorises
    case ENG_DTYPE_F16:
    case ENG_DTYPE_BF16:
        for (uint64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            z += (h & 0x7fffu) == 0;
        }
        return z;
    case ENG_DTYPE_F32:
        for (uint64_t i = 0; i < n; i++) {
            uint32_t u;
            memcpy(&u, p + 4 * i, 4);
            z += (u & 0x7fffffffu) == 0;
        }
        return z;
    default: {
        size_t es = eng_dtype_size(dt);
        for (uint64_t i = 0; i < n; i++)
            z += eng_is_zero(p + i * es, dt);
        return z;
    }
    }
}

bool eng_check_nm(const void *data, eng_dtype dt, uint64_t n, int keep, int m)
{
    const unsigned char *p = data;
    size_t es = eng_dtype_size(dt);
    for (uint64_t g = 0; g < n; g += (uint64_t)m) {
        int nonzero = 0;
        for (int i = 0; i < m; i++)
            nonzero += !eng_is_zero(p + (g + (uint64_t)i) * es, dt);
        if (nonzero > keep)
            return false;
    }
    return true;
}

int eng_stream_feed(const eng_st *st, size_t idx, eng_select *sel,
                    unsigned char *buf, sh_diag *d)
{
    const eng_tensor_info *t = &eng_st_header_of(st)->tensors[idx];
    size_t es = eng_dtype_size(t->dtype);
    size_t chunk = ENG_STREAM_CHUNK / es;
    int rc = 0;
    for (uint64_t at = 0; rc == 0 && at < t->numel; at += chunk) {
        size_t len = t->numel - at < chunk ? (size_t)(t->numel - at) : chunk;
        if ((rc = eng_st_read_range(st, idx, at * es, buf, len * es, d)))
            break;
        // Magnitude keys do not depend on the position: a chunk is a
        // tensor of its own for the selection.
        eng_scorer sc;
        eng_scorer_init(&sc, ENG_SCORE_MAGNITUDE, t->dtype, buf, 1, len, 0,
                        NULL, NULL);
        if (eng_select_feed(sel, &sc))
            rc = SH_ENUMERIC;
    }
    return rc;
}

int eng_stream_select(const eng_st *st, size_t idx, uint64_t k,
                      eng_threshold *out, unsigned char *buf, sh_diag *d)
{
    const eng_tensor_info *t = &eng_st_header_of(st)->tensors[idx];
    eng_select sel;
    if (eng_select_init(&sel, k, t->numel) != 0)
        return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    int rc = 0;
    while (rc == 0 && !sel.done) {
        if ((rc = eng_stream_feed(st, idx, &sel, buf, d)) == 0)
            eng_select_next(&sel);
    }
    if (rc == 0)
        *out = sel.result;
    eng_select_deinit(&sel);
    return rc;
}

int eng_stream_zeros(const eng_st *st, size_t idx, uint64_t *zeros,
                     unsigned char *buf, sh_diag *d)
{
    const eng_tensor_info *t = &eng_st_header_of(st)->tensors[idx];
    size_t es = eng_dtype_size(t->dtype);
    size_t chunk = ENG_STREAM_CHUNK / es;
    int rc = 0;
    uint64_t z = 0;
    for (uint64_t at = 0; rc == 0 && at < t->numel; at += chunk) {
        size_t len = t->numel - at < chunk ? (size_t)(t->numel - at) : chunk;
        if ((rc = eng_st_read_range(st, idx, at * es, buf, len * es, d)) == 0)
            z += eng_count_zeros(buf, t->dtype, len);
    }
    if (rc == 0)
        *zeros = z;
    return rc;
}

int eng_tensor_zeros(const eng_model *m, size_t ti, uint64_t *zeros, sh_diag *d)
{
    size_t file, idx;
    eng_model_tensor_loc(m, ti, &file, &idx);
    unsigned char *buf = malloc(ENG_STREAM_CHUNK);
    if (!buf)
        return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    int rc =
        eng_stream_zeros(eng_model_file_at(m, file)->st, idx, zeros, buf, d);
    free(buf);
    return rc;
}
