// model.c: model folders, shards and the index.
#include "engine/io/model.h"

#include "common/util.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define INDEX_NAME "model.safetensors.index.json"
#define MAX_FILES 10000
#define MAX_SMALL_JSON (64u << 20)

typedef struct tensor_ref {
    size_t file;
    size_t index;
} tensor_ref;

struct eng_model {
    eng_model_file *files;
    size_t nfiles, capfiles;
    tensor_ref *tensors;
    size_t ntensors;
    json_t *by_name; // tensor name -> index into tensors, as a hash map
    json_t *config;
    char arch[64];
    bool single; // opened from one .safetensors file
};

static int add_file(eng_model *m, const char *name, const char *path,
                    sh_diag *d)
{
    if (m->nfiles == MAX_FILES)
        return sh_diag_set(d, SH_ETOOBIG, "", "more than %d files", MAX_FILES);
    if (m->nfiles == m->capfiles) {
        size_t cap = m->capfiles ? 2 * m->capfiles : 16;
        eng_model_file *f = realloc(m->files, cap * sizeof *f);
        if (!f)
            return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
        m->files = f;
        m->capfiles = cap;
    }
    eng_model_file *f = &m->files[m->nfiles];
    memset(f, 0, sizeof *f);
    f->name = strdup(name);
    f->path = strdup(path);
    if (!f->name || !f->path) {
        free(f->name);
        free(f->path);
        return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    }
    f->role = ENG_FILE_OTHER;
    m->nfiles++;
    uint64_t bytes = 0;
    if (sh_file_size(path, &bytes) != 0)
        return sh_diag_set(d, SH_EIO, name, "%s: cannot stat: %s", name,
                           strerror(errno));
    f->bytes = bytes;
    return 0;
}

// What a walk of a model folder carries: the folder's real path, and the
// folders on the way down (a link back to one of them is a loop).
typedef struct walk_ctx {
    const char *root;
    char root_real[PATH_MAX];
    struct {
        dev_t dev;
        ino_t ino;
    } up[64];
    int depth;
} walk_ctx;

static const char *file_kind(mode_t mode)
{
    return S_ISFIFO(mode)   ? "a FIFO"
           : S_ISCHR(mode)  ? "a character device"
           : S_ISBLK(mode)  ? "a block device"
           : S_ISSOCK(mode) ? "a socket"
                            : "not a regular file";
}

static int walk(eng_model *m, walk_ctx *w, const char *rel, sh_diag *d);

// A folder inside the model, reached by name or through a link.
static int walk_into(eng_model *m, walk_ctx *w, const char *path,
                     const char *name, const struct stat *st, bool link,
                     sh_diag *d)
{
    for (int i = 0; i < w->depth; i++)
        if (w->up[i].dev == st->st_dev && w->up[i].ino == st->st_ino)
            return sh_diag_set(d, SH_EINVAL, name,
                               "folder link \"%s\" leads back to a folder "
                               "that holds it (a loop)",
                               name);
    if (link) {
        char real[PATH_MAX];
        size_t n = strlen(w->root_real);
        if (!realpath(path, real) || strncmp(real, w->root_real, n) != 0 ||
            (real[n] != '/' && real[n] != '\0'))
            return sh_diag_set(d, SH_EINVAL, name,
                               "folder link \"%s\" leads out of the model "
                               "folder",
                               name);
    }
    if (w->depth == (int)SH_ARRAY_LEN(w->up))
        return sh_diag_set(d, SH_EINVAL, name,
                           "folder \"%s\" is nested more than %zu deep", name,
                           SH_ARRAY_LEN(w->up));
    w->up[w->depth].dev = st->st_dev;
    w->up[w->depth++].ino = st->st_ino;
    int rc = walk(m, w, name, d);
    w->depth--;
    return rc;
}

// Regular files and links to them are the model's (a Hugging Face cache
// snapshot is a folder of links into ../../blobs); folders nest, and
// links to folders must stay inside without looping; the rest (FIFOs,
// devices, sockets, dangling links) is left out.
static int walk(eng_model *m, walk_ctx *w, const char *rel, sh_diag *d)
{
    char dirpath[4096];
    if (rel[0])
        sh_path_join(dirpath, sizeof dirpath, w->root, rel);
    else
        snprintf(dirpath, sizeof dirpath, "%s", w->root);
    DIR *dir = opendir(dirpath);
    if (!dir)
        return sh_diag_set(d, SH_EIO, "", "cannot read folder %s: %s", dirpath,
                           strerror(errno));
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(dir))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char path[4096], name[4096];
        if (sh_path_join(path, sizeof path, dirpath, e->d_name) != 0 ||
            (rel[0] ? sh_path_join(name, sizeof name, rel, e->d_name)
                    : (snprintf(name, sizeof name, "%s", e->d_name), 0)) != 0) {
            rc = sh_diag_set(d, SH_ETOOBIG, "", "path too long in %s", dirpath);
            break;
        }
        struct stat lst, st;
        if (lstat(path, &lst) != 0 || stat(path, &st) != 0)
            continue; // gone, or a dangling link: nothing to copy
        if (S_ISDIR(st.st_mode)) {
            if (e->d_name[0] != '.')
                rc = walk_into(m, w, path, name, &st, S_ISLNK(lst.st_mode), d);
        } else if (S_ISREG(st.st_mode)) {
            rc = add_file(m, name, path, d);
        }
    }
    closedir(dir);
    return rc;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(((const eng_model_file *)a)->name,
                  ((const eng_model_file *)b)->name);
}

