// cli_grad.c: `shears grad --model PATH --calibration FILE --out FILE
// [--fisher] [--samples N] [--threads N]`: the gradients of the model's
// loss over a calibration set, written as F32 safetensors for inspection
// (engine.h: eng_gradients). The file is written beside --out and renamed
// into place whole.
#include "service/cli.h"

#include "common/util.h"
#include "engine/engine.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int svc_cmd_grad(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},
        {"calibration", required_argument, 0, 'c'},
        {"out", required_argument, 0, 'o'},
        {"samples", required_argument, 0, 's'},
        {"threads", required_argument, 0, 't'},
        {"fisher", no_argument, 0, 'f'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *model = NULL, *calib = NULL, *out = NULL;
    uint64_t samples = 0, threads = 0;
    bool fisher = false;
    int c;
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 'c': calib = optarg; break;
        case 'o': out = optarg; break;
        case 'f': fisher = true; break;
        case 's':
            if (!svc_parse_u64(optarg, &samples))
                return svc_fail(SVC_EXIT_USAGE,
                                "--samples: \"%s\" is not a count", optarg);
            break;
        case 't':
            if (!svc_parse_u64(optarg, &threads) || threads < 1)
                return svc_fail(SVC_EXIT_USAGE,
                                "--threads: \"%s\" is not a count", optarg);
            break;
        case 'h':
            puts("usage: shears grad --model PATH --calibration FILE --out "
                 "FILE [--fisher]\n"
                 "                   [--samples N] [--threads N]\n"
                 "\n"
                 "The gradient of the mean loss (perplexity's mean NLL, a "
                 "classifier's\n"
                 "cross-entropy) over the calibration rows, for every "
                 "tensor the model reads,\n"
                 "written as F32 under the tensors' names. --fisher adds "
                 "the sum over rows\n"
                 "of each row's gradient squared, under \"fisher.\" and "
                 "the name.");
            return SVC_EXIT_OK;
        default:
            return svc_fail(SVC_EXIT_USAGE,
                            "grad: unknown or incomplete option \"%s\"",
                            argv[optind - 1]);
        }
    }
    if (!model || !calib || !out || optind < argc)
        return svc_fail(SVC_EXIT_USAGE,
                        "usage: shears grad --model PATH --calibration FILE "
                        "--out FILE [--fisher]");
    if (sh_path_exists(out))
        return svc_fail(SVC_EXIT_USAGE, "--out: %s exists; not overwriting",
                        out);
    eng_set_threads(threads ? (int)threads : sh_cpu_count());
    sh_diag d;
    sh_diag_clear(&d);
    eng_model *m = NULL;
    eng_grads g = {0};
    int code = SVC_EXIT_FAIL;
    if (eng_model_open(&m, model, &d) != 0) {
        svc_fail_diag(SVC_EXIT_FAIL, model, &d);
        goto done;
    }
    svc_catch_interrupts();
    eng_hooks hooks = {.cancelled = svc_interrupted};
    char tmp[4096];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.partial", out) >= sizeof tmp) {
        svc_fail(SVC_EXIT_USAGE, "--out: the path is too long");
        goto done;
    }
    unlink(tmp); // an interrupted run's
    if (eng_gradients(m, calib, (int64_t)samples, NULL, fisher, tmp, &hooks, &g,
                      &d) != 0) {
        svc_fail_diag(SVC_EXIT_FAIL, "grad", &d);
        goto done;
    }
    if (rename(tmp, out) != 0) {
        svc_fail(SVC_EXIT_FAIL, "--out %s: %s", out, strerror(errno));
        unlink(tmp);
        goto done;
    }
    printf("gradients over %lld rows (mean loss %.6f) in %.2f s: %s\n",
           (long long)g.rows, g.loss, g.seconds, out);
    code = SVC_EXIT_OK;
done:
    eng_grads_deinit(&g);
    eng_model_close(m);
    return code;
}
