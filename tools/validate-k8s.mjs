// validate-k8s.mjs: offline checks of the Kubernetes manifests in deploy/k8s.
//
//   node tools/validate-k8s.mjs            (from the repository root)
//
// 1. Every YAML document under deploy/k8s parses the way kubectl reads it
//    (YAML 1.1: `off` is a boolean, `0440` is octal; duplicate keys are
//    errors) and validates against the Kubernetes schema (the npm package
//    kubernetes-models: the class for its apiVersion/kind, .validate()).
//    Those schemas allow unknown fields, so each object is also walked
//    against the model's type declarations: a misspelt field
//    (`readinesProbe`) is an error.
// 2. The kustomization: every file in `resources` exists and validates;
//    every manifest is listed there except the examples (job-prune.yaml,
//    job-sensitivity.yaml), which must not be; the image and label settings are well formed.
// 3. The deployment policy: one replica, Recreate, probes on /healthz and
//    /readyz, non-root with a read-only root filesystem, the data PVC at
//    /data, an emptyDir at /tmp, terminationGracePeriodSeconds above
//    SHEARS_GRACE, the API token from the Secret as a file; the Service,
//    ConfigMap, PVC and the example Job agree with it and with the
//    Dockerfile (uid, port).
//
// Exits 1 on any failure.
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";
import { spawnSync } from "node:child_process";

const NM = path.resolve(process.cwd(), "tools/node_modules");
const require = createRequire(NM + "/");
const YAML = require("yaml");
// kubernetes-models is ESM-only (its exports have no "require" condition):
// import its files from the same node_modules by path.
const K8S = path.join(NM, "kubernetes-models");
const DIR = "deploy/k8s";
const EXAMPLES = new Set(["job-prune.yaml", "job-sensitivity.yaml"]);

// Every "SHEARS_NAME" string literal in the program's C sources.
function shearsVariables() {
  const names = new Set();
  for (const dir of ["service", "engine", "common", "jobs", "api", "store"]) {
    if (!fs.existsSync(dir)) continue;
    for (const f of fs.readdirSync(dir)) {
      if (!f.endsWith(".c")) continue;
      const text = fs.readFileSync(path.join(dir, f), "utf8");
      for (const m of text.matchAll(/"(SHEARS_[A-Z_]+)"/g)) names.add(m[1]);
    }
  }
  return names;
}

let failures = 0;
const fail = (msg) => {
  console.log(`FAIL ${msg}`);
  failures++;
};
const ok = (cond, msg) => {
  if (cond) console.log(`ok   ${msg}`);
  else fail(msg);
  return !!cond;
};

if (!fs.existsSync(K8S) || !fs.existsSync(DIR)) {
  console.error(
    `validate-k8s: run from the repository root; needs ${DIR}/ and tools/node_modules (scripts/deps.sh)`,
  );
  process.exit(2);
}

// ---------------------------------------------------------------- models
const modCache = new Map();
async function modelClass(apiVersion, kind) {
  if (!/^([a-z0-9.-]+\/)?v[0-9]+[a-z0-9]*$/.test(String(apiVersion)) || !/^[A-Z][A-Za-z0-9]*$/.test(String(kind)))
    return null;
  const dir = path.join(K8S, ...apiVersion.split("/"));
  const file = path.join(dir, `${kind}.js`);
  if (!fs.existsSync(file)) return null;
  if (!modCache.has(file)) {
    const mod = await import(pathToFileURL(file).href);
    modCache.set(file, mod[kind]);
  }
  return { cls: modCache.get(file), dts: path.join(dir, `${kind}.d.ts`) };
}

