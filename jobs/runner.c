// runner.c: the loop thread, scheduling, progress and the end of jobs.
#include "jobs/jobs.h"

#include "jobs/jobs_int.h"

#include "common/log.h"
#include "common/util.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

// --- progress, read by API threads

static json_t *progress_json(const job_run *run)
{
    const job_progress *p = &run->progress;
    double elapsed = sh_time_mono() - run->started;
    json_t *eta = p->fraction > 0.01 && p->fraction < 1
                      ? json_real(elapsed * (1 - p->fraction) / p->fraction)
                      : json_null();
    json_t *j = json_pack(
        "{s:f, s:s, s:I, s:I, s:I, s:I, s:o}", "fraction", p->fraction, "phase",
        p->phase, "step", (json_int_t)p->step, "steps", (json_int_t)p->steps,
        "bytes_done", (json_int_t)p->bytes_done, "bytes_total",
        (json_int_t)p->bytes_total, "eta_seconds", eta);
    json_object_set_new(j, "tensor",
                        p->tensor[0] ? json_string(p->tensor) : json_null());
    json_object_set_new(j, "stage",
                        p->stage[0] ? json_string(p->stage) : json_null());
    if (p->estimate > 0)
        json_object_set_new(j, "estimate_seconds", json_real(p->estimate));
    return j;
}

json_t *job_runner_progress(job_runner *r, const char *id)
{
    json_t *j = NULL;
    pthread_mutex_lock(&r->mu);
    for (job_run *run = r->running; run; run = run->next) {
        if (strcmp(run->id, id) == 0) {
            pthread_mutex_lock(&run->mu);
            j = progress_json(run);
            pthread_mutex_unlock(&run->mu);
            break;
        }
    }
    pthread_mutex_unlock(&r->mu);
    return j;
}

bool job_runner_cancel(job_runner *r, const char *id)
{
    bool found = false;
    pthread_mutex_lock(&r->mu);
    for (job_run *run = r->running; run; run = run->next) {
        if (strcmp(run->id, id) == 0) {
            int none = JOB_CANCEL_NONE;
            atomic_compare_exchange_strong(&run->cancel, &none,
                                           JOB_CANCEL_USER);
            found = true;
        }
    }
    pthread_mutex_unlock(&r->mu);
    return found;
}

void job_runner_stats(job_runner *r, job_stats *out)
{
    pthread_mutex_lock(&r->mu);
    out->busy = r->busy;
    out->workers = r->cfg.workers;
    out->finished = r->finished;
    pthread_mutex_unlock(&r->mu);
}

void job_runner_set_hooks(job_runner *r, const job_runner_hooks *h)
{
    pthread_mutex_lock(&r->mu);
    r->hooks = *h;
    pthread_mutex_unlock(&r->mu);
}

void job_runner_on_end(job_runner *r, job_end_fn fn, void *ctx)
{
    pthread_mutex_lock(&r->mu);
    r->on_end = fn;
    r->on_end_ctx = ctx;
    pthread_mutex_unlock(&r->mu);
}

// --- the loop thread

static void schedule(job_runner *r);

// Records how a job ended and takes it off the running list.
static void end_run(job_runner *r, job_run *run)
{
    store_job_status end = job_run_record(r, run);
    pthread_mutex_lock(&r->mu);
    for (job_run **p = &r->running; *p; p = &(*p)->next) {
        if (*p == run) {
            *p = run->next;
            break;
        }
    }
    r->busy--;
    r->finished++;
    job_end_fn on_end = r->on_end;
    void *ctx = r->on_end_ctx;
    pthread_mutex_unlock(&r->mu);
    if (on_end)
        on_end(ctx, run->method, end, sh_time_mono() - run->started);
    job_run_free(run);
}

static void after_work(uv_work_t *req, int status)
{
    (void)status;
    job_run *run = req->data;
    job_runner *r = run->r;
    end_run(r, run);
    schedule(r);
}

