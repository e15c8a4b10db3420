// stubs.c: subcommands still to come.
#include "service/cli.h"

int svc_cmd_eval(int argc, char **argv)
{
    (void)argc, (void)argv;
    return svc_fail(SVC_EXIT_FAIL, "eval: not built yet");
}