// Field names from the models' .d.ts interfaces (one interface per file,
// fields at four spaces: `    "name"?: Type;`), followed through imports.
const dtsCache = new Map();
function resolveSpec(spec, dir) {
  const base = spec.startsWith(".") ? path.resolve(dir, spec) : path.join(NM, spec);
  const file = base.replace(/\.js$/, "") + ".d.ts";
  return fs.existsSync(file) ? file : null;
}
function parseDts(file) {
  if (!file) return null;
  if (dtsCache.has(file)) return dtsCache.get(file);
  let info = null;
  const src = fs.readFileSync(file, "utf8");
  const body = src.match(/^export interface \w+(?: extends [\w, ]+)? \{\n([\s\S]*?)^\}/m);
  if (body) {
    const imports = new Map();
    for (const m of src.matchAll(/^import \{([^}]*)\} from "([^"]+)";$/gm)) {
      const target = resolveSpec(m[2], path.dirname(file));
      for (const n of m[1].split(",")) {
        const name = n.trim().split(/\s+as\s+/).pop();
        if (name) imports.set(name, target);
      }
    }
    const fields = new Map();
    for (const m of body[1].matchAll(/^ {4}"([^"]+)"(\??): (.*?);?$/gm)) {
      const t = m[3].trim();
      const ref = (t.match(/^Array<(\w+)>$/) || t.match(/^(\w+)$/) || [])[1];
      fields.set(m[1], { required: m[2] !== "?", ref: ref && imports.get(ref) });
    }
    info = { fields };
  }
  dtsCache.set(file, info);
  return info;
}
function unknownFields(value, file, where, out) {
  const info = parseDts(file);
  if (!info) return out;
  if (Array.isArray(value)) {
    value.forEach((v, i) => unknownFields(v, file, `${where}/${i}`, out));
    return out;
  }
  if (!value || typeof value !== "object") return out;
  for (const [k, v] of Object.entries(value)) {
    const f = info.fields.get(k);
    if (!f) out.push(`${where}/${k}: unknown field`);
    else if (f.ref) unknownFields(v, f.ref, `${where}/${k}`, out);
  }
  return out;
}

// ---------------------------------------------------------------- helpers
const get = (o, p) => p.split(".").reduce((a, k) => (a == null ? a : a[k]), o);
const isObj = (v) => v && typeof v === "object" && !Array.isArray(v);
function quantity(q) {
  // CPU (m) and memory (Ki..Ei, k..E) quantities, to compare requests/limits.
  const m = String(q).match(/^([0-9.]+)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$/);
  if (!m) return NaN;
  const mult = {
    m: 1e-3, k: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15, E: 1e18,
    Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, Pi: 2 ** 50, Ei: 2 ** 60,
  };
  return Number(m[1]) * (m[2] ? mult[m[2]] : 1);
}
const shVersion = (() => {
  try {
    return fs.readFileSync("common/version.h", "utf8").match(/SH_VERSION\s+"([^"]+)"/)[1];
  } catch {
    return null;
  }
})();

// ---------------------------------------------------------------- 1. files
const files = fs
  .readdirSync(DIR, { recursive: true })
  .map(String)
  .filter((f) => /\.ya?ml$/.test(f))
  .sort();
const objects = []; // { file, doc }
let kustomization = null;

console.log(`== schema (kubernetes-models) of ${DIR}/*.yaml`);
for (const rel of files) {
  const file = path.join(DIR, rel);
  const text = fs.readFileSync(file, "utf8");
  // YAML 1.1, as kubectl (sigs.k8s.io/yaml, go-yaml) reads it.
  const docs = YAML.parseAllDocuments(text, { version: "1.1", uniqueKeys: true });
  let n = 0;
  for (const d of docs) {
    if (d.errors.length) {
      fail(`${file}: YAML: ${d.errors.map((e) => e.message).join("; ")}`);
      continue;
    }
    const doc = d.toJS();
    if (doc == null) continue;
    n++;
    if (!isObj(doc)) {
      fail(`${file}: a document is not a mapping`);
      continue;
    }
    const id = `${file}: ${doc.kind}/${get(doc, "metadata.name") ?? "?"}`;
    if (doc.kind === "Kustomization") {
      if (!ok(doc.apiVersion === "kustomize.config.k8s.io/v1beta1", `${file}: Kustomization apiVersion ${doc.apiVersion}`)) continue;
      kustomization = { file, rel, doc };
      continue;
    }
    const model = await modelClass(doc.apiVersion, doc.kind);
    if (!model) {
      fail(`${id}: no kubernetes-models class for apiVersion ${doc.apiVersion} kind ${doc.kind}`);
      continue;
    }
    let err = null;
    try {
      new model.cls(doc).validate();
    } catch (e) {
      err = e.message;
    }
    const unknown = unknownFields(doc, model.dts, "", []);
    if (!get(doc, "metadata.name")) err = (err ? err + "; " : "") + "metadata.name is missing";
    if (err || unknown.length) fail(`${id}: ${[err, ...unknown].filter(Boolean).join("; ")}`);
    else console.log(`ok   ${id} (${doc.apiVersion})`);
    objects.push({ file, rel, doc });
  }
  if (n === 0) fail(`${file}: no documents`);
}

