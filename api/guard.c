// guard.c: deadlines libmicrohttpd does not keep.
//
// Its connection timeout counts silence, so a client that sends one header
// byte a second holds its connection forever; a thousand such clients hold
// every slot. The per-address limit (MHD_OPTION_PER_IP_CONNECTION_LIMIT,
// counted across the HTTP threads) keeps one address from taking the
// server; this file adds two deadlines, enforced by a reaper thread:
//
//   - a whole request head must arrive within head_timeout seconds of the
//     connection's start or of the previous request's end (an idle
//     keep-alive connection is closed after that long, as nginx does);
//   - a body must arrive at min_body_rate bytes a second, averaged over
//     windows of RATE_WINDOW seconds.
//
// The reaper shuts a late connection's socket down (shutdown(2), not
// close: the descriptor stays libmicrohttpd's); the HTTP thread sees the
// hang-up within a millisecond and closes it. libmicrohttpd calls the
// CLOSED notification on the connection's own thread before it closes the
// descriptor, and that notification takes the guard's lock, which the
// reaper holds while it shuts down: a descriptor is never reused under it.
#include "api/api_int.h"

#include "common/log.h"
#include "common/util.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>

#define RATE_WINDOW 10.0 // seconds
#define REAP_EVERY_MS 250

void api_guard_notify(void *cls, struct MHD_Connection *c, void **socket_ctx,
                      enum MHD_ConnectionNotificationCode code)
{
    api_server *a = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        api_conn *g = calloc(1, sizeof *g);
        const union MHD_ConnectionInfo *info =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (!g || !info) {
            free(g);
            *socket_ctx = NULL;
            return;
        }
        g->fd = info->connect_fd;
        g->phase = API_CONN_HEAD;
        g->since = sh_time_mono();
        pthread_mutex_lock(&a->guard_mu);
        g->next = a->conns;
        if (a->conns)
            a->conns->prev = g;
        a->conns = g;
        pthread_mutex_unlock(&a->guard_mu);
        *socket_ctx = g;
        return;
    }
    api_conn *g = *socket_ctx;
    if (!g)
        return;
    pthread_mutex_lock(&a->guard_mu);
    if (g->prev)
        g->prev->next = g->next;
    else
        a->conns = g->next;
    if (g->next)
        g->next->prev = g->prev;
    pthread_mutex_unlock(&a->guard_mu);
    free(g);
    *socket_ctx = NULL;
}

void api_guard_phase(api_request *r, api_conn_phase phase)
{
    api_conn *g = r->guard;
    if (!g)
        return;
    pthread_mutex_lock(&r->srv->guard_mu);
    g->phase = phase;
    g->since = sh_time_mono();
    g->body_mark = g->body;
    pthread_mutex_unlock(&r->srv->guard_mu);
}

void api_guard_body(api_request *r, uint64_t n)
{
    api_conn *g = r->guard;
    if (!g)
        return;
    pthread_mutex_lock(&r->srv->guard_mu);
    g->body += n;
    pthread_mutex_unlock(&r->srv->guard_mu);
}

void api_guard_request_done(api_server *a, api_conn *g)
{
    if (!g)
        return;
    pthread_mutex_lock(&a->guard_mu);
    g->phase = API_CONN_HEAD;
    g->since = sh_time_mono();
    g->body = g->body_mark = 0;
    pthread_mutex_unlock(&a->guard_mu);
}

// Under guard_mu: whether g is late now, and why.
static const char *late(const api_server *a, api_conn *g, double now)
{
    double age = now - g->since;
    if (g->cut)
        return NULL;
    if (g->phase == API_CONN_HEAD && a->cfg.head_timeout > 0 &&
        age > a->cfg.head_timeout)
        return "head";
    if (g->phase == API_CONN_BODY && a->cfg.min_body_rate > 0 &&
        age >= RATE_WINDOW) {
        uint64_t got = g->body - g->body_mark;
        if ((double)got < (double)a->cfg.min_body_rate * age)
            return "body";
        g->since = now; // kept up: a new window
        g->body_mark = g->body;
    }
    return NULL;
}

static void *reaper_main(void *arg)
{
    api_server *a = arg;
    pthread_mutex_lock(&a->guard_mu);
    while (!a->guard_stop) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += REAP_EVERY_MS * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&a->guard_cv, &a->guard_mu, &until);
        double now = sh_time_mono();
        for (api_conn *g = a->conns; g && !a->guard_stop; g = g->next) {
            const char *why = late(a, g, now);
            if (!why)
                continue;
            g->cut = true;
            shutdown(g->fd, SHUT_RDWR);
            atomic_fetch_add(why[0] == 'h' ? &a->cut_head : &a->cut_body, 1);
            SH_DEBUG("connection closed by the guard", "why",
                     why[0] == 'h' ? "request head too slow"
                                   : "request body too slow");
        }
    }
    pthread_mutex_unlock(&a->guard_mu);
    return NULL;
}

int api_guard_start(api_server *a, sh_diag *d)
{
    if (pthread_create(&a->reaper, NULL, reaper_main, a) != 0)
        return sh_diag_set(d, SH_ENOMEM, "", "cannot start the reaper thread");
    a->reaper_running = true;
    return 0;
}

void api_guard_stop(api_server *a)
{
    if (!a->reaper_running)
        return;
    pthread_mutex_lock(&a->guard_mu);
    a->guard_stop = true;
    pthread_cond_broadcast(&a->guard_cv);
    pthread_mutex_unlock(&a->guard_mu);
    pthread_join(a->reaper, NULL);
    a->reaper_running = false;
}