static void work(uv_work_t *req) { job_run_execute(req->data); }

// Claims queued jobs while a worker is free.
static void schedule(job_runner *r)
{
    for (;;) {
        pthread_mutex_lock(&r->mu);
        bool room = !r->stopping && r->busy < r->cfg.workers;
        pthread_mutex_unlock(&r->mu);
        if (!room)
            return;
        char id[64];
        store_conn *c = store_conn_acquire(r->s);
        int rc = store_job_claim(c, id, sizeof id);
        store_conn_release(r->s, c);
        if (rc != 0)
            return; // none queued, or the database said why in the log
        pthread_mutex_lock(&r->mu);
        job_runner_hooks hooks = r->hooks;
        pthread_mutex_unlock(&r->mu);
        if (hooks.claimed)
            hooks.claimed(hooks.ctx, r, id);
        job_run *run = job_run_new(r, id);
        if (!run) {
            SH_ERROR("out of memory starting a job", "job", id);
            return;
        }
        pthread_mutex_lock(&r->mu);
        run->next = r->running;
        r->running = run;
        r->busy++;
        pthread_mutex_unlock(&r->mu);
        // A cancel that came after the claim but before the job was in
        // the list found nothing to stop; the row kept it. From here on
        // job_runner_cancel finds the job, so one look is enough.
        bool asked = false;
        c = store_conn_acquire(r->s);
        int crc = store_job_cancel_requested(c, id, &asked);
        if (crc != 0)
            SH_WARN("cannot read whether a job was cancelled; it runs", "job",
                    id, "error", sh_strerror(crc));
        if (crc == 0 && asked) {
            int none = JOB_CANCEL_NONE;
            atomic_compare_exchange_strong(&run->cancel, &none,
                                           JOB_CANCEL_USER);
        }
        store_conn_release(r->s, c);
        if (hooks.listed)
            hooks.listed(hooks.ctx, r, id);
        SH_INFO("job started", "job", id);
        run->req.data = run;
        int uv = uv_queue_work(&r->loop, &run->req, work, after_work);
        if (uv != 0) {
            // The pool refused it: the job fails saying so, rather than
            // staying `running` with nobody to run it.
            SH_ERROR("cannot start a job", "job", id, "uv", uv_strerror(uv));
            run->rc = sh_diag_set(&run->d, SH_EIO, "",
                                  "the worker pool refused the job: %s",
                                  uv_strerror(uv));
            end_run(r, run);
            return;
        }
    }
}

static void on_wake(uv_async_t *a) { schedule(a->data); }

// Twice a second: running jobs' progress to SQLite, and a look at the
// queue (a wake-up may have come while every worker was busy).
static void on_tick(uv_timer_t *t)
{
    job_runner *r = t->data;
    pthread_mutex_lock(&r->mu);
    size_t n = 0;
    for (job_run *run = r->running; run; run = run->next)
        n++;
    char(*ids)[64] = calloc(n ? n : 1, sizeof *ids);
    json_t **progress = calloc(n ? n : 1, sizeof *progress);
    size_t k = 0;
    for (job_run *run = r->running; run && ids && progress; run = run->next) {
        pthread_mutex_lock(&run->mu);
        if (run->progress_dirty) {
            run->progress_dirty = false;
            snprintf(ids[k], sizeof ids[k], "%s", run->id);
            progress[k++] = progress_json(run);
        }
        pthread_mutex_unlock(&run->mu);
    }
    pthread_mutex_unlock(&r->mu);
    if (k) {
        store_conn *c = store_conn_acquire(r->s);
        for (size_t i = 0; i < k; i++)
            store_job_progress(c, ids[i], progress[i]);
        store_conn_release(r->s, c);
    }
    for (size_t i = 0; i < k; i++)
        json_decref(progress[i]);
    free(ids);
    free(progress);
    schedule(r);
}