// ---------------------------------------------------------------- 2. kustomization
console.log(`\n== kustomization`);
const listed = [];
if (ok(kustomization, `${DIR}/kustomization.yaml exists`)) {
  const k = kustomization.doc;
  const known = new Set([
    "apiVersion", "kind", "resources", "labels", "commonLabels", "commonAnnotations",
    "images", "namespace", "namePrefix", "nameSuffix", "configMapGenerator",
    "secretGenerator", "generatorOptions", "patches", "replacements", "components",
  ]);
  const extra = Object.keys(k).filter((x) => !known.has(x));
  ok(extra.length === 0, `kustomization fields known${extra.length ? ` (unknown: ${extra.join(", ")})` : ""}`);
  ok(Array.isArray(k.resources) && k.resources.length > 0, "kustomization has resources");
  for (const r of k.resources || []) {
    const f = path.join(path.dirname(kustomization.file), String(r));
    const rel = path.relative(DIR, f);
    listed.push(rel);
    const objs = objects.filter((o) => o.rel === rel);
    if (!fs.existsSync(f)) fail(`resource ${r}: no such file`);
    else ok(objs.length > 0, `resource ${r}: ${objs.map((o) => `${o.doc.kind}/${o.doc.metadata?.name}`).join(", ") || "no valid object"}`);
  }
  for (const rel of files) {
    if (rel === kustomization.rel) continue;
    if (EXAMPLES.has(rel)) ok(!listed.includes(rel), `${rel} is an example, not in resources`);
    else ok(listed.includes(rel), `${rel} is in resources`);
  }
  // Labels: `labels` (list of {pairs}) or the deprecated `commonLabels`.
  const labelSets = [];
  if (Array.isArray(k.labels)) {
    for (const l of k.labels) {
      if (!isObj(l) || !isObj(l.pairs)) fail("labels: each entry needs pairs");
      else labelSets.push(l.pairs);
    }
  } else if (k.labels !== undefined) fail("labels must be a list");
  if (isObj(k.commonLabels)) labelSets.push(k.commonLabels);
  ok(labelSets.length > 0 && labelSets.every((p) => Object.values(p).every((v) => typeof v === "string")),
    `common labels: ${labelSets.flatMap((p) => Object.entries(p).map(([a, b]) => `${a}=${b}`)).join(" ")}`);
}

// ---------------------------------------------------------------- 3. policy
console.log(`\n== policy`);
const inKust = (o) => listed.includes(o.rel);
const byKind = (kind, pred = () => true) => objects.filter((o) => o.doc.kind === kind && pred(o)).map((o) => o.doc);
const find = (kind, name) => byKind(kind, inKust).find((d) => d.metadata?.name === name);

// What image does the kustomization produce for the container's image?
function kustImage(image) {
  const k = kustomization?.doc || {};
  const m = String(image).match(/^(.*?)(?::([^:/@]+))?(@.*)?$/);
  const entry = (k.images || []).find((e) => e.name === m[1]);
  if (!entry) return image;
  if (entry.digest) return `${entry.newName || m[1]}@${entry.digest}`;
  return `${entry.newName || m[1]}:${entry.newTag || m[2] || "latest"}`;
}

const dockerfile = fs.existsSync("Dockerfile") ? fs.readFileSync("Dockerfile", "utf8") : "";
const dfUid = (dockerfile.match(/useradd[^\n]*?--uid\s+(\d+)/) || [])[1];
const dfPort = (dockerfile.match(/^EXPOSE\s+(\d+)/m) || [])[1];