static long find_file(const eng_model *m, const char *name)
{
    for (size_t i = 0; i < m->nfiles; i++)
        if (strcmp(m->files[i].name, name) == 0)
            return (long)i;
    return -1;
}

static int load_json(const eng_model_file *f, json_t **out, sh_diag *d)
{
    char *text = NULL;
    size_t len = 0;
    int rc = sh_file_read(f->path, MAX_SMALL_JSON, &text, &len);
    if (rc != 0)
        return sh_diag_set(d, rc, f->name, "%s: cannot read (%s)", f->name,
                           sh_strerror(rc));
    json_error_t je;
    json_t *j = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    free(text);
    if (!j)
        return sh_diag_set(d, SH_EFORMAT, f->name,
                           "%s is not valid JSON: %s (line %d)", f->name,
                           je.text, je.line);
    if (!json_is_object(j)) {
        json_decref(j);
        return sh_diag_set(d, SH_EFORMAT, f->name, "%s must hold a JSON object",
                           f->name);
    }
    *out = j;
    return 0;
}

static int open_weights(const eng_model *m, eng_model_file *f, sh_diag *d)
{
    int rc = eng_st_open(&f->st, f->path, d);
    if (rc != 0) {
        if (m->single)
            return rc;
        sh_diag_prefix(d, "%s", f->name);
        if (d && !d->field[0])
            snprintf(d->field, sizeof d->field, "%s", f->name);
        return rc;
    }
    f->role = ENG_FILE_WEIGHTS;
    return 0;
}

// Checks the index's weight_map against the shards and opens them.
static int load_index(eng_model *m, eng_model_file *idx, sh_diag *d)
{
    json_t *j = NULL;
    int rc = load_json(idx, &j, d);
    if (rc != 0)
        return rc;
    idx->role = ENG_FILE_INDEX;
    json_t *map = json_object_get(j, "weight_map");
    if (!json_is_object(map)) {
        json_decref(j);
        return sh_diag_set(d, SH_EFORMAT, idx->name,
                           "%s: \"weight_map\" must be an object", idx->name);
    }
    const char *tname;
    json_t *shard;
    size_t mapped = 0;
    json_object_foreach (map, tname, shard) {
        const char *s = json_is_string(shard) ? json_string_value(shard) : "";
        long fi = s[0] && !strchr(s, '/') ? find_file(m, s) : -1;
        if (fi < 0 || !sh_str_ends_with(s, ".safetensors")) {
            rc = sh_diag_set(d, SH_EFORMAT, tname,
                             "%s: tensor \"%s\" maps to \"%s\", which is not "
                             "a .safetensors file of the model",
                             idx->name, tname, s);
            goto out;
        }
        eng_model_file *f = &m->files[fi];
        if (!f->st && (rc = open_weights(m, f, d)) != 0)
            goto out;
        if (eng_st_header_find(eng_st_header_of(f->st), tname) < 0) {
            rc = sh_diag_set(d, SH_EFORMAT, tname,
                             "%s: tensor \"%s\" is not in its shard %s",
                             idx->name, tname, s);
            goto out;
        }
        mapped++;
    }
    size_t held = 0;
    for (size_t i = 0; i < m->nfiles; i++) {
        if (!m->files[i].st)
            continue;
        const eng_st_header *h = eng_st_header_of(m->files[i].st);
        for (size_t k = 0; k < h->count; k++) {
            json_t *s = json_object_get(map, h->tensors[k].name);
            if (!s || strcmp(json_string_value(s), m->files[i].name) != 0) {
                rc = sh_diag_set(d, SH_EFORMAT, h->tensors[k].name,
                                 "%s: tensor \"%s\" of shard %s is not "
                                 "listed for that shard",
                                 idx->name, h->tensors[k].name,
                                 m->files[i].name);
                goto out;
            }
        }
        held += h->count;
    }
    if (held != mapped)
        rc = sh_diag_set(d, SH_EFORMAT, idx->name,
                         "%s lists %zu tensors, the shards hold %zu", idx->name,
                         mapped, held);
out:
    json_decref(j);
    return rc;
}