static void on_stop(uv_async_t *a)
{
    job_runner *r = a->data;
    uv_close((uv_handle_t *)&r->wake, NULL);
    uv_close((uv_handle_t *)&r->stop, NULL);
    uv_timer_stop(&r->tick);
    uv_close((uv_handle_t *)&r->tick, NULL);
}

static void *loop_main(void *arg)
{
    job_runner *r = arg;
    uv_run(&r->loop, UV_RUN_DEFAULT);
    return NULL;
}

int job_runner_start(job_runner **out, store *s, const job_config *cfg,
                     sh_diag *d)
{
    job_runner *r = calloc(1, sizeof *r);
    if (!r)
        return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    r->s = s;
    r->cfg = *cfg;
    if (r->cfg.workers < 1)
        r->cfg.workers = 1;
    if (r->cfg.max_attempts < 1)
        r->cfg.max_attempts = JOB_MAX_ATTEMPTS;
    int requeued = 0, failed = 0;
    if (store_jobs_recover(s, r->cfg.max_attempts, &requeued, &failed) != 0) {
        free(r);
        return sh_diag_set(d, SH_EDB, "", "cannot recover interrupted jobs");
    }
    if (requeued || failed) {
        char a[32], b[32];
        SH_WARN("jobs interrupted by a stop were recovered", "requeued",
                sh_log_num(a, requeued), "failed", sh_log_num(b, failed));
    }
    pthread_mutex_init(&r->mu, NULL);
    uv_loop_init(&r->loop);
    uv_async_init(&r->loop, &r->wake, on_wake);
    uv_async_init(&r->loop, &r->stop, on_stop);
    uv_timer_init(&r->loop, &r->tick);
    r->wake.data = r->stop.data = r->tick.data = r;
    uv_timer_start(&r->tick, on_tick, 500, 500);
    if (pthread_create(&r->thread, NULL, loop_main, r) != 0) {
        uv_close((uv_handle_t *)&r->wake, NULL);
        uv_close((uv_handle_t *)&r->stop, NULL);
        uv_close((uv_handle_t *)&r->tick, NULL);
        uv_run(&r->loop, UV_RUN_DEFAULT);
        uv_loop_close(&r->loop);
        pthread_mutex_destroy(&r->mu);
        free(r);
        return sh_diag_set(d, SH_ENOMEM, "", "cannot start the job thread");
    }
    *out = r;
    job_runner_wake(r); // recovered jobs wait in the queue
    return 0;
}

void job_runner_wake(job_runner *r) { uv_async_send(&r->wake); }

static int busy_now(job_runner *r)
{
    pthread_mutex_lock(&r->mu);
    int n = r->busy;
    pthread_mutex_unlock(&r->mu);
    return n;
}

void job_runner_stop(job_runner *r, double grace_seconds)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->mu);
    r->stopping = true;
    pthread_mutex_unlock(&r->mu);
    double until = sh_time_mono() + grace_seconds;
    while (busy_now(r) > 0 && sh_time_mono() < until)
        usleep(20000);
    if (busy_now(r) > 0) {
        // Out of time: running jobs stop at their next check and go back
        // to the queue, to run again after the restart.
        pthread_mutex_lock(&r->mu);
        // A job a user cancelled stays cancelled.
        for (job_run *run = r->running; run; run = run->next) {
            int none = JOB_CANCEL_NONE;
            if (atomic_compare_exchange_strong(&run->cancel, &none,
                                               JOB_CANCEL_SHUTDOWN))
                SH_INFO("job put back in the queue", "job", run->id);
        }
        pthread_mutex_unlock(&r->mu);
        while (busy_now(r) > 0)
            usleep(20000);
    }
    uv_async_send(&r->stop);
    pthread_join(r->thread, NULL);
    uv_loop_close(&r->loop);
    pthread_mutex_destroy(&r->mu);
    free(r);
}