// The security settings the service and the Job share.
function checkPodSecurity(what, pod, c) {
  const psc = pod.securityContext || {};
  const csc = c.securityContext || {};
  const eff = (k) => (csc[k] !== undefined ? csc[k] : psc[k]);
  ok(eff("runAsNonRoot") === true, `${what}: runAsNonRoot`);
  ok(eff("runAsUser") === 10001, `${what}: runAsUser ${eff("runAsUser")} (10001)`);
  if (dfUid) ok(String(eff("runAsUser")) === dfUid, `${what}: runAsUser matches the Dockerfile's uid ${dfUid}`);
  ok(psc.fsGroup === 10001, `${what}: fsGroup ${psc.fsGroup} (10001)`);
  ok(csc.readOnlyRootFilesystem === true, `${what}: readOnlyRootFilesystem`);
  ok(csc.allowPrivilegeEscalation === false, `${what}: allowPrivilegeEscalation false`);
  ok(csc.privileged !== true, `${what}: not privileged`);
  ok((get(csc, "capabilities.drop") || []).includes("ALL") && !(get(csc, "capabilities.add") || []).length,
    `${what}: capabilities drop ALL, add none`);
  ok((get(csc, "seccompProfile.type") || get(psc, "seccompProfile.type")) === "RuntimeDefault",
    `${what}: seccompProfile RuntimeDefault`);
  ok(pod.hostNetwork !== true && pod.hostPID !== true && pod.hostIPC !== true, `${what}: no host namespaces`);
  ok(pod.enableServiceLinks === false, `${what}: enableServiceLinks false (a Service "shears" would inject SHEARS_* variables)`);
  for (const kind of ["requests", "limits"]) {
    const r = get(c, `resources.${kind}`) || {};
    ok(r.cpu !== undefined && r.memory !== undefined, `${what}: resources.${kind} cpu=${r.cpu} memory=${r.memory}`);
  }
  for (const res of ["cpu", "memory"]) {
    const rq = quantity(get(c, `resources.requests.${res}`));
    const lm = quantity(get(c, `resources.limits.${res}`));
    if (!isNaN(rq) && !isNaN(lm)) ok(rq <= lm, `${what}: ${res} request <= limit`);
  }
  const vols = new Map((pod.volumes || []).map((v) => [v.name, v]));
  const mounts = c.volumeMounts || [];
  for (const m of mounts) ok(vols.has(m.name), `${what}: volumeMount ${m.name} has a volume`);
  const tmp = mounts.find((m) => m.mountPath === "/tmp");
  ok(tmp && vols.get(tmp.name)?.emptyDir !== undefined, `${what}: emptyDir at /tmp`);
  // Longest mount prefix: is this path writable in the container?
  const mountOf = (p) =>
    mounts.filter((m) => p === m.mountPath || p.startsWith(m.mountPath.replace(/\/$/, "") + "/"))
      .sort((a, b) => b.mountPath.length - a.mountPath.length)[0];
  const writable = (p) => {
    const m = mountOf(p);
    const v = m && vols.get(m.name);
    return !!m && !m.readOnly && !!v && (v.persistentVolumeClaim || v.emptyDir) !== undefined && !v.persistentVolumeClaim?.readOnly;
  };
  return { vols, mounts, mountOf, writable };
}

function envOf(c) {
  // The container's literal env plus its ConfigMap envFrom (env wins).
  const env = {};
  const sources = [];
  for (const ef of c.envFrom || []) {
    const name = ef.configMapRef?.name;
    if (!name) continue;
    const cm = find("ConfigMap", name);
    sources.push(name);
    if (ok(cm, `envFrom ConfigMap ${name} is in the kustomization`)) Object.assign(env, cm.data || {});
  }
  for (const e of c.env || []) if (e.value !== undefined) env[e.name] = e.value;
  return { env, sources };
}