static void detect_arch(eng_model *m)
{
    const char *t = NULL;
    if (m->config) {
        json_t *mt = json_object_get(m->config, "model_type");
        json_t *ar =
            json_array_get(json_object_get(m->config, "architectures"), 0);
        if (json_is_string(mt))
            t = json_string_value(mt);
        else if (json_is_string(ar))
            t = json_string_value(ar);
    }
    if (!t && eng_model_find(m, "model.layers.0.self_attn.q_proj.weight") >= 0)
        t = "llama";
    snprintf(m->arch, sizeof m->arch, "%s", t ? t : "unknown");
}

// After the files are known: pick the weights, read config, list tensors.
static int finish_open(eng_model *m, sh_diag *d)
{
    qsort(m->files, m->nfiles, sizeof *m->files, by_name);
    int rc;
    long idx = find_file(m, INDEX_NAME);
    long cfg = find_file(m, "config.json");
    if (idx >= 0) {
        if ((rc = load_index(m, &m->files[idx], d)) != 0)
            return rc;
    } else {
        long w = find_file(m, "model.safetensors");
        if (w < 0) {
            for (size_t i = 0; i < m->nfiles; i++) {
                if (!sh_str_ends_with(m->files[i].name, ".safetensors"))
                    continue;
                if (w >= 0)
                    return sh_diag_set(
                        d, SH_EFORMAT, "",
                        "several .safetensors files and no %s: which are "
                        "the weights?",
                        INDEX_NAME);
                w = (long)i;
            }
        }
        if (w < 0)
            return sh_diag_set(d, SH_EFORMAT, "",
                               "no weights: expected model.safetensors or %s",
                               INDEX_NAME);
        if ((rc = open_weights(m, &m->files[w], d)) != 0)
            return rc;
    }
    if (cfg >= 0) {
        if ((rc = load_json(&m->files[cfg], &m->config, d)) != 0)
            return rc;
        m->files[cfg].role = ENG_FILE_CONFIG;
    }

    size_t n = 0;
    for (size_t i = 0; i < m->nfiles; i++)
        if (m->files[i].st)
            n += eng_st_header_of(m->files[i].st)->count;
    m->tensors = calloc(n ? n : 1, sizeof *m->tensors);
    m->by_name = json_object();
    if (!m->tensors || !m->by_name)
        return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    for (size_t i = 0; i < m->nfiles; i++) {
        if (!m->files[i].st)
            continue;
        const eng_st_header *h = eng_st_header_of(m->files[i].st);
        for (size_t k = 0; k < h->count; k++) {
            if (eng_model_find(m, h->tensors[k].name) >= 0)
                return sh_diag_set(d, SH_EFORMAT, h->tensors[k].name,
                                   "tensor \"%s\" appears in two weight "
                                   "files",
                                   h->tensors[k].name);
            if (json_object_set_new(m->by_name, h->tensors[k].name,
                                    json_integer((json_int_t)m->ntensors)))
                return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
            m->tensors[m->ntensors++] = (tensor_ref){i, k};
        }
    }
    detect_arch(m);
    return 0;
}

int eng_model_open(eng_model **out, const char *path, sh_diag *d)
{
    eng_model *m = calloc(1, sizeof *m);
    if (!m)
        return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    int rc;
    struct stat st;
    walk_ctx *w = NULL;
    if (stat(path, &st) != 0) {
        rc = sh_diag_set(d, errno == ENOENT ? SH_ENOTFOUND : SH_EIO, "",
                         "cannot open: %s", strerror(errno));
        goto fail;
    }
    if (S_ISDIR(st.st_mode)) {
        if (!(w = calloc(1, sizeof *w))) {
            rc = sh_diag_set(d, SH_ENOMEM, "", "out of memory");
            goto fail;
        }
        w->root = path;
        if (!realpath(path, w->root_real))
            sh_strlcpy(w->root_real, sizeof w->root_real, path);
        w->up[0].dev = st.st_dev;
        w->up[0].ino = st.st_ino;
        w->depth = 1;
        rc = walk(m, w, "", d);
        free(w);
    } else if (S_ISREG(st.st_mode)) {
        // Its messages name the path given, not the name it gets out.
        m->single = true;
        rc = add_file(m, "model.safetensors", path, d);
    } else {
        rc = sh_diag_set(d, SH_EINVAL, "",
                         "is %s, not a .safetensors file or a model folder",
                         file_kind(st.st_mode));
    }
    if (rc == 0)
        rc = finish_open(m, d);
    if (rc != 0)
        goto fail;
    *out = m;
    return 0;
fail:
    eng_model_close(m);
    return rc;
}

