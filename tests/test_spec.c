// test_spec.c: the job spec: defaults, every field's errors, planning.
#include "tests/helpers.h"

#include "engine/jobspec/spec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int parse(const char *text, eng_spec *s, sh_diag *d)
{
    json_error_t je;
    json_t *j = json_loads(text, JSON_ALLOW_NUL, &je);
    ck_assert_msg(j != NULL, "bad test JSON: %s", text);
    sh_diag_clear(d);
    int rc = eng_spec_parse(s, j, d);
    json_decref(j);
    return rc;
}

// Defaults are filled in and echoed; the echo parses to the same spec.
START_TEST(test_defaults_and_echo)
{
    eng_spec s;
    sh_diag d;
    ck_assert_int_eq(parse("{\"method\":\"magnitude\"}", &s, &d), 0);
    ck_assert_double_eq(s.sparsity, 0.5);
    ck_assert_int_eq(s.pattern.kind, ENG_PATTERN_UNSTRUCTURED);
    ck_assert_int_eq(s.scope, ENG_SCOPE_LAYER);
    json_t *echo = eng_spec_to_json(&s);
    ck_assert_str_eq(json_string_value(json_object_get(echo, "pattern")),
                     "unstructured");
    ck_assert(json_is_integer(json_object_get(echo, "seed")));
    eng_spec s2;
    sh_diag_clear(&d);
    ck_assert_int_eq(eng_spec_parse(&s2, echo, &d), 0);
    ck_assert_uint_eq(s2.seed, s.seed);
    json_t *echo2 = eng_spec_to_json(&s2);
    ck_assert(json_equal(echo, echo2));
    json_decref(echo);
    json_decref(echo2);
    eng_spec_deinit(&s);
    eng_spec_deinit(&s2);
}
END_TEST

// N:M implies the sparsity; a conflicting one is an error naming it.
START_TEST(test_nm_sparsity)
{
    eng_spec s;
    sh_diag d;
    ck_assert_int_eq(
        parse("{\"method\":\"magnitude\",\"pattern\":\"2:4\"}", &s, &d), 0);
    ck_assert_double_eq(s.sparsity, 0.5);
    ck_assert_int_eq(s.pattern.n, 2);
    ck_assert_int_eq(s.pattern.m, 4);
    eng_spec_deinit(&s);
    ck_assert_int_eq(
        parse("{\"method\":\"magnitude\",\"pattern\":\"1:4\"}", &s, &d), 0);
    ck_assert_double_eq(s.sparsity, 0.75);
    eng_spec_deinit(&s);
    ck_assert_int_eq(parse("{\"method\":\"magnitude\",\"pattern\":\"2:4\","
                           "\"sparsity\":0.7}",
                           &s, &d),
                     SH_ESPEC);
    ck_assert_str_eq(d.field, "sparsity");
    ck_assert_ptr_nonnull(strstr(d.msg, "keeps 2 of every 4"));
}
END_TEST

typedef struct bad_spec {
    const char *json;
    const char *field;
    const char *words;
} bad_spec;