// --- the Deployment
const deps = byKind("Deployment", inKust);
ok(deps.length === 1, `one Deployment in the kustomization (${deps.length})`);
const dep = deps[0];
let podLabels = {};
let httpPort = null;
if (dep) {
  const pod = get(dep, "spec.template.spec") || {};
  podLabels = get(dep, "spec.template.metadata.labels") || {};
  ok(dep.spec.replicas === 1, `Deployment replicas ${dep.spec.replicas} (1: SQLite, one writer)`);
  ok(get(dep, "spec.strategy.type") === "Recreate", `Deployment strategy ${get(dep, "spec.strategy.type")} (Recreate)`);
  const sel = get(dep, "spec.selector.matchLabels") || {};
  ok(Object.keys(sel).length > 0 && Object.entries(sel).every(([k, v]) => podLabels[k] === v),
    "Deployment selector matches the pod template's labels");
  const cs = pod.containers || [];
  const c = cs.find((x) => x.name === "shears") || cs[0];
  if (ok(c, "Deployment has a container")) {
    const what = `Deployment/${dep.metadata.name} container ${c.name}`;
    ok(String(c.image).startsWith("shears"), `${what}: image ${c.image} -> ${kustImage(c.image)}`);
    if (shVersion) ok(kustImage(c.image).endsWith(`:${shVersion}`), `${what}: image tag is the version in common/version.h (${shVersion})`);
    const args = [...(c.command || []), ...(c.args || [])];
    ok(!c.command && (args.length === 0 || args[0] === "serve"), `${what}: runs the image's shears serve (args ${JSON.stringify(c.args || [])})`);
    const port = (c.ports || []).find((p) => p.containerPort === 8080);
    ok(port, `${what}: containerPort 8080`);
    if (dfPort) ok(String(port?.containerPort) === dfPort, `${what}: containerPort matches the Dockerfile's EXPOSE ${dfPort}`);
    httpPort = port;
    const resolvePort = (p) => (typeof p === "number" ? p : (c.ports || []).find((x) => x.name === p)?.containerPort);
    const live = c.livenessProbe || {};
    const ready = c.readinessProbe || {};
    ok(get(live, "httpGet.path") === "/healthz" && resolvePort(get(live, "httpGet.port")) === 8080,
      `${what}: livenessProbe GET /healthz on 8080`);
    const ft = live.failureThreshold ?? 3;
    const period = live.periodSeconds ?? 10;
    ok(ft >= 3 && ft * period >= 30, `${what}: livenessProbe is generous (failureThreshold ${ft} x ${period}s)`);
    ok(get(ready, "httpGet.path") === "/readyz" && resolvePort(get(ready, "httpGet.port")) === 8080,
      `${what}: readinessProbe GET /readyz on 8080`);
    const sec = checkPodSecurity(what, pod, c);

    // The data dir: the PVC at /data, SHEARS_DATA_DIR pointing there.
    const { env, sources } = envOf(c);
    const dataMount = sec.mounts.find((m) => m.mountPath === "/data");
    const dataVol = dataMount && sec.vols.get(dataMount.name);
    const claim = dataVol?.persistentVolumeClaim?.claimName;
    const pvc = claim && find("PersistentVolumeClaim", claim);
    ok(pvc, `${what}: /data is the PVC ${claim} of the kustomization`);
    ok(sec.writable("/data"), `${what}: /data is writable`);
    if (pvc) {
      ok((pvc.spec.accessModes || []).includes("ReadWriteOnce") && !(pvc.spec.accessModes || []).includes("ReadWriteMany"),
        `PVC ${claim}: ReadWriteOnce (${(pvc.spec.accessModes || []).join(",")})`);
      ok(!isNaN(quantity(get(pvc, "spec.resources.requests.storage"))), `PVC ${claim}: storage ${get(pvc, "spec.resources.requests.storage")}`);
    }
    ok((env.SHEARS_DATA_DIR ?? "/data") === "/data", `${what}: SHEARS_DATA_DIR ${env.SHEARS_DATA_DIR ?? "(image default /data)"}`);
    const listen = env.SHEARS_LISTEN ?? "0.0.0.0:8080";
    ok(/^(0\.0\.0\.0|\[::\]):8080$/.test(listen), `${what}: SHEARS_LISTEN ${listen} (all interfaces, port 8080)`);

    // Settings from the ConfigMap.
    ok(sources.length > 0, `${what}: env from a ConfigMap (${sources.join(", ")})`);
    const cmData = Object.assign({}, ...sources.map((n) => find("ConfigMap", n)?.data || {}));
    // The SHEARS_* variables the program reads, from its own sources
    // (service/, engine/, common/), so a new setting needs no edit here.
    const knownVars = shearsVariables();
    for (const k of ["SHEARS_WORKERS", "SHEARS_HTTP_THREADS", "SHEARS_MAX_UPLOAD", "SHEARS_GRACE", "SHEARS_LOG_LEVEL"])
      ok(k in cmData, `ConfigMap sets ${k}=${cmData[k]}`);
    for (const k of Object.keys(env)) if (k.startsWith("SHEARS_")) ok(knownVars.has(k), `${k} is a variable shears reads`);
    const intIn = (v, lo, hi) => /^\d+$/.test(String(v)) && Number(v) >= lo && Number(v) <= hi;
    if ("SHEARS_WORKERS" in env) ok(intIn(env.SHEARS_WORKERS, 1, 256), `SHEARS_WORKERS ${env.SHEARS_WORKERS} in 1..256`);
    if ("SHEARS_THREADS" in env) ok(intIn(env.SHEARS_THREADS, 0, 1024), `SHEARS_THREADS ${env.SHEARS_THREADS} in 0..1024`);
    if ("SHEARS_HTTP_THREADS" in env) ok(intIn(env.SHEARS_HTTP_THREADS, 1, 256), `SHEARS_HTTP_THREADS ${env.SHEARS_HTTP_THREADS} in 1..256`);
    if ("SHEARS_MAX_ATTEMPTS" in env) ok(intIn(env.SHEARS_MAX_ATTEMPTS, 1, 100), `SHEARS_MAX_ATTEMPTS ${env.SHEARS_MAX_ATTEMPTS} in 1..100`);
    if ("SHEARS_MAX_UPLOAD" in env) ok(/^\d+([KkMmGgTt](i?B?|B)?)?$/.test(env.SHEARS_MAX_UPLOAD), `SHEARS_MAX_UPLOAD ${env.SHEARS_MAX_UPLOAD} is bytes with a K/M/G/T suffix`);
    if ("SHEARS_LOG_LEVEL" in env) ok(["error", "warn", "info", "debug"].includes(env.SHEARS_LOG_LEVEL), `SHEARS_LOG_LEVEL ${env.SHEARS_LOG_LEVEL}`);

    // Grace: Kubernetes waits longer than shears lets jobs finish.
    const grace = Number(env.SHEARS_GRACE ?? 20);
    const tgp = pod.terminationGracePeriodSeconds ?? 30;
    ok(/^\d+(\.\d+)?$/.test(String(env.SHEARS_GRACE ?? 20)), `SHEARS_GRACE ${env.SHEARS_GRACE} is seconds`);
    ok(tgp > grace + 10, `terminationGracePeriodSeconds ${tgp} > SHEARS_GRACE ${grace} + 10s (requeue, shutdown)`);

    // The token: SHEARS_TOKEN_FILE is a file of the Secret volume.
    const tf = env.SHEARS_TOKEN_FILE;
    ok(tf, `${what}: SHEARS_TOKEN_FILE is set (${tf})`);
    ok(!Object.keys(env).some((k) => /TOKEN$/.test(k)) && !(c.env || []).some((e) => /TOKEN$/.test(e.name)),
      `${what}: no token in a plain environment variable`);
    if (tf) {
      const m = sec.mountOf(tf);
      const v = m && sec.vols.get(m.name);
      const secretName = v?.secret?.secretName;
      const secret = secretName && find("Secret", secretName);
      ok(secret, `${what}: ${tf} is on a volume of the Secret ${secretName ?? "(no Secret volume mounted there)"} in the kustomization`);
      ok(m?.readOnly === true, `${what}: the Secret is mounted readOnly`);
      if (secret) {
        const file = path.posix.relative(m.mountPath, tf);
        const item = (v.secret.items || []).find((i) => i.path === file);
        const key = v.secret.items ? item?.key : file;
        const keys = new Set([...Object.keys(secret.data || {}), ...Object.keys(secret.stringData || {})]);
        ok(key && keys.has(key), `Secret ${secretName} has key ${key} for ${tf}`);
        ok(key === "token", `Secret key is "token"`);
        ok(secret.type === undefined || secret.type === "Opaque", `Secret ${secretName} is Opaque`);
        const mode = item?.mode ?? v.secret.defaultMode ?? 0o644;
        ok((mode & 0o044) !== 0 && (mode & 0o002) === 0,
          `Secret file mode 0${mode.toString(8)} is readable by the fsGroup and not world-writable`);
        const val = secret.stringData?.[key] ?? Buffer.from(String(secret.data?.[key] ?? ""), "base64").toString();
        ok(String(val).split(/\r?\n/)[0].trim().length >= 8, "the token is at least 8 characters (shears refuses shorter)");
        if (/REPLACE|CHANGE|placeholder/i.test(String(val))) console.log(`note the token in ${secretName} is a placeholder: replace it before deploying`);
      }
    }
  }
}

