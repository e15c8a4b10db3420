// fuzz_spec.c: the job spec parser, its regexes and the plan, on any bytes.
//
// Input byte 0 picks the mode: a JSON job spec (parsed, echoed, parsed
// again to the same echo, then checked against a fixed set of tensors), or
// a bare regex (checked against the rule, compiled, matched against
// names). Neither may crash, leak, or take unbounded steps.
#include "engine/jobspec/regex.h"
#include "engine/jobspec/spec.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

static const char *const names[] = {
    "model.layers.0.self_attn.q_proj.weight",
    "model.layers.11.mlp.down_proj.weight",
    "model.embed_tokens.weight",
    "lm_head.weight",
    "fc1.weight",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab.weight",
};

static void spec_mode(const unsigned char *data, size_t n)
{
    json_t *j = json_loadb((const char *)data, n, JSON_REJECT_DUPLICATES, NULL);
    if (!j)
        return;
    eng_spec s;
    sh_diag d;
    if (eng_spec_parse(&s, j, &d) == 0) {
        json_t *echo = eng_spec_to_json(&s);
        eng_spec s2;
        int rc = eng_spec_parse(&s2, echo, &d);
        assert(rc == 0);
        json_t *echo2 = eng_spec_to_json(&s2);
        assert(json_equal(echo, echo2));
        eng_tensor_info ts[6];
        const eng_tensor_info *ptrs[6];
        for (int i = 0; i < 6; i++) {
            ts[i] = (eng_tensor_info){.name = (char *)names[i],
                                      .dtype = ENG_DTYPE_F32,
                                      .ndim = 2,
                                      .shape = {64, 64},
                                      .numel = 4096};
            ptrs[i] = &ts[i];
        }
        eng_spec_check(&s, ptrs, 6, "llama", true, 0, &d);
        for (int i = 0; i < 6; i++) {
            eng_share p;
            eng_spec_share(&s, &ts[i], &p);
            assert(!p.target || (p.sparsity >= 0 && p.sparsity <= 1));
        }
        json_decref(echo);
        json_decref(echo2);
        eng_spec_deinit(&s2);
        eng_spec_deinit(&s);
    }
    json_decref(j);
}

static void regex_mode(const unsigned char *data, size_t n)
{
    char text[ENG_REGEX_MAX_LEN + 2];
    if (n > sizeof text - 1)
        n = sizeof text - 1;
    memcpy(text, data, n);
    text[n] = '\0';
    eng_regex r;
    sh_diag d;
    if (eng_regex_compile(&r, text, "targets[0]", &d) != 0) {
        assert(d.code == SH_ESPEC || d.code == SH_ENOMEM);
        return;
    }
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        int m = eng_regex_match(&r, names[i]);
        assert(m == 0 || m == 1 || m == SH_ETOOBIG);
    }
    eng_regex_free(&r);
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t n)
{
    if (n < 1)
        return 0;
    if (data[0] & 1)
        regex_mode(data + 1, n - 1);
    else
        spec_mode(data + 1, n - 1);
    return 0;
}
