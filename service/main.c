// main.c: the shears binary: one entry, subcommands.
#include "service/cli.h"

#include "common/version.h"
#include "engine/engine.h"

#include <stdio.h>
#include <string.h>

static const char usage_text[] =
    "usage: shears <command> [options]\n"
    "\n"
    "  serve     run the HTTP service\n"
    "  prune     prune a checkpoint into a new folder (batch)\n"
    "  inspect   list a checkpoint's tensors, shapes, dtypes and sparsity;\n"
    "            --system: the CPU, the BLAS kernels and their speed\n"
    "  eval      measure a model on an evaluation dataset\n"
    "  grad      the loss's gradients (and Fisher sums) over calibration "
    "data\n"
    "  decompress  a compressed-tensors folder back to dense safetensors\n"
    "  sensitivity each group of targets pruned alone at each level, "
    "measured\n"
    "  merge     join the shards of a sensitivity sweep\n"
    "  sweep     the accuracy-vs-sparsity trade-off: methods x levels, each\n"
    "            pruned and measured\n"
    "  version   print the version\n"
    "\n"
    "shears <command> --help for a command's options.\n";

typedef struct command {
    const char *name;
    int (*run)(int argc, char **argv);
} command;

static const command commands[] = {
    {"serve", svc_cmd_serve},
    {"prune", svc_cmd_prune},
    {"inspect", svc_cmd_inspect},
    {"eval", svc_cmd_eval},
    {"decompress", svc_cmd_decompress},
    {"sensitivity", svc_cmd_sensitivity},
    {"merge", svc_cmd_merge},
    {"sweep", svc_cmd_sweep},
    {"grad", svc_cmd_grad},
};

int main(int argc, char **argv)
{
    eng_blas_fix_core(argv); // may run the program again, once
    if (argc < 2 || strcmp(argv[1], "--help") == 0 ||
        strcmp(argv[1], "help") == 0) {
        fputs(usage_text, argc < 2 ? stderr : stdout);
        return argc < 2 ? SVC_EXIT_USAGE : SVC_EXIT_OK;
    }
    if (strcmp(argv[1], "version") == 0 || strcmp(argv[1], "--version") == 0) {
        printf("shears %s\n", SH_VERSION);
        return SVC_EXIT_OK;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(argv[1], commands[i].name) == 0)
            return commands[i].run(argc - 1, argv + 1);
    return svc_fail(SVC_EXIT_USAGE,
                    "unknown command \"%s\" (try shears --help)", argv[1]);
}