// --- the Service
const svcs = byKind("Service", inKust);
ok(svcs.length === 1, `one Service in the kustomization (${svcs.length})`);
for (const svc of svcs) {
  const what = `Service/${svc.metadata.name}`;
  ok((svc.spec.type ?? "ClusterIP") === "ClusterIP", `${what}: ClusterIP`);
  const sel = svc.spec.selector || {};
  ok(Object.keys(sel).length > 0 && Object.entries(sel).every(([k, v]) => podLabels[k] === v),
    `${what}: selector matches the Deployment's pods`);
  const p = (svc.spec.ports || []).find((x) => x.port === 80);
  const target = p && (typeof p.targetPort === "number" ? p.targetPort : p.targetPort === httpPort?.name ? httpPort?.containerPort : undefined);
  ok(p && target === 8080, `${what}: port 80 -> 8080 (targetPort ${p?.targetPort})`);
}

// --- the example Job
const jobs = byKind("Job", (o) => o.rel === "job-prune.yaml");
ok(jobs.length === 1, "job-prune.yaml holds one Job");
for (const job of jobs) {
  const pod = get(job, "spec.template.spec") || {};
  const c = (pod.containers || [])[0];
  const what = `Job/${job.metadata.name}`;
  ok(pod.restartPolicy === "Never", `${what}: restartPolicy Never`);
  ok(Number.isInteger(job.spec.backoffLimit), `${what}: backoffLimit ${job.spec.backoffLimit}`);
  if (ok(c, `${what}: has a container`)) {
    const depImage = dep && kustImage(get(dep, "spec.template.spec.containers.0.image"));
    ok(c.image === depImage, `${what}: image ${c.image} is the Deployment's (${depImage})`);
    const args = [...(c.command || []), ...(c.args || [])];
    const flag = (n) => { const i = args.indexOf(n); return i >= 0 ? args[i + 1] : undefined; };
    ok(!c.command && args[0] === "prune", `${what}: runs shears prune`);
    ok(flag("--model") === "/models/in" && flag("--out") === "/models/out" && flag("--method") === "magnitude" &&
       flag("--pattern") === "2:4" && flag("--report") === "/models/out-report.json",
      `${what}: prune --model /models/in --out /models/out --method magnitude --pattern 2:4 --report /models/out-report.json`);
    const sec = checkPodSecurity(what, pod, c);
    for (const f of ["--out", "--report"]) {
      const p = flag(f);
      if (p) ok(sec.writable(path.posix.dirname(p)), `${what}: the parent of ${f} ${p} is writable`);
    }
    const modelMount = flag("--model") && sec.mountOf(flag("--model"));
    ok(modelMount && sec.vols.get(modelMount.name)?.persistentVolumeClaim, `${what}: the model is on a PVC volume`);
    const env = Object.fromEntries((c.env || []).map((e) => [e.name, e.value]));
    const cache = env.SHEARS_CACHE_DIR;
    ok(cache === "off" || cache === "" || (cache && sec.writable(cache)),
      `${what}: SHEARS_CACHE_DIR ${JSON.stringify(cache)} (off, or writable: the root filesystem is read-only)`);
  }
}

