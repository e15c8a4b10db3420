// defer.c: the check threads, where work whose cost a client controls runs
// instead of an HTTP thread.
//
// libmicrohttpd serves every connection of an HTTP thread from one event
// loop: a handler that blocks for a second stalls them all, /healthz
// included. Finishing an upload (opening the model's headers, writing its
// rows) and checking a job spec against its checkpoint (matching regexes
// against every tensor name) cost what the client made them cost, so
// they run here: the handler suspends its connection and queues it; a
// check thread runs the work, which queues the response (allowed on a
// suspended connection), and resumes the connection.
#include "api/api_int.h"

#include "common/log.h"

#include <stdlib.h>

static void *defer_main(void *arg)
{
    api_server *a = arg;
    for (;;) {
        pthread_mutex_lock(&a->defer_mu);
        while (a->defer_len == 0 && !a->defer_stop)
            pthread_cond_wait(&a->defer_cv, &a->defer_mu);
        if (a->defer_len == 0) {
            pthread_mutex_unlock(&a->defer_mu);
            return NULL;
        }
        api_request *r = a->defer_queue[a->defer_head];
        a->defer_head = (a->defer_head + 1) % API_DEFER_QUEUE;
        a->defer_len--;
        bool stopping = a->defer_stop;
        pthread_mutex_unlock(&a->defer_mu);
        if (stopping)
            api_respond_problem(r, 503, "shutting-down", "Shutting down", NULL,
                                "the service is stopping; try again later");
        else
            r->deferred(r);
        if (!r->responded)
            api_respond_problem(r, 500, "internal", "Internal error", NULL,
                                "the handler gave no response");
        atomic_store(&r->defer_done, true);
        MHD_resume_connection(r->conn);
    }
}

void api_defer(api_request *r, api_handler fn)
{
    api_server *a = r->srv;
    pthread_mutex_lock(&a->defer_mu);
    bool room = !a->defer_stop && a->defer_len < API_DEFER_QUEUE;
    if (room) {
        r->deferred = fn;
        api_guard_phase(r, API_CONN_DEFERRED);
        // Suspended before it is queued: the resume cannot come first.
        MHD_suspend_connection(r->conn);
        a->defer_queue[(a->defer_head + a->defer_len) % API_DEFER_QUEUE] = r;
        a->defer_len++;
        pthread_cond_signal(&a->defer_cv);
    }
    pthread_mutex_unlock(&a->defer_mu);
    if (!room)
        api_respond_problem(r, 503, "busy", "Busy", NULL,
                            "%d checks are waiting already; try again",
                            API_DEFER_QUEUE);
}

int api_defer_start(api_server *a, sh_diag *d)
{
    pthread_mutex_init(&a->defer_mu, NULL);
    pthread_cond_init(&a->defer_cv, NULL);
    int n = a->cfg.check_threads > 0 ? a->cfg.check_threads : 2;
    if (!(a->defer_threads = calloc((size_t)n, sizeof *a->defer_threads)))
        return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    for (int i = 0; i < n; i++) {
        if (pthread_create(&a->defer_threads[i], NULL, defer_main, a) != 0) {
            api_defer_stop(a);
            return sh_diag_set(d, SH_ENOMEM, "",
                               "cannot start the check threads");
        }
        a->defer_n++;
    }
    return 0;
}

// Queued requests get a 503; running ones finish. The daemon must still
// run: the threads resume connections.
void api_defer_stop(api_server *a)
{
    if (!a->defer_threads)
        return;
    pthread_mutex_lock(&a->defer_mu);
    a->defer_stop = true;
    pthread_cond_broadcast(&a->defer_cv);
    pthread_mutex_unlock(&a->defer_mu);
    for (int i = 0; i < a->defer_n; i++)
        pthread_join(a->defer_threads[i], NULL);
    free(a->defer_threads);
    a->defer_threads = NULL;
    a->defer_n = 0;
    pthread_cond_destroy(&a->defer_cv);
    pthread_mutex_destroy(&a->defer_mu);
}
