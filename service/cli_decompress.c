// cli_decompress.c: `shears decompress`, a compressed-tensors folder back
// to dense safetensors (the bytes the same job's dense output holds).
#include "service/cli.h"

#include "common/util.h"
#include "engine/engine.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>

static const char usage_text[] =
    "usage: shears decompress --model DIR --out DIR\n"
    "\n"
    "  --model DIR   a folder written with --format compressed-tensors\n"
    "  --out DIR     where the dense folder goes (must not exist, or be "
    "empty)\n"
    "  --no-sync     do not fsync the output\n"
    "\n"
    "Quantized tensors become (q - zero) x scale in their scale's dtype, "
    "sparse ones\n"
    "their values scattered back; config.json loses quantization_config.\n";

int svc_cmd_decompress(int argc, char **argv)
{
    enum { O_MODEL = 1, O_OUT, O_NO_SYNC, O_HELP };
    static const struct option opts[] = {
        {"model", required_argument, 0, O_MODEL},
        {"out", required_argument, 0, O_OUT},
        {"no-sync", no_argument, 0, O_NO_SYNC},
        {"help", no_argument, 0, O_HELP},
        {0, 0, 0, 0},
    };
    const char *model = NULL, *out = NULL;
    bool sync = true;
    int c;
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case O_MODEL: model = optarg; break;
        case O_OUT: out = optarg; break;
        case O_NO_SYNC: sync = false; break;
        case O_HELP: fputs(usage_text, stdout); return SVC_EXIT_OK;
        default:
            return svc_fail(SVC_EXIT_USAGE, "unknown option %s (try --help)",
                            argv[optind - 1]);
        }
    }
    if (optind < argc)
        return svc_fail(SVC_EXIT_USAGE, "unexpected argument \"%s\"",
                        argv[optind]);
    if (!model || !out)
        return svc_fail(SVC_EXIT_USAGE, "--model and --out are required");
    if (svc_out_check(out) != 0)
        return SVC_EXIT_USAGE;
    sh_diag d = {0};
    eng_model *m = NULL;
    if (eng_model_open(&m, model, &d) != 0)
        return svc_fail_diag(SVC_EXIT_FAIL, model, &d);
    char tmp[4096];
    int code = SVC_EXIT_FAIL;
    svc_catch_interrupts();
    eng_hooks hooks = {.cancelled = svc_interrupted};
    eng_options o = {.out_dir = tmp, .sync = sync};
    if (svc_out_begin(out, tmp, sizeof tmp) != 0)
        goto done;
    int rc = eng_decompress(m, &o, &hooks, &d);
    if (rc != 0)
        svc_fail_diag(SVC_EXIT_FAIL, rc == SH_ECANCELED ? "interrupted" : model,
                      &d);
    else if (svc_out_commit(tmp, out, sync) == 0)
        code = SVC_EXIT_OK;
done:
    if (tmp[0])
        sh_rm_rf(tmp);
    eng_model_close(m);
    return code;
}