// --- the sensitivity example: an Indexed Job of N shards, then a merge of
// the N parts it writes.
const sens = byKind("Job", (o) => o.rel === "job-sensitivity.yaml");
ok(sens.length === 2, "job-sensitivity.yaml holds the Indexed Job and the merge Job");
const argsOf = (job) => {
  const c = (get(job, "spec.template.spec.containers") || [])[0] || {};
  return [...(c.command || []), ...(c.args || [])];
};
const sweep = sens.find((j) => argsOf(j)[0] === "sensitivity");
const merge = sens.find((j) => argsOf(j)[0] === "merge");
if (ok(sweep && merge, "job-sensitivity.yaml: a sensitivity Job and a merge Job")) {
  const a = argsOf(sweep);
  const flag = (n) => { const i = a.indexOf(n); return i >= 0 ? a[i + 1] : undefined; };
  const shard = /^auto\/(\d+)$/.exec(flag("--shard") || "");
  const n = shard ? Number(shard[1]) : 0;
  ok(sweep.spec.completionMode === "Indexed" && sweep.spec.completions === n && sweep.spec.parallelism === n,
    `Job/${sweep.metadata.name}: Indexed, ${n} completions for --shard auto/${n}`);
  const report = flag("--report") || "";
  ok(report.includes("$(JOB_COMPLETION_INDEX)"), `Job/${sweep.metadata.name}: one report a shard (${report})`);
  const c = get(sweep, "spec.template.spec.containers.0");
  ok((c.env || []).some((e) => e.name === "JOB_COMPLETION_INDEX"),
    `Job/${sweep.metadata.name}: JOB_COMPLETION_INDEX in env, so $(...) expands`);
  const parts = Array.from({ length: n }, (_, i) => report.replace("$(JOB_COMPLETION_INDEX)", String(i)));
  const m = argsOf(merge);
  ok(parts.every((p) => m.includes(p)) && m.includes("--out"),
    `Job/${merge.metadata.name}: merges the ${n} parts ${parts.join(" ")}`);
  for (const job of sens) {
    const pod = get(job, "spec.template.spec") || {};
    const sec = checkPodSecurity(`Job/${job.metadata.name}`, pod, pod.containers[0]);
    for (const p of [report, ...m.filter((x) => x.startsWith("/"))])
      ok(sec.writable(path.posix.dirname(p)), `Job/${job.metadata.name}: ${path.posix.dirname(p)} is writable`);
  }
}