static const bad_spec bad_specs[] = {
    {"[]", "", "must be a JSON object"},
    {"{}", "method", "method is required"},
    {"{\"method\":\"prune-harder\"}", "method", "is not one of magnitude"},
    {"{\"method\":3}", "method", "must be a string"},
    {"{\"method\":\"magnitude\",\"sparsity\":1.5}", "sparsity",
     "must lie between 0 and 1"},
    {"{\"method\":\"magnitude\",\"sparsity\":-0.1}", "sparsity",
     "must lie between 0 and 1"},
    {"{\"method\":\"magnitude\",\"sparsity\":\"half\"}", "sparsity",
     "must be a number"},
    {"{\"method\":\"magnitude\",\"pattern\":\"4:2\"}", "pattern",
     "0 < N < M <= 32"},
    {"{\"method\":\"magnitude\",\"pattern\":\"2:64\"}", "pattern",
     "0 < N < M <= 32"},
    {"{\"method\":\"magnitude\",\"pattern\":\"diagonal\"}", "pattern",
     "is not one of unstructured, rows"},
    {"{\"method\":\"magnitude\",\"scope\":\"planet\"}", "scope",
     "is not one of layer, global"},
    {"{\"method\":\"magnitude\",\"bogus\":1}", "bogus", "unknown field"},
    {"{\"method\":\"magnitude\",\"targets\":\"fc1\"}", "targets",
     "must be an array"},
    {"{\"method\":\"magnitude\",\"targets\":[\"(\"]}", "targets[0]",
     "is not an accepted regex"},
    {"{\"method\":\"magnitude\",\"ignore\":[\"\"]}", "ignore[0]",
     "non-empty regex"},
    {"{\"method\":\"magnitude\",\"overrides\":[{\"match\":\"a\"}]}",
     "overrides[0]", "needs a sparsity, a pattern or quantize"},
    {"{\"method\":\"magnitude\",\"overrides\":[{\"match\":\"a\",\"sparsity\":"
     "2}]}",
     "overrides[0].sparsity", "between 0 and 1"},
    {"{\"method\":\"magnitude\",\"overrides\":[{\"match\":\"a\",\"x\":1}]}",
     "overrides[0].x", "unknown field"},
    {"{\"method\":\"magnitude\",\"seed\":-1}", "seed", "non-negative integer"},
    {"{\"method\":\"magnitude\",\"calibration\":{\"samples\":4}}",
     "calibration.dataset", "is required"},
    {"{\"method\":\"magnitude\",\"calibration\":{\"dataset\":\"d\","
     "\"samples\":0}}",
     "calibration.samples", "from 1 to"},
    {"{\"method\":\"magnitude\",\"calibration\":{\"dataset\":\"d\",\"x\":1}}",
     "calibration.x", "unknown field"},
    {"{\"method\":\"magnitude\",\"evaluation\":{}}", "evaluation.dataset",
     "is required"},
    {"{\"method\":\"magnitude\",\"output\":{\"format\":\"zip\"}}",
     "output.format", "is not one of dense"},
    {"{\"method\":\"magnitude\",\"scope\":\"global\",\"pattern\":\"2:4\"}",
     "scope", "needs pattern \"unstructured\""},
    {"{\"method\":\"wanda\"}", "calibration", "needs calibration data"},
    {"{\"method\":\"wanda\",\"scope\":\"global\",\"calibration\":{"
     "\"dataset\":\"d\"}}",
     "scope", "not defined for method wanda"},
    {"{\"method\":\"sparsegpt\",\"calibration\":{\"dataset\":\"d\"},"
     "\"sparsegpt\":{\"blocksize\":0}}",
     "sparsegpt.blocksize", "from 1 to 4096"},
    // Quantization: bits 2..8, one grid per row, inside SparseGPT.
    {"{\"method\":\"sparsegpt\",\"calibration\":{\"dataset\":\"d\"},"
     "\"quantize\":{\"bits\":9}}",
     "quantize.bits", "from 2 to 8"},
    {"{\"method\":\"sparsegpt\",\"calibration\":{\"dataset\":\"d\"},"
     "\"quantize\":{\"bits\":1}}",
     "quantize.bits", "from 2 to 8"},
    {"{\"method\":\"sparsegpt\",\"calibration\":{\"dataset\":\"d\"},"
     "\"quantize\":{}}",
     "quantize.bits", "from 2 to 8"},
    {"{\"method\":\"sparsegpt\",\"calibration\":{\"dataset\":\"d\"},"
     "\"quantize\":{\"bits\":4,\"group_size\":-128}}",
     "quantize.group_size", "from 0"},
    {"{\"method\":\"sparsegpt\",\"calibration\":{\"dataset\":\"d\"},"
     "\"quantize\":{\"bits\":4,\"method\":\"rtn\"}}",
     "quantize.method", "quantizes inside its own update"},
    {"{\"method\":\"magnitude\","
     "\"quantize\":{\"bits\":4,\"method\":\"gptq\"}}",
     "quantize.method", "gptq needs calibration data"},
    {"{\"method\":\"wanda\",\"calibration\":{\"dataset\":\"d\"},"
     "\"quantize\":{\"bits\":4,\"method\":\"awq\"}}",
     "quantize.method", "not one of gptq, rtn"},
    {"{\"method\":\"sparsegpt\",\"calibration\":{\"dataset\":\"d\"},"
     "\"quantize\":{\"bits\":4,\"symmetric\":1}}",
     "quantize.symmetric", "true or false"},
    {"{\"method\":\"magnitude\",\"overrides\":[{\"match\":\"a\","
     "\"quantize\":{\"bits\":1}}]}",
     "overrides[0].quantize.bits", "from 2 to 8"},
    {"{\"method\":\"magnitude\",\"overrides\":[{\"match\":\"a\","
     "\"quantize\":{\"bits\":4,\"method\":\"gptq\"}}]}",
     "overrides[0].quantize.method", "gptq needs calibration"},
    {"{\"method\":\"magnitude\",\"output\":{\"masks\":1}}", "output.masks",
     "true or false"},
    {"{\"method\":\"magnitude\",\"preserve_zeros\":\"yes\"}", "preserve_zeros",
     "true or false"},
    {"{\"method\":\"magnitude\",\"output\":{\"masks\":true},"
     "\"structure\":{\"channels\":0.5}}",
     "output.masks", "no mask"},
    {"{\"method\":\"magnitude\",\"calibration\":{\"dataset\":\"d\"},"
     "\"quantize\":{\"bits\":4},\"structure\":{\"channels\":0.5}}",
     "quantize", "structure"},
    {"{\"method\":\"sparsegpt\",\"quantize\":{\"bits\":4}}", "calibration",
     "needs calibration data"},
    // Patterns: only digits around the colon.
    {"{\"method\":\"magnitude\",\"pattern\":\" 2:4\"}", "pattern",
     "is not one of"},
    {"{\"method\":\"magnitude\",\"pattern\":\"2:+4\"}", "pattern",
     "is not one of"},
    {"{\"method\":\"magnitude\",\"pattern\":\"+2:4\"}", "pattern",
     "is not one of"},
    {"{\"method\":\"magnitude\",\"pattern\":\"2:4 \"}", "pattern",
     "is not one of"},
    {"{\"method\":\"magnitude\",\"pattern\":\"2:-4\"}", "pattern",
     "is not one of"},
    {"{\"method\":\"magnitude\",\"pattern\":\"2:0004\"}", "pattern",
     "is not one of"},
    // Regexes outside the rule of engine/regex.h, in every list.
    {"{\"method\":\"magnitude\",\"targets\":[\"(a+)+$\"]}", "targets[0]",
     "nested repetition"},
    {"{\"method\":\"magnitude\",\"targets\":[\"x\",\"(a|aa)*b\"]}",
     "targets[1]", "nested repetition"},
    {"{\"method\":\"magnitude\",\"ignore\":[\"((ab)*c)*\"]}", "ignore[0]",
     "nested repetition"},
    {"{\"method\":\"magnitude\",\"overrides\":[{\"match\":\"(.*){2,9}\","
     "\"sparsity\":0.3}]}",
     "overrides[0].match", "nested repetition"},
    {"{\"method\":\"magnitude\",\"targets\":[\"a**\"]}", "targets[0]",
     "right after another"},
    {"{\"method\":\"magnitude\",\"targets\":[\"a+?\"]}", "targets[0]",
     "right after another"},
    {"{\"method\":\"magnitude\",\"targets\":[\"a{2}{3}\"]}", "targets[0]",
     "right after another"},
    {"{\"method\":\"magnitude\",\"targets\":[\"a{1000}\"]}", "targets[0]",
     "n <= m <= 100"},
    {"{\"method\":\"magnitude\",\"targets\":[\"a{3,2}\"]}", "targets[0]",
     "n <= m <= 100"},
    {"{\"method\":\"magnitude\",\"targets\":[\"(a)\\\\1\"]}", "targets[0]",
     "no backreferences"},
    {"{\"method\":\"magnitude\",\"targets\":[\"(?=a)\"]}", "targets[0]",
     "lookaround"},
    {"{\"method\":\"magnitude\",\"targets\":[\"((((((((((a))))))))))\"]}",
     "targets[0]", "more than 8 deep"},
    {"{\"method\":\"magnitude\",\"targets\":[\"a\\u0000b\"]}", "targets[0]",
     "NUL"},
    {"{\"method\":\"magnitude\",\"targets\":[\"a\\tb\"]}", "targets[0]",
     "control character"},
    {"{\"method\":\"magnitude\",\"targets\":[\"[[.a.]]\"]}", "targets[0]",
     "collating element"},
    {"{\"method\":\"magnitude\",\"targets\":[\"^*a\"]}", "targets[0]",
     "repeats an anchor"},
    {"{\"method\":\"magnitude\",\"targets\":[\"[a-\"]}", "targets[0]",
     "unclosed ["},
    {"{\"method\":\"magnitude\",\"targets\":[\"[z-a]\"]}", "targets[0]",
     "is not an accepted regex"},
    {"{\"method\":\"magnitude\",\"targets\":[\"x{\"]}", "targets[0]",
     "write \\{ for the character"},
    {"{\"method\":\"magnitude\",\"targets\":["
     "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
     "a\"]}",
     "targets[0]", "at most 256"},
    {"{\"method\":\"magnitude\",\"kind\":\"sensitivity\"}", "sensitivity",
     "needs \"sensitivity\""},
    {"{\"method\":\"magnitude\",\"kind\":\"sensitivity\",\"sensitivity\":"
     "{\"levels\":[]}}",
     "sensitivity.levels", "1 to 32"},
    {"{\"method\":\"magnitude\",\"kind\":\"sensitivity\",\"sensitivity\":"
     "{\"levels\":[0.5,0.5]}}",
     "sensitivity.levels[1]", "must rise"},
    {"{\"method\":\"magnitude\",\"kind\":\"sensitivity\",\"sensitivity\":"
     "{\"levels\":[0.5],\"granularity\":\"layer\"}}",
     "sensitivity.granularity", "not one of tensor, block, type"},
    {"{\"method\":\"magnitude\",\"kind\":\"sensitivity\",\"sensitivity\":"
     "{\"levels\":[0.5]},\"scope\":\"global\"}",
     "scope", "sets each group's sparsity"},
    {"{\"method\":\"magnitude\",\"sweep\":{\"levels\":[0.5]}}", "sweep",
     "belongs to"},
    {"{\"method\":\"magnitude\",\"kind\":\"sweep\",\"sweep\":{}}", "sweep",
     "crosses them"},
    {"{\"method\":\"magnitude\",\"kind\":\"sweep\",\"sweep\":{"
     "\"methods\":[\"magnitude\",\"magnitude\"]}}",
     "sweep.methods[1]", "listed twice"},
    {"{\"method\":\"magnitude\",\"kind\":\"sweep\",\"sweep\":{"
     "\"levels\":[1.5]}}",
     "sweep.levels[0]", "from 0 to 1"},
    {"{\"method\":\"magnitude\",\"kind\":\"sweep\",\"sweep\":{"
     "\"methods\":[\"sparsegpt\"]}}",
     "calibration", "sweep point 0 (sparsegpt"},
    {"{\"method\":\"magnitude\",\"sparsity\":0.5,\"allocation\":{"
     "\"method\":\"sensitivity\",\"from\":\"r.json\",\"max\":0.4}}",
     "allocation.max", "target impossible"},
};

