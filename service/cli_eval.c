// cli_eval.c: `shears eval --model PATH --evaluation FILE [--json]`: the
// metric of any model the engine can run (perplexity or accuracy).
#include "service/cli.h"

#include "common/util.h"
#include "engine/engine.h"
#include "engine/nets/net.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int svc_cmd_eval(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},
        {"evaluation", required_argument, 0, 'e'},
        {"samples", required_argument, 0, 's'},
        {"threads", required_argument, 0, 't'},
        {"json", no_argument, 0, 'j'},
        {"no-speed", no_argument, 0, 'n'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *model = NULL, *eval = NULL;
    uint64_t samples = 0, threads = 0;
    bool as_json = false, speed = true;
    int c;
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 'e': eval = optarg; break;
        case 'j': as_json = true; break;
        case 'n': speed = false; break;
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
            puts("usage: shears eval --model PATH --evaluation FILE "
                 "[--samples N] [--threads N] [--json] [--no-speed]\n"
                 "\n"
                 "The metric over the whole set, then the forward pass's "
                 "speed: the first\n"
                 "rows (8 token rows, 4096 samples) through the model, "
                 "weights loaded once,\n"
                 "median of 5 passes after a warm-up (--no-speed skips "
                 "it).");
            return SVC_EXIT_OK;
        default:
            return svc_fail(SVC_EXIT_USAGE,
                            "eval: unknown or incomplete option \"%s\"",
                            argv[optind - 1]);
        }
    }
    if (!model || !eval || optind < argc)
        return svc_fail(SVC_EXIT_USAGE,
                        "usage: shears eval --model PATH --evaluation FILE");
    eng_set_threads(threads ? (int)threads : sh_cpu_count());
    sh_diag d;
    sh_diag_clear(&d);
    eng_model *m = NULL;
    eng_net *net = NULL;
    eng_dataset ds = {0};
    int code = SVC_EXIT_FAIL;
    double t0 = sh_time_mono();
    if (eng_model_open(&m, model, &d) != 0 || eng_net_open(&net, m, &d) != 0) {
        svc_fail_diag(SVC_EXIT_FAIL, model, &d);
        goto out;
    }
    if (eng_dataset_load(&ds, eval, (int64_t)samples, eng_net_vocab(net),
                         eng_net_classes(net), NULL, &d) != 0 ||
        eng_net_check_dataset(net, &ds.info, &d) != 0) {
        svc_fail_diag(SVC_EXIT_FAIL, eval, &d);
        goto out;
    }
    svc_catch_interrupts();
    eng_hooks hooks = {.cancelled = svc_interrupted};
    eng_metric mt;
    if (eng_net_evaluate(net, &ds, &hooks, &mt, &d) != 0) {
        svc_fail_diag(SVC_EXIT_FAIL, "eval", &d);
        goto out;
    }
    double secs = sh_time_mono() - t0, rate = 0;
    if (speed && eng_net_speed(net, &ds, 5, &hooks, &rate, &d) != 0) {
        svc_fail_diag(SVC_EXIT_FAIL, "eval", &d);
        goto out;
    }
    const char *unit = eng_net_input_kind(net) == ENG_DATASET_TOKENS
                           ? "tokens/s"
                           : "samples/s";
    if (as_json) {
        printf("{\"metric\":{\"name\":\"%s\",\"value\":%.6f,\"loss\":%.6f},"
               "\"rows\":%lld,\"seconds\":%.3f",
               mt.name, mt.value, mt.loss, (long long)ds.rows, secs);
        if (speed)
            printf(",\"speed\":{\"value\":%.3f,\"unit\":\"%s\"}", rate, unit);
        printf("}\n");
    } else {
        printf("%s %.4f (loss %.4f) over %lld rows in %.2f s\n", mt.name,
               mt.value, mt.loss, (long long)ds.rows, secs);
        if (speed)
            printf("forward speed %.1f %s (median of 5 passes)\n", rate, unit);
    }
    code = SVC_EXIT_OK;
out:
    eng_dataset_deinit(&ds);
    eng_net_close(net);
    eng_model_close(m);
    return code;
}