int eng_model_name_check(const char *name, sh_diag *d)
{
    size_t len = strlen(name);
    if (len > ENG_MODEL_NAME_MAX)
        return sh_diag_set(d, SH_EINVAL, "",
                           "file name \"%.64s...\" is %zu bytes; names in a "
                           "model are at most %d",
                           name, len, ENG_MODEL_NAME_MAX);
    bool plain = name[0] && name[0] != '/';
    for (const char *p = name; plain && *p;) {
        const char *slash = strchr(p, '/');
        size_t n = slash ? (size_t)(slash - p) : strlen(p);
        if (n == 0 || (n == 1 && p[0] == '.') ||
            (n == 2 && p[0] == '.' && p[1] == '.'))
            plain = false;
        p += n + (slash ? 1 : 0);
    }
    for (const unsigned char *p = (const unsigned char *)name; plain && *p; p++)
        if (*p < 0x20 || *p == 0x7f || *p == '\\')
            plain = false;
    if (!plain)
        return sh_diag_set(d, SH_EINVAL, name,
                           "file name \"%s\" is not a plain relative name "
                           "(no absolute paths, \"..\", \".\", empty "
                           "segments, control characters or backslashes)",
                           name);
    return 0;
}

// Orders names as a tree walk would: '/' before every other byte, so a
// file "x" is directly followed by the names under "x/".
static int tree_order(const void *a, const void *b)
{
    const unsigned char *p = *(const unsigned char *const *)a;
    const unsigned char *q = *(const unsigned char *const *)b;
    for (;; p++, q++) {
        unsigned x = *p == '/' ? 1 : *p == 0 ? 0 : *p + 1u;
        unsigned y = *q == '/' ? 1 : *q == 0 ? 0 : *q + 1u;
        if (x != y || x == 0)
            return (int)x - (int)y;
    }
}

int eng_model_names_check(const char **names, size_t n, sh_diag *d)
{
    qsort(names, n, sizeof *names, tree_order);
    for (size_t i = 1; i < n; i++) {
        size_t k = strlen(names[i - 1]);
        if (strcmp(names[i - 1], names[i]) == 0)
            return sh_diag_set(d, SH_EINVAL, names[i],
                               "file \"%s\" appears twice", names[i]);
        if (strncmp(names[i - 1], names[i], k) == 0 && names[i][k] == '/')
            return sh_diag_set(d, SH_EINVAL, names[i],
                               "\"%s\" is a file, so \"%s\" cannot be in "
                               "it: a name cannot be both a file and a folder",
                               names[i - 1], names[i]);
    }
    return 0;
}

int eng_model_open_files(eng_model **out, const eng_file_ref *refs, size_t n,
                         sh_diag *d)
{
    eng_model *m = calloc(1, sizeof *m);
    if (!m)
        return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    const char **names = calloc(n ? n : 1, sizeof *names);
    int rc = names ? 0 : sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    for (size_t i = 0; i < n && rc == 0; i++) {
        rc = eng_model_name_check(refs[i].name, d);
        names[i] = refs[i].name;
    }
    if (rc == 0)
        rc = eng_model_names_check(names, n, d);
    free(names);
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = add_file(m, refs[i].name, refs[i].path, d);
    if (rc == 0)
        rc = finish_open(m, d);
    if (rc != 0) {
        eng_model_close(m);
        return rc;
    }
    *out = m;
    return 0;
}

void eng_model_close(eng_model *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->nfiles; i++) {
        eng_st_close(m->files[i].st);
        free(m->files[i].name);
        free(m->files[i].path);
    }
    free(m->files);
    free(m->tensors);
    json_decref(m->by_name);
    json_decref(m->config);
    free(m);
}

size_t eng_model_file_count(const eng_model *m) { return m->nfiles; }

const eng_model_file *eng_model_file_at(const eng_model *m, size_t i)
{
    return &m->files[i];
}

size_t eng_model_tensor_count(const eng_model *m) { return m->ntensors; }

const eng_tensor_info *eng_model_tensor(const eng_model *m, size_t i)
{
    const tensor_ref *r = &m->tensors[i];
    return &eng_st_header_of(m->files[r->file].st)->tensors[r->index];
}

void eng_model_tensor_loc(const eng_model *m, size_t i, size_t *file,
                          size_t *index)
{
    *file = m->tensors[i].file;
    *index = m->tensors[i].index;
}

long eng_model_find(const eng_model *m, const char *name)
{
    json_t *i = m->by_name ? json_object_get(m->by_name, name) : NULL;
    return i ? (long)json_integer_value(i) : -1;
}

const json_t *eng_model_config(const eng_model *m) { return m->config; }
const char *eng_model_arch(const eng_model *m) { return m->arch; }

uint64_t eng_model_bytes(const eng_model *m)
{
    uint64_t n = 0;
    for (size_t i = 0; i < m->nfiles; i++)
        n += m->files[i].bytes;
    return n;
}