// A sensitivity and a sweep spec echo their kind and their own object,
// and the echo parses to the same; a prune's echo names no kind.
START_TEST(test_kinds_echo)
{
    static const char *const specs[] = {
        "{\"method\":\"magnitude\",\"kind\":\"sensitivity\","
        "\"sensitivity\":{\"levels\":[0.3,0.6],\"granularity\":\"type\"}}",
        "{\"method\":\"magnitude\",\"kind\":\"sweep\",\"sweep\":{"
        "\"methods\":[\"random\",\"magnitude\"],\"levels\":[0,0.5,0.9]}}",
        "{\"method\":\"magnitude\"}"};
    for (int k = 0; k < 3; k++) {
        eng_spec s, t;
        sh_diag d;
        ck_assert_int_eq(parse(specs[k], &s, &d), 0);
        json_t *j = eng_spec_to_json(&s);
        ck_assert_int_eq(eng_spec_parse(&t, j, &d), 0);
        json_t *j2 = eng_spec_to_json(&t);
        ck_assert(json_equal(j, j2));
        ck_assert_int_eq(json_object_get(j, "kind") != NULL, k < 2);
        json_decref(j);
        json_decref(j2);
        if (k == 1) { // methods x levels, in that order
            ck_assert_uint_eq(eng_sweep_points(&s), 6);
            eng_spec p = eng_sweep_point(&s, 4);
            ck_assert_int_eq(p.method, ENG_METHOD_MAGNITUDE);
            ck_assert_double_eq(p.sparsity, 0.5);
            ck_assert_int_eq(p.kind, ENG_KIND_PRUNE);
            ck_assert_int_eq(p.recon, ENG_RECON_OFF);
        }
        eng_spec_deinit(&s);
        eng_spec_deinit(&t);
    }
}
END_TEST

