// main.c: the one test runner. `run-tests unit|integration|all [suite]`;
// `-suite` runs every suite of the kind but that one.
//
// Unit suites exercise one module in-process; integration suites start the
// real binary. check runs every test in a fork with a timeout; the runner
// fails when any test fails or when no test ran at all (a misspelled
// filter must not pass silently).
#include "tests/helpers.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct suite_entry {
    const char *name;
    Suite *(*make)(void);
    bool integration;
} suite_entry;

static const suite_entry suites[] = {
    {"common", suite_common, false},
    {"dtype", suite_dtype, false},
    {"safetensors", suite_safetensors, false},
    {"spec", suite_spec, false},
    {"mask", suite_mask, false},
    {"prune", suite_prune, false},
    {"net", suite_net, false},
    {"grad", suite_grad, false},
    {"headers", suite_headers, false},
    {"tar", suite_tar, false},
    {"faults", suite_faults, false},
    {"store", suite_store, false},
    {"jobs", suite_jobs, false},
    {"methods", suite_methods, true},
    {"cli", suite_cli, true},
    {"api", suite_api, true},
    {"api_checkpoints", suite_api_checkpoints, true},
    {"api_datasets", suite_api_datasets, true},
    {"api_jobs", suite_api_jobs, true},
    {"api_artifacts", suite_api_artifacts, true},
    {"durability", suite_durability, true},
    {"ops", suite_ops, true},
    {"limits", suite_limits, true},
    {"structure", suite_structure, true},
    {"formats", suite_formats, true},
    {"alloc", suite_alloc, true},
    {"criteria", suite_criteria, true},
};

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "all";
    const char *only = argc > 2 ? argv[2] : NULL;
    bool unit = strcmp(mode, "unit") == 0 || strcmp(mode, "all") == 0;
    bool integ = strcmp(mode, "integration") == 0 || strcmp(mode, "all") == 0;
    if (!unit && !integ) {
        fprintf(stderr,
                "usage: run-tests unit|integration|all [suite|-suite]\n");
        return 2;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    SRunner *sr = NULL;
    for (size_t i = 0; i < sizeof suites / sizeof suites[0]; i++) {
        const suite_entry *e = &suites[i];
        bool skip = only && only[0] == '-';
        if ((e->integration ? !integ : !unit) ||
            (only && !skip && strcmp(only, e->name) != 0) ||
            (skip && strcmp(only + 1, e->name) == 0))
            continue;
        if (!sr)
            sr = srunner_create(e->make());
        else
            srunner_add_suite(sr, e->make());
    }
    if (!sr) {
        fprintf(stderr, "run-tests: no suite matches \"%s\"\n",
                only ? only : mode);
        return 2;
    }
    srunner_run_all(sr, CK_NORMAL);
    int ran = srunner_ntests_run(sr);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    if (ran == 0) {
        fprintf(stderr, "run-tests: no test ran\n");
        return 1;
    }
    return failed == 0 ? 0 : 1;
}
