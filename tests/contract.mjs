// contract.mjs: live responses against openapi.yaml.
//
//   node tests/contract.mjs BASE_URL CHECKPOINT_ID DATASET_ID JOB_ID
//
// For each request below, finds the operation the document declares for
// the route template and the status that came back, checks the media type
// and declared headers, and validates the body against the schema (JSON
// Schema 2020-12, as OpenAPI 3.1 uses). Exits 1 on the first mismatch.
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";

const require = createRequire(
  path.resolve(process.cwd(), "tools/node_modules/"),
);
const Ajv2020 = require("ajv/dist/2020.js").default;
const addFormats = require("ajv-formats").default;
const YAML = require("yaml");

const [base, ck, ds, job] = process.argv.slice(2);
if (!job) {
  console.error("usage: contract.mjs BASE_URL CHECKPOINT DATASET JOB");
  process.exit(2);
}
const doc = YAML.parse(fs.readFileSync("openapi.yaml", "utf8"));
const ajv = new Ajv2020({ strict: false, allErrors: true });
addFormats(ajv);
ajv.addSchema({ $id: "doc", components: doc.components });

function schemaOf(ref) {
  return ajv.getSchema("doc#" + ref.slice(1)) || ajv.compile({ $ref: "doc" + ref });
}

function resolve(obj) {
  // A response may be a $ref to components/responses.
  if (obj && obj.$ref) {
    const parts = obj.$ref.replace("#/", "").split("/");
    return parts.reduce((o, k) => o[k], doc);
  }
  return obj;
}

let failures = 0;
function fail(msg) {
  console.error("contract: " + msg);
  failures++;
}

async function check(method, template, concrete, opts = {}) {
  const res = await fetch(base + concrete, {
    method,
    headers: opts.headers || {},
    body: opts.body,
  });
  const status = String(res.status);
  const op = doc.paths[template] && doc.paths[template][method.toLowerCase()];
  let decl;
  if (!op) {
    // Unknown routes answer with the Problem schema.
    decl = resolve({ $ref: "#/components/responses/Problem" });
  } else {
    decl = resolve(op.responses[status]);
    if (!decl) {
      fail(`${method} ${concrete}: status ${status} is not declared for ${template}`);
      return null;
    }
  }
  for (const h of Object.keys(decl.headers || {})) {
    if (!res.headers.get(h) && h !== "Accept-Ranges")
      fail(`${method} ${concrete}: declared header ${h} missing`);
  }
  const text = await res.text();
  if (!decl.content) {
    if (text.length) fail(`${method} ${concrete}: ${status} has a body the document does not declare`);
    return null;
  }
  const ct = (res.headers.get("content-type") || "").split(";")[0].trim();
  const media = decl.content[ct];
  if (!media) {
    fail(`${method} ${concrete}: content type ${ct} not declared (${Object.keys(decl.content)})`);
    return null;
  }
  if (!ct.includes("json") || status === "206") return text; // bytes
  const body = JSON.parse(text);
  const validate = media.schema.$ref ? schemaOf(media.schema.$ref) : ajv.compile(media.schema);
  if (!validate(body))
    fail(`${method} ${concrete} ${status}: ${ajv.errorsText(validate.errors)}\n${text.slice(0, 400)}`);
  return body;
}