// Every bad spec is refused, naming the field and saying why.
START_TEST(test_bad_spec_named)
{
    const bad_spec *b = &bad_specs[_i];
    eng_spec s;
    sh_diag d;
    int rc = parse(b->json, &s, &d);
    ck_assert_msg(rc == SH_ESPEC, "accepted: %s", b->json);
    ck_assert_msg(strcmp(d.field, b->field) == 0, "%s: field \"%s\" != \"%s\"",
                  b->json, d.field, b->field);
    ck_assert_msg(strstr(d.msg, b->words), "%s: \"%s\" lacks \"%s\"", b->json,
                  d.msg, b->words);
}
END_TEST

static eng_tensor_info tensor(const char *name, eng_dtype dt, int ndim,
                              int64_t a, int64_t b)
{
    eng_tensor_info t = {.name = (char *)name, .dtype = dt, .ndim = ndim};
    t.shape[0] = a;
    t.shape[1] = b;
    t.numel = (uint64_t)a * (ndim > 1 ? (uint64_t)b : 1);
    return t;
}

// The default targets: float .weight of 2+ dims, not embeddings, norms,
// lm_head; targets/ignore/overrides change that.
START_TEST(test_plan_targets)
{
    eng_tensor_info ts[] = {
        tensor("model.layers.0.mlp.up_proj.weight", ENG_DTYPE_BF16, 2, 8, 4),
        tensor("model.embed_tokens.weight", ENG_DTYPE_BF16, 2, 8, 4),
        tensor("lm_head.weight", ENG_DTYPE_BF16, 2, 8, 4),
        tensor("model.layers.0.input_layernorm.weight", ENG_DTYPE_BF16, 1, 4,
               0),
        tensor("model.norm.weight", ENG_DTYPE_F32, 2, 2, 2),
        tensor("fc1.bias", ENG_DTYPE_F32, 1, 4, 0),
        tensor("q.weight", ENG_DTYPE_I8, 2, 8, 4),
        tensor("conv.weight", ENG_DTYPE_F16, 2, 8, 9),
        tensor("transformer.h.0.ln_1.weight", ENG_DTYPE_F32, 2, 2, 2),
    };
    const bool expect[] = {true,  false, false, false, false,
                           false, false, true,  false};
    eng_spec s;
    sh_diag d;
    ck_assert_int_eq(parse("{\"method\":\"magnitude\"}", &s, &d), 0);
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) {
        eng_share p;
        eng_spec_share(&s, &ts[i], &p);
        ck_assert_msg(p.target == expect[i], "%s", ts[i].name);
    }
    eng_spec_deinit(&s);

    ck_assert_int_eq(
        parse("{\"method\":\"magnitude\",\"targets\":[\"bias$\",\"lm_head\"],"
              "\"ignore\":[\"^fc\"],\"overrides\":[{\"match\":\"lm_\","
              "\"sparsity\":0.25},{\"match\":\"head\",\"sparsity\":0.9}]}",
              &s, &d),
        0);
    eng_share p;
    eng_spec_share(&s, &ts[5], &p); // fc1.bias: matched, then ignored
    ck_assert(!p.target);
    eng_spec_share(&s, &ts[2], &p); // lm_head: the first override wins
    ck_assert(p.target);
    ck_assert_double_eq(p.sparsity, 0.25);
    ck_assert_int_eq(p.override_index, 0);
    eng_spec_share(&s, &ts[6], &p); // int8: never a target
    ck_assert(!p.target);
    eng_spec_deinit(&s);
}
END_TEST