// ---------------------------------------------------------------- 4. rendered
// What `kubectl apply -k` would send, when kubectl is here (optional:
// rendering is local, no cluster is contacted).
console.log(`\n== rendered (kubectl kustomize ${DIR})`);
const r = spawnSync("kubectl", ["kustomize", DIR], { encoding: "utf8", timeout: 60000 });
if (r.error && r.error.code === "ENOENT") {
  console.log("skip kubectl is not installed: the kustomization was not rendered");
} else if (r.status !== 0) {
  fail(`kubectl kustomize ${DIR}: ${(r.stderr || String(r.error)).trim()}`);
} else {
  const rendered = YAML.parseAllDocuments(r.stdout, { version: "1.1" }).map((d) => d.toJS()).filter(Boolean);
  const expected = objects.filter(inKust).length;
  ok(rendered.length === expected, `renders ${rendered.length} objects (${expected} in resources)`);
  const common = Object.assign({}, ...((kustomization?.doc.labels || []).map((l) => l.pairs || {})),
    kustomization?.doc.commonLabels || {});
  let podL = {};
  for (const doc of rendered) {
    const id = `${doc.kind}/${doc.metadata?.name}`;
    const model = await modelClass(doc.apiVersion, doc.kind);
    let err = model ? null : "no model class";
    try {
      if (model) new model.cls(doc).validate();
    } catch (e) {
      err = e.message;
    }
    ok(!err, `rendered ${id} validates${err ? `: ${err}` : ""}`);
    const labels = doc.metadata?.labels || {};
    ok(Object.entries(common).every(([k, v]) => labels[k] === v), `rendered ${id} carries the common labels`);
    if (doc.kind === "Deployment") {
      podL = get(doc, "spec.template.metadata.labels") || {};
      const sel = get(doc, "spec.selector.matchLabels") || {};
      ok(Object.entries(sel).every(([k, v]) => podL[k] === v), `rendered ${id}: selector matches the pod labels`);
      const img = get(doc, "spec.template.spec.containers.0.image");
      const job = byKind("Job", (o) => o.rel === "job-prune.yaml")[0];
      const jobImg = get(job, "spec.template.spec.containers.0.image");
      ok(!job || img === jobImg, `rendered ${id}: image ${img} is the example Job's (${jobImg})`);
    }
  }
  for (const doc of rendered.filter((d) => d.kind === "Service")) {
    const sel = doc.spec?.selector || {};
    ok(Object.entries(sel).every(([k, v]) => podL[k] === v), `rendered Service/${doc.metadata.name}: selector matches the pod labels`);
  }
}

console.log();
if (failures) {
  console.log(`validate-k8s: ${failures} failure(s)`);
  process.exit(1);
}
console.log("validate-k8s: all manifests valid");
