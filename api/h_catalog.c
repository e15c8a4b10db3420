// h_catalog.c: reading and deleting checkpoints and datasets.
#include "api/api_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int (*get_fn)(store_conn *c, const char *id, json_t **out);
typedef int (*list_fn)(store_conn *c, int64_t cursor, int limit, json_t **items,
                       int64_t *next);
typedef int (*delete_fn)(store *s, const char *id, sh_diag *d);

static void get_one(api_request *r, get_fn get, const char *what)
{
    store_conn *c = store_conn_acquire(r->srv->s);
    json_t *j = NULL;
    int rc = get(c, r->param[0], &j);
    store_conn_release(r->srv->s, c);
    if (rc == SH_ENOTFOUND)
        api_respond_problem(r, 404, "not-found", "Not found", NULL, "no %s %s",
                            what, r->param[0]);
    else if (rc != 0)
        api_respond_error(r, rc, NULL);
    else
        api_respond_json(r, 200, j);
}

static void list_all(api_request *r, list_fn list)
{
    int limit;
    int64_t cursor, next = 0;
    if (!api_page_args(r, &limit, &cursor))
        return;
    store_conn *c = store_conn_acquire(r->srv->s);
    json_t *items = NULL;
    int rc = list(c, cursor, limit, &items, &next);
    store_conn_release(r->srv->s, c);
    if (rc != 0)
        api_respond_error(r, rc, NULL);
    else
        api_respond_page(r, items, next);
}

static void delete_one(api_request *r, delete_fn del)
{
    sh_diag d;
    sh_diag_clear(&d);
    int rc = del(r->srv->s, r->param[0], &d);
    if (rc != 0) {
        api_respond_error(r, rc, &d);
        return;
    }
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(0, "", MHD_RESPMEM_PERSISTENT);
    api_respond(r, 204, resp);
}

void api_h_checkpoint_get(api_request *r)
{
    get_one(r, store_checkpoint_get, "checkpoint");
}

void api_h_checkpoint_list(api_request *r)
{
    list_all(r, store_checkpoint_list);
}

void api_h_checkpoint_delete(api_request *r)
{
    delete_one(r, store_checkpoint_delete);
}

void api_h_dataset_get(api_request *r)
{
    get_one(r, store_dataset_get, "dataset");
}

void api_h_dataset_list(api_request *r) { list_all(r, store_dataset_list); }

void api_h_dataset_delete(api_request *r)
{
    delete_one(r, store_dataset_delete);
}

void api_respond_slice(api_request *r, json_t *all)
{
    int limit;
    int64_t cursor;
    if (!api_page_args(r, &limit, &cursor)) {
        json_decref(all);
        return;
    }
    size_t from = cursor > 0 ? (size_t)(cursor - 1) : 0;
    size_t n = json_array_size(all);
    json_t *items = json_array();
    for (size_t i = from; i < n && i < from + (size_t)limit; i++)
        json_array_append(items, json_array_get(all, i));
    int64_t next = from + (size_t)limit < n ? (int64_t)(from + limit + 1) : 0;
    json_decref(all);
    api_respond_page(r, items, next);
}

void api_h_checkpoint_tensors(api_request *r)
{
    int limit;
    int64_t cursor, next = 0;
    if (!api_page_args(r, &limit, &cursor))
        return;
    store_conn *c = store_conn_acquire(r->srv->s);
    json_t *items = NULL;
    int rc =
        store_checkpoint_tensors(c, r->param[0], cursor, limit, &items, &next);
    store_conn_release(r->srv->s, c);
    if (rc == SH_ENOTFOUND)
        api_respond_problem(r, 404, "not-found", "Not found", NULL,
                            "no checkpoint %s", r->param[0]);
    else if (rc != 0)
        api_respond_error(r, rc, NULL);
    else
        api_respond_page(r, items, next);
}