// Checks against a model: N:M must divide the input dimension (the error
// names the tensor); some tensor must be a target.
START_TEST(test_check_against_tensors)
{
    eng_tensor_info a = tensor("a.weight", ENG_DTYPE_F32, 2, 4, 8);
    eng_tensor_info b = tensor("b.weight", ENG_DTYPE_F32, 2, 4, 6);
    const eng_tensor_info *ts[2] = {&a, &b};
    eng_spec s;
    sh_diag d;
    ck_assert_int_eq(
        parse("{\"method\":\"magnitude\",\"pattern\":\"2:4\"}", &s, &d), 0);
    ck_assert_int_eq(eng_spec_check(&s, ts, 2, "unknown", false, 0, &d),
                     SH_ESPEC);
    ck_assert_str_eq(d.field, "pattern");
    ck_assert_ptr_nonnull(strstr(d.msg, "\"b.weight\" has 6"));
    ck_assert_int_eq(eng_spec_check(&s, ts, 1, "unknown", false, 0, &d), 0);
    eng_spec_deinit(&s);
    ck_assert_int_eq(
        parse("{\"method\":\"magnitude\",\"targets\":[\"nothing\"]}", &s, &d),
        0);
    ck_assert_int_eq(eng_spec_check(&s, ts, 2, "unknown", false, 0, &d),
                     SH_ESPEC);
    ck_assert_str_eq(d.field, "targets");
    eng_spec_deinit(&s);
    // An override that switches one tensor to another pattern.
    ck_assert_int_eq(parse("{\"method\":\"magnitude\",\"pattern\":\"2:4\","
                           "\"overrides\":[{\"match\":\"^b\",\"pattern\":"
                           "\"unstructured\",\"sparsity\":0.3}]}",
                           &s, &d),
                     0);
    ck_assert_int_eq(eng_spec_check(&s, ts, 2, "unknown", false, 0, &d), 0);
    eng_share p;
    eng_spec_share(&s, &b, &p);
    ck_assert_int_eq(p.pattern.kind, ENG_PATTERN_UNSTRUCTURED);
    ck_assert_double_eq(p.sparsity, 0.3);
    eng_spec_deinit(&s);
}
END_TEST