const json = { "Content-Type": "application/json" };
await check("GET", "/healthz", "/healthz");
await check("GET", "/readyz", "/readyz");
await check("GET", "/metrics", "/metrics");
await check("GET", "/openapi.yaml", "/openapi.yaml");
await check("GET", "/", "/");
await check("GET", "/v1/checkpoints", "/v1/checkpoints?limit=1");
await check("GET", "/v1/checkpoints/{id}", `/v1/checkpoints/${ck}`);
await check("GET", "/v1/checkpoints/{id}", "/v1/checkpoints/ck_missing");
await check("GET", "/v1/checkpoints/{id}/tensors", `/v1/checkpoints/${ck}/tensors?limit=3`);
await check("GET", "/v1/datasets", "/v1/datasets");
await check("GET", "/v1/datasets/{id}", `/v1/datasets/${ds}`);
await check("GET", "/v1/jobs", "/v1/jobs");
await check("GET", "/v1/jobs", "/v1/jobs?limit=0");
const j = await check("GET", "/v1/jobs/{id}", `/v1/jobs/${job}`);
await check("GET", "/v1/jobs/{id}", "/v1/jobs/job_missing");
await check("GET", "/v1/jobs/{id}/layers", `/v1/jobs/${job}/layers?limit=2`);
await check("POST", "/v1/jobs/{id}/cancel", `/v1/jobs/${job}/cancel`);
await check("GET", "/v1/jobs/{id}/artifact/files/{name}", `/v1/jobs/${job}/artifact/files/shears.json`, {
  headers: { Range: "bytes=0-9" },
});
await check("POST", "/v1/jobs", "/v1/jobs", { headers: json, body: "{nope" });
await check("POST", "/v1/jobs", "/v1/jobs", {
  headers: json,
  body: JSON.stringify({ checkpoint: ck, method: "magnitude", sparsity: 2 }),
});
const created = await check("POST", "/v1/jobs", "/v1/jobs", {
  headers: json,
  body: JSON.stringify({ checkpoint: ck, method: "magnitude", pattern: "2:4" }),
});
// A sensitivity job (magnitude, one level): the job, its table, the
// problems of its artifact and of a prune job's table.
const sens = await check("POST", "/v1/jobs", "/v1/jobs", {
  headers: json,
  body: JSON.stringify({ checkpoint: ck, method: "magnitude", kind: "sensitivity",
    evaluation: { dataset: ds }, sensitivity: { levels: [0.5] } }),
});
let sj = sens;
for (const until = Date.now() + 60_000; sj && (sj.status === "queued" || sj.status === "running") && Date.now() < until;) {
  await new Promise((r) => setTimeout(r, 200));
  sj = await (await fetch(`${base}/v1/jobs/${sens.id}`)).json();
}
if (!sj || sj.status !== "succeeded") fail(`sensitivity job ${sens && sens.id} is ${sj && sj.status}`);
await check("GET", "/v1/jobs/{id}", `/v1/jobs/${sens.id}`);
await check("GET", "/v1/jobs/{id}/sensitivity", `/v1/jobs/${sens.id}/sensitivity`);
await check("GET", "/v1/jobs/{id}/sensitivity", `/v1/jobs/${job}/sensitivity`);
await check("GET", "/v1/jobs/{id}/artifact", `/v1/jobs/${sens.id}/artifact`);
await check("GET", "/v1/jobs", "/v1/jobs?kind=sensitivity");
await check("GET", "/v1/jobs", "/v1/jobs?kind=nope");
// A sweep job (magnitude at two levels): the job and its result.
const swp = await check("POST", "/v1/jobs", "/v1/jobs", {
  headers: json,
  body: JSON.stringify({ checkpoint: ck, method: "magnitude", kind: "sweep",
    evaluation: { dataset: ds }, sweep: { levels: [0.3, 0.6] } }),
});
let wj = swp;
for (const until = Date.now() + 60_000; wj && (wj.status === "queued" || wj.status === "running") && Date.now() < until;) {
  await new Promise((r) => setTimeout(r, 200));
  wj = await (await fetch(`${base}/v1/jobs/${swp.id}`)).json();
}
if (!wj || wj.status !== "succeeded") fail(`sweep job ${swp && swp.id} is ${wj && wj.status}`);
await check("GET", "/v1/jobs/{id}", `/v1/jobs/${swp.id}`);
await check("DELETE", "/v1/checkpoints/{id}", "/v1/checkpoints/ck_missing");
await check("GET", "/v1/nope", "/v1/nope");
if (j && j.status !== "succeeded") fail(`job ${job} is ${j.status}, expected succeeded`);
if (created && created.status !== "queued" && created.status !== "running" && created.status !== "succeeded")
  fail(`new job is ${created.status}`);
if (failures) process.exit(1);
console.log("contract: every response matches openapi.yaml");