// What the rule accepts compiles and searches as POSIX extended would:
// anywhere in the name, anchors at the ends.
START_TEST(test_regex_accepted)
{
    static const struct {
        const char *re, *name;
        int match;
    } cases[] = {
        {"mlp\\.(gate|up)_proj", "model.layers.3.mlp.up_proj.weight", 1},
        {"mlp\\.(gate|up)_proj", "model.layers.3.mlp.down_proj.weight", 0},
        {"^model\\.layers\\.[0-9]+\\.", "model.layers.12.x", 1},
        {"^layers", "model.layers.0", 0},
        {"weight$", "a.weight", 1},
        {"weight$", "a.weight\n", 0},
        {"[[:digit:]]{2}", "layer.10.w", 1},
        {"\\d\\.self_attn", "layers.7.self_attn.q", 1},
        {"(q|k|v)_proj", "v_proj", 1},
        {"(ab){2,3}c", "xababc", 1},
        {"\\bfc\\b", "net.fc.weight", 1},
        {"[]a]", "]", 1},
        {"()", "anything", 1},
        {"a|b", "b", 1},
        {"(^|\\.)ln_[^.]*\\.", "transformer.h.0.ln_1.weight", 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        eng_regex r;
        sh_diag d;
        sh_diag_clear(&d);
        ck_assert_msg(eng_regex_compile(&r, cases[i].re, "t", &d) == 0,
                      "%s refused: %s", cases[i].re, d.msg);
        ck_assert_msg(eng_regex_match(&r, cases[i].name) == cases[i].match,
                      "%s on %s", cases[i].re, cases[i].name);
        eng_regex_free(&r);
    }
}
END_TEST

// A search the rule lets through but that needs too many steps on a name
// is cut off by the match limit, deterministically, and the spec check
// names the field and the tensor.
START_TEST(test_regex_match_limit)
{
    char name[201];
    memset(name, 'a', 199);
    name[199] = 'b';
    name[200] = '\0';
    eng_regex r;
    sh_diag d;
    sh_diag_clear(&d);
    ck_assert_int_eq(eng_regex_compile(&r, "a.*a.*a.*b.*b", "t", &d), 0);
    ck_assert_int_eq(eng_regex_match(&r, name), SH_ETOOBIG);
    ck_assert_int_eq(eng_regex_match(&r, name), SH_ETOOBIG);
    ck_assert_int_eq(eng_regex_match(&r, "xaaaybzb"), 1);
    eng_regex_free(&r);

    eng_spec s;
    ck_assert_int_eq(parse("{\"method\":\"magnitude\",\"ignore\":[\"x\","
                           "\"a.*a.*a.*b.*b\"]}",
                           &s, &d),
                     0);
    char wname[220];
    snprintf(wname, sizeof wname, "%s.weight", name);
    eng_tensor_info t = tensor(wname, ENG_DTYPE_F32, 2, 4, 4);
    const eng_tensor_info *ts[] = {&t};
    ck_assert_int_eq(eng_spec_check(&s, ts, 1, "unknown", false, 0, &d),
                     SH_ESPEC);
    ck_assert_str_eq(d.field, "ignore[1]");
    ck_assert_msg(strstr(d.msg, "too many steps"), "%s", d.msg);
    eng_spec_deinit(&s);
}
END_TEST

// -0.0 is echoed as 0.0 (a client comparing echoes sees no sign).
START_TEST(test_negative_zero)
{
    eng_spec s;
    sh_diag d;
    ck_assert_int_eq(parse("{\"method\":\"magnitude\",\"sparsity\":-0.0,"
                           "\"overrides\":[{\"match\":\"a\",\"sparsity\":"
                           "-0.0}]}",
                           &s, &d),
                     0);
    json_t *echo = eng_spec_to_json(&s);
    char *text = json_dumps(echo, JSON_COMPACT);
    ck_assert_msg(!strstr(text, "-0"), "%s", text);
    ck_assert_msg(strstr(text, "\"sparsity\":0.0"), "%s", text);
    free(text);
    json_decref(echo);
    eng_spec_deinit(&s);
}
END_TEST

Suite *suite_spec(void)
{
    Suite *s = suite_create("spec");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_defaults_and_echo);
    tcase_add_test(tc, test_kinds_echo);
    tcase_add_test(tc, test_nm_sparsity);
    tcase_add_loop_test(tc, test_bad_spec_named, 0,
                        (int)(sizeof bad_specs / sizeof bad_specs[0]));
    tcase_add_test(tc, test_plan_targets);
    tcase_add_test(tc, test_check_against_tensors);
    tcase_add_test(tc, test_regex_accepted);
    tcase_add_test(tc, test_regex_match_limit);
    tcase_add_test(tc, test_negative_zero);
    suite_add_tcase(s, tc);
    return s;
}
