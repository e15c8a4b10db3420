// browser.mjs: the dashboard in a real browser (Debian's chromium, driven
// by playwright-core).
//
//   node tests/browser.mjs BASE_URL SCREENSHOT_DIR
//
// Uploads the bundled Llama model (a tar of its folder) and its evaluation
// data through the page's forms, submits a 2:4 magnitude job from the job
// form, watches it succeed in the live job list, opens its page and checks
// the per-layer chart (one bar per pruned tensor), the dense and pruned
// perplexity and the download links, runs a sensitivity job from the
// form and checks its curves (one line per group), a sweep (one line per
// method) and a prune job allocated from the sensitivity curves, checks
// that API errors are shown in
// plain words next to the form that caused them, then deletes what it made
// through the page's buttons. Every request must stay on BASE_URL and the
// page must raise no script error or CSP violation. With SHEARS_TOKEN set
// (a server started with --token-file), it also enters the token in the
// box the page shows on a 401. Saves SCREENSHOT_DIR/dashboard.png and
// dashboard-job.png (dashboard-failure.png when something fails).
// Exits 0 when all is well, 1 with a message otherwise.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { execFileSync } from "node:child_process";
import { createRequire } from "node:module";

const require = createRequire(path.resolve(process.cwd(), "tools/node_modules/"));
const { chromium } = require("playwright-core");

const [baseArg, shotDir] = process.argv.slice(2);
if (!baseArg || !shotDir) {
  console.error("usage: browser.mjs BASE_URL SCREENSHOT_DIR");
  process.exit(2);
}
const base = baseArg.replace(/\/+$/, "");
const token = process.env.SHEARS_TOKEN || "";
const MODEL_DIR = "tests/fixtures/llama-kjv";
const EVAL_DATA = "tests/fixtures/llama-kjv-data/evaluation.safetensors";
const LAYERS = 28; // linear layers the default targets prune in this model
const t0 = Date.now();

class Failure extends Error {}
function check(cond, msg) {
  if (!cond) throw new Failure(msg);
}
function step(msg) {
  console.log(`browser: [${((Date.now() - t0) / 1000).toFixed(1)}s] ${msg}`);
}

// The API straight from node: the expected answers the page must show.
async function apiCall(method, p, body, type) {
  const headers = {};
  if (token) headers.Authorization = "Bearer " + token;
  if (body !== undefined) headers["Content-Type"] = type || "application/json";
  const res = await fetch(base + p, {
    method,
    headers,
    body: body === undefined ? undefined : type ? body : JSON.stringify(body),
  });
  const text = await res.text();
  let data = null;
  try {
    data = JSON.parse(text);
  } catch {
    /* not JSON */
  }
  return { status: res.status, data, text, headers: res.headers };
}

fs.mkdirSync(shotDir, { recursive: true });
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "shears-browser-"));
const tarPath = path.join(tmp, "kjv.tar");
execFileSync("tar", ["-cf", tarPath, "-C", MODEL_DIR, "."]);
const tag = Date.now().toString(36);
const ckName = "kjv-browser-" + tag;
const dsName = "kjv-eval-browser-" + tag;

let browser, page;
const pageErrors = [];
const offsite = [];
// The whole run has a hard ceiling, whatever hangs.
const watchdog = setTimeout(() => finish(new Failure("the run took over 150 s")), 150_000);

async function finish(err) {
  clearTimeout(watchdog);
  if (err) {
    console.error("browser: FAILED: " + (err instanceof Failure ? err.message : err.stack || err));
    if (page) {
      try {
        await page.screenshot({ path: path.join(shotDir, "dashboard-failure.png"), fullPage: true, timeout: 5000 });
        console.error(`browser: screenshot of the failure in ${path.join(shotDir, "dashboard-failure.png")}`);
      } catch {
        /* the page is gone */
      }
    }
  }
  try {
    if (browser) await browser.close();
  } catch {
    /* already closed */
  }
  fs.rmSync(tmp, { recursive: true, force: true });
  process.exit(err ? 1 : 0);
}

async function expectText(locator, want, what) {
  try {
    await locator.filter({ hasText: want }).waitFor({ state: "visible", timeout: 10_000 });
  } catch {
    const got = (await locator.count()) ? await locator.first().innerText() : "(nothing)";
    throw new Failure(`${what}: expected the page to show ${JSON.stringify(want)}, it shows ${JSON.stringify(got)}`);
  }
}

async function run() {
  browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    timeout: 20_000,
  });
  const context = await browser.newContext({ viewport: { width: 1360, height: 900 } });
  page = await context.newPage();
  page.setDefaultTimeout(10_000);
  page.on("pageerror", (e) => pageErrors.push("uncaught: " + e.message));
  page.on("console", (m) => {
    if (/Content Security Policy|Refused to/i.test(m.text())) pageErrors.push("CSP: " + m.text());
  });
  page.on("request", (r) => {
    const u = r.url();
    if (!u.startsWith(base + "/") && !/^(data|blob|about):/.test(u)) offsite.push(u);
  });
  const assertClean = (where) => {
    check(!pageErrors.length, `${where}: the page raised errors:\n  ${pageErrors.join("\n  ")}`);
    check(!offsite.length, `${where}: the page asked for something off ${base}: ${offsite.join(", ")}`);
  };

  step(`open ${base}/`);
  const res = await page.goto(base + "/", { waitUntil: "load" });
  check(res && res.status() === 200, `GET / answered ${res && res.status()}`);
  check(/shears/i.test(await page.title()), "the page title does not name shears");

  if (token) {
    step("the server wants a token: enter it in the box the page shows");
    await page.locator("#token-form").waitFor({ state: "visible" });
    await page.fill("#token-input", token);
    await page.click('#token-form button[type="submit"]');
    await page.locator("#token-form").waitFor({ state: "hidden" });
  }
  await page.locator("#ck-body tr").first().waitFor();
  if (!token) check(await page.locator("#token-form").isHidden(), "the token box shows though the server needs no token");
  // The first row may still be the placeholder a moment after the token.
  const loaded = await page.waitForFunction(
    () => !document.querySelector("#ck-body").innerText.includes("Loading"), null, { timeout: 10_000 })
    .then(() => true, () => false);
  check(loaded, "the checkpoint list never loaded");

  step(`upload the model folder as a tar (${fs.statSync(tarPath).size} bytes)`);
  await page.fill("#ck-name", ckName);
  await page.setInputFiles("#ck-file", tarPath);
  const [ckRes] = await Promise.all([
    page.waitForResponse((r) => r.url().startsWith(base + "/v1/checkpoints?") && r.request().method() === "POST", { timeout: 20_000 }),
    page.click("#ck-submit"),
  ]);
  check(ckRes.status() === 201, `checkpoint upload answered ${ckRes.status()}; the page says: ` +
    (await page.locator("#ck-error").innerText()));
  check(ckRes.request().headers()["content-type"] === "application/x-tar", "the tar was not sent as application/x-tar");
  const ckRow = page.locator("#ck-body tr").filter({ hasText: ckName });
  await ckRow.waitFor();
  const ck = (await apiCall("GET", "/v1/checkpoints/" + (await ckRow.getAttribute("data-id")))).data;
  check(ck && ck.name === ckName, "the checkpoint row does not lead to the uploaded checkpoint");
  const ckText = await ckRow.innerText();
  check(ckText.includes(ckName) && ckText.includes(ck.id), `the checkpoint row lacks its name or id: ${ckText}`);
  check(ckText.includes("llama"), `the checkpoint row does not show the architecture: ${ckText}`);
  check(ck.format === "folder", `the checkpoint is a ${ck.format}, not a folder`);

  step("upload the evaluation dataset");
  await page.fill("#ds-name", dsName);
  await page.setInputFiles("#ds-file", EVAL_DATA);
  const [dsRes] = await Promise.all([
    page.waitForResponse((r) => r.url().startsWith(base + "/v1/datasets?") && r.request().method() === "POST"),
    page.click("#ds-submit"),
  ]);
  check(dsRes.status() === 201, `dataset upload answered ${dsRes.status()}; the page says: ` +
    (await page.locator("#ds-error").innerText()));
  const dsRow = page.locator("#ds-body tr").filter({ hasText: dsName });
  await dsRow.waitFor();
  const ds = (await apiCall("GET", "/v1/datasets/" + (await dsRow.getAttribute("data-id")))).data;
  check(ds && ds.name === dsName, "the dataset row does not lead to the uploaded dataset");
  const dsText = await dsRow.innerText();
  check(dsText.includes(`${ds.rows} × ${ds.columns}`) && dsText.includes("tokens"),
    `the dataset row does not show kind and rows × columns: ${dsText}`);

  step("submit a 2:4 magnitude job evaluated on that dataset");
  check((await page.inputValue("#job-checkpoint")) === ck.id, "the new checkpoint is not selected in the job form");
  await page.selectOption("#job-method", "magnitude");
  await page.fill("#job-sparsity", "");
  await page.selectOption("#job-pattern", "2:4");
  await page.selectOption("#job-evaluation", ds.id);
  const [jobRes] = await Promise.all([
    page.waitForResponse((r) => r.url() === base + "/v1/jobs" && r.request().method() === "POST"),
    page.click("#job-submit"),
  ]);
  const sent = JSON.parse(jobRes.request().postData());
  check(jobRes.status() === 202, `POST /v1/jobs answered ${jobRes.status()}; the page says: ` +
    (await page.locator("#job-error").innerText()));
  const wantSpec = { checkpoint: ck.id, method: "magnitude", pattern: "2:4", evaluation: { dataset: ds.id } };
  check(JSON.stringify(sent) === JSON.stringify(wantSpec),
    `the form sent ${JSON.stringify(sent)}, expected only the fields set: ${JSON.stringify(wantSpec)}`);
  const jobLink = page.locator('#job-msg a[href^="#/jobs/"]');
  await jobLink.waitFor();
  const jobId = (await jobLink.getAttribute("href")).slice("#/jobs/".length);

  step(`watch ${jobId} in the job list`);
  const jobRow = page.locator(`#job-body tr[data-job-id="${jobId}"]`);
  await jobRow.waitFor();
  check(await jobRow.locator('[role="progressbar"]').count() === 1, "the job row has no progress bar");
  const seen = new Set();
  const deadline = Date.now() + 30_000;
  for (;;) {
    const st = await jobRow.getAttribute("data-status");
    seen.add(st);
    if (st === "succeeded") break;
    check(st === "queued" || st === "running", `the job ended ${st}; the row says: ${await jobRow.innerText()}`);
    check(Date.now() < deadline, `the job is still ${st} after 30 s`);
    await page.waitForTimeout(150);
  }
  const bar = jobRow.locator('[role="progressbar"]');
  check((await bar.getAttribute("aria-valuenow")) === "100", "the progress bar of the succeeded job is not full");
  check((await jobRow.locator(".badge").innerText()).trim() === "succeeded", "the status badge does not say succeeded");
  step(`the list showed the job as: ${[...seen].join(" → ")}`);
  await page.screenshot({ path: path.join(shotDir, "dashboard.png"), fullPage: true });
  assertClean("main view");

  const job = (await apiCall("GET", "/v1/jobs/" + jobId)).data;
  check(job && job.result && job.result.metric, "the API's job has no result metric");
  const nLayers = job.result.layers.length;
  check(nLayers === LAYERS, `the API reports ${nLayers} pruned layers, expected ${LAYERS}`);

  step("open the job's page");
  await jobRow.locator(`a[href="#/jobs/${jobId}"]`).click();
  await page.waitForURL(`**/#/jobs/${jobId}`);
  await page.locator("#job-view").waitFor({ state: "visible" });
  check(await page.locator("#main-view").isHidden(), "the main view is still shown on the job page");
  check((await page.locator("#job-status").getAttribute("data-status")) === "succeeded", "the job page does not say succeeded");
  const chart = page.locator("#job-view svg.layer-chart");
  await chart.waitFor();
  const bars = await chart.locator("rect.layer-bar").count();
  check(bars === nLayers, `the chart has ${bars} bars, the job has ${nLayers} layers`);
  const heights = await chart.locator("rect.layer-bar").evaluateAll((rs) => rs.map((r) => +r.getAttribute("height")));
  check(heights.every((v) => v > 0), "a bar of the chart has no height though every layer is half pruned");
  const tips = await chart.locator("rect.layer-bar title").allTextContents();
  check(tips.length === nLayers && tips.every((t, i) => t.includes(job.result.layers[i].name)),
    "the chart's bars are not labelled with their tensor names");
  const rows = await page.locator("#layer-table tbody tr").count();
  check(rows === nLayers, `the layer table has ${rows} rows, expected ${nLayers}`);

  const m = job.result.metric;
  check(m.name === "perplexity", `the metric is ${m.name}, expected perplexity`);
  for (const which of ["dense", "pruned"]) {
    const txt = (await page.locator(`#metric [data-metric="${which}"]`).innerText()).trim();
    const v = Number(txt);
    check(/^[0-9]+(\.[0-9]+)?$/.test(txt) && isFinite(v), `the ${which} perplexity is not shown as a number: ${JSON.stringify(txt)}`);
    check(Math.abs(v - m[which]) <= 1e-3 * Math.abs(m[which]) + 1e-4,
      `the page shows ${which} perplexity ${v}, the API says ${m[which]}`);
  }
  check((await page.locator("#metric").innerText()).toLowerCase().includes("perplexity"), "the metric is not named");
  check((await page.locator("#model-sparsity").innerText()).includes((job.result.model.sparsity * 100).toFixed(2) + "%"),
    "the model sparsity is not shown");

  const links = page.locator("#downloads a.dl");
  const hrefs = await links.evaluateAll((as) => as.map((a) => a.getAttribute("href")));
  check(hrefs[0] === `/v1/jobs/${jobId}/artifact`, `the first download link is ${hrefs[0]}`);
  check(hrefs.length === job.artifact.files.length + 1, `${hrefs.length - 1} file links for ${job.artifact.files.length} files`);
  for (const href of hrefs) {
    const r = await apiCall("GET", href);
    check(r.status === 200, `download link ${href} answered ${r.status}`);
  }
  await page.screenshot({ path: path.join(shotDir, "dashboard-job.png"), fullPage: true });
  assertClean("job page");

  step("API errors are shown in plain words");
  await page.click("#back");
  await page.locator("#main-view").waitFor({ state: "visible" });
  await page.selectOption("#job-checkpoint", ck.id);
  await page.selectOption("#job-pattern", "");
  await page.selectOption("#job-evaluation", "");
  await page.fill("#job-sparsity", "1.5");
  let want = await apiCall("POST", "/v1/jobs", { checkpoint: ck.id, method: "magnitude", sparsity: 1.5 });
  check(want.status === 422 && want.data.detail, `sparsity 1.5 answered ${want.status}, expected a 422 problem`);
  await page.click("#job-submit");
  await expectText(page.locator("#job-error"), want.data.detail, "sparsity 1.5");
  const errText = await page.locator("#job-error").innerText();
  check(errText.includes(want.data.title) && errText.includes(`field: ${want.data.field}`),
    `the error does not name its title and field: ${errText}`);
  check(await page.locator("#job-sparsity.invalid").count() === 1, "the sparsity field is not marked invalid");

  await page.fill("#job-sparsity", "");
  await page.selectOption("#job-pattern", "custom");
  await page.fill("#job-pattern-custom", "3:5");
  want = await apiCall("POST", "/v1/jobs", { checkpoint: ck.id, method: "magnitude", pattern: "3:5" });
  check(want.status === 422 && want.data.detail, `pattern 3:5 answered ${want.status}, expected a 422 problem`);
  await page.click("#job-submit");
  await expectText(page.locator("#job-error"), want.data.detail, "pattern 3:5");
  check(await page.locator("#job-sparsity.invalid").count() === 0, "the sparsity error was not cleared");

  step("a structured job from the form: a quarter of the heads and channels");
  await page.selectOption("#job-pattern", "");
  await page.selectOption("#job-method", "random");
  await page.selectOption("#job-evaluation", ds.id);
  await page.fill("#job-heads", "1");
  want = await apiCall("POST", "/v1/jobs", { checkpoint: ck.id, method: "random", evaluation: { dataset: ds.id },
    structure: { heads: 1 } });
  check(want.status === 422 && want.data.field === "structure.heads", `heads 1 answered ${want.status}`);
  await page.click("#job-submit");
  await expectText(page.locator("#job-error"), want.data.detail, "structure heads 1");
  check(await page.locator("#job-heads.invalid").count() === 1, "the heads field is not marked invalid");
  await page.fill("#job-heads", "0.25");
  await page.fill("#job-channels", "0.25");
  const [sRes] = await Promise.all([
    page.waitForResponse((r) => r.url() === base + "/v1/jobs" && r.request().method() === "POST"),
    page.click("#job-submit"),
  ]);
  const sSent = JSON.parse(sRes.request().postData());
  const sWant = { checkpoint: ck.id, method: "random", evaluation: { dataset: ds.id },
    structure: { heads: 0.25, channels: 0.25 } };
  check(sRes.status() === 202 && JSON.stringify(sSent) === JSON.stringify(sWant),
    `the structured form sent ${JSON.stringify(sSent)} (${sRes.status()}), expected ${JSON.stringify(sWant)}`);
  const sId = (await sRes.json()).id;
  let sJob = null;
  for (const until = Date.now() + 30_000; Date.now() < until; await page.waitForTimeout(200)) {
    sJob = (await apiCall("GET", "/v1/jobs/" + sId)).data;
    if (sJob.status !== "queued" && sJob.status !== "running") break;
  }
  check(sJob.status === "succeeded", `the structured job ended ${sJob.status}`);
  await page.goto(`${base}/#/jobs/${sId}`);
  const size = page.locator("#job-size");
  await size.waitFor();
  const sizeText = await size.innerText();
  check(sizeText.includes("Params") && sizeText.includes("FLOPs per token") && sizeText.includes("tokens/s") &&
    sizeText.includes("heads") && sizeText.includes("4 → 3"),
    `the size card does not show the shrink: ${sizeText}`);
  const blocksCard = page.locator("#job-removed");
  await blocksCard.waitFor();
  check((await blocksCard.innerText()).includes("block 0"), "the removed units are not shown block by block");
  await page.screenshot({ path: path.join(shotDir, "structured-job.png"), fullPage: true });
  await page.click("#back");
  await page.locator("#main-view").waitFor({ state: "visible" });
  await apiCall("DELETE", "/v1/jobs/" + sId);

  step("a quantized job written as compressed-tensors: the size card shows the compression");
  await page.fill("#job-heads", "");
  await page.fill("#job-channels", "");
  await page.selectOption("#job-method", "magnitude");
  await page.fill("#job-sparsity", "0.5");
  await page.selectOption("#job-qbits", "8");
  await page.check("#job-qsym");
  await page.selectOption("#job-format", "compressed-tensors");
  const [qRes] = await Promise.all([
    page.waitForResponse((r) => r.url() === base + "/v1/jobs" && r.request().method() === "POST"),
    page.click("#job-submit"),
  ]);
  const qSent = JSON.parse(qRes.request().postData());
  const qWant = { checkpoint: ck.id, method: "magnitude", sparsity: 0.5, evaluation: { dataset: ds.id },
    quantize: { bits: 8, symmetric: true }, output: { format: "compressed-tensors" } };
  check(qRes.status() === 202 && JSON.stringify(qSent) === JSON.stringify(qWant),
    `the quantize form sent ${JSON.stringify(qSent)} (${qRes.status()}), expected ${JSON.stringify(qWant)}`);
  const qId = (await qRes.json()).id;
  let qJob = null;
  for (const until = Date.now() + 30_000; Date.now() < until; await page.waitForTimeout(200)) {
    qJob = (await apiCall("GET", "/v1/jobs/" + qId)).data;
    if (qJob.status !== "queued" && qJob.status !== "running") break;
  }
  check(qJob.status === "succeeded", `the quantized job ended ${qJob.status}`);
  await page.goto(`${base}/#/jobs/${qId}`);
  await page.locator("#job-compression").waitFor();
  const stored = await page.locator("#job-stored").innerText();
  const ratio = qJob.result.storage.ratio;
  check(stored.includes("compressed-tensors") && stored.includes(`×${ratio.toFixed(3)}`) && ratio < 0.5,
    `the stored bytes do not show the compression: ${stored}`);
  check((await page.locator("#job-size").innerText()).includes("perplexity"),
    "the size card does not show the metric beside the size");
  const firstRow = await page.locator("#layer-0").innerText();
  check(firstRow.includes("int-quantized+sparse-bitmask (8-bit)"),
    `the tensor table does not say how the tensor is stored: ${firstRow}`);
  await page.screenshot({ path: path.join(shotDir, "quantized-job.png"), fullPage: true });
  await page.click("#back");
  await page.locator("#main-view").waitFor({ state: "visible" });
  await page.selectOption("#job-qbits", "");
  await page.uncheck("#job-qsym");
  await page.selectOption("#job-format", "");
  await page.fill("#job-sparsity", "");
  await apiCall("DELETE", "/v1/jobs/" + qId);

  step("a sensitivity job from the form: magnitude, block by block, two levels; its curves");
  await page.selectOption("#job-method", "magnitude");
  await page.selectOption("#job-kind", "sensitivity");
  await page.locator("#job-sens").waitFor({ state: "visible" });
  await page.fill("#job-levels", "0.5,0.9");
  const [vRes] = await Promise.all([
    page.waitForResponse((r) => r.url() === base + "/v1/jobs" && r.request().method() === "POST"),
    page.click("#job-submit"),
  ]);
  const vSent = JSON.parse(vRes.request().postData());
  const vWant = { checkpoint: ck.id, method: "magnitude", evaluation: { dataset: ds.id }, kind: "sensitivity",
    sensitivity: { levels: [0.5, 0.9] } };
  check(vRes.status() === 202 && JSON.stringify(vSent) === JSON.stringify(vWant),
    `the sensitivity form sent ${JSON.stringify(vSent)} (${vRes.status()}), expected ${JSON.stringify(vWant)}`);
  const vId = (await vRes.json()).id;
  let vJob = null;
  for (const until = Date.now() + 40_000; Date.now() < until; await page.waitForTimeout(200)) {
    vJob = (await apiCall("GET", "/v1/jobs/" + vId)).data;
    if (vJob.status !== "queued" && vJob.status !== "running") break;
  }
  check(vJob.status === "succeeded", `the sensitivity job ended ${vJob.status}`);
  const table = (await apiCall("GET", `/v1/jobs/${vId}/sensitivity`)).data;
  check(table && table.groups.length === 4, "the API's sensitivity table does not have the 4 blocks");
  await page.goto(`${base}/#/jobs/${vId}`);
  const sc = page.locator("#sens-chart");
  await sc.waitFor();
  const lines = await sc.locator("polyline.sens-line").evaluateAll((ls) =>
    ls.map((l) => [l.getAttribute("data-group"), l.getAttribute("points").trim().split(/\s+/).length]));
  check(lines.length === table.groups.length, `the chart has ${lines.length} lines for ${table.groups.length} groups`);
  check(lines.every(([g, n], i) => g === table.groups[i].group && n === table.levels.length + 1),
    `the chart's lines are not one per group with a point per level: ${JSON.stringify(lines)}`);
  check(await sc.locator("line.dense").count() === 1, "the chart has no dense line");
  const trows = await page.locator("#sens-table tbody tr").count();
  check(trows === table.groups.length, `the sensitivity table has ${trows} rows`);
  await page.screenshot({ path: path.join(shotDir, "sensitivity-job.png"), fullPage: true });

  step("a sweep from the form: magnitude and random at 50% and 90%, 8-bit compressed; one line per method");
  await page.click("#back");
  await page.locator("#main-view").waitFor({ state: "visible" });
  await page.selectOption("#job-kind", "sweep");
  await page.locator("#job-sweep").waitFor({ state: "visible" });
  await page.fill("#job-sweep-methods", "magnitude,random");
  await page.fill("#job-sweep-levels", "0.5,0.9");
  await page.selectOption("#job-qbits", "8");
  await page.check("#job-qsym");
  await page.selectOption("#job-format", "compressed-tensors");
  const [wRes] = await Promise.all([
    page.waitForResponse((r) => r.url() === base + "/v1/jobs" && r.request().method() === "POST"),
    page.click("#job-submit"),
  ]);
  const wSent = JSON.parse(wRes.request().postData());
  const wWant = { checkpoint: ck.id, method: "magnitude", evaluation: { dataset: ds.id },
    quantize: { bits: 8, symmetric: true }, output: { format: "compressed-tensors" }, kind: "sweep",
    sweep: { methods: ["magnitude", "random"], levels: [0.5, 0.9] } };
  check(wRes.status() === 202 && JSON.stringify(wSent) === JSON.stringify(wWant),
    `the sweep form sent ${JSON.stringify(wSent)} (${wRes.status()}), expected ${JSON.stringify(wWant)}`);
  const wId = (await wRes.json()).id;
  let wJob = null;
  for (const until = Date.now() + 40_000; Date.now() < until; await page.waitForTimeout(200)) {
    wJob = (await apiCall("GET", "/v1/jobs/" + wId)).data;
    if (wJob.status !== "queued" && wJob.status !== "running") break;
  }
  check(wJob.status === "succeeded" && wJob.result.points.length === 4, `the sweep ended ${wJob.status}`);
  await page.goto(`${base}/#/jobs/${wId}`);
  const wc = page.locator("#sweep-chart");
  await wc.waitFor();
  const wLines = await wc.locator("polyline.sens-line").evaluateAll((ls) =>
    ls.map((l) => [l.getAttribute("data-group"), l.getAttribute("points").trim().split(/\s+/).length]));
  check(JSON.stringify(wLines) === JSON.stringify([["magnitude", 3], ["random", 3]]),
    `the sweep chart is not one line per method through its points: ${JSON.stringify(wLines)}`);
  const wRows = await page.locator("#sweep-table tbody tr").count();
  check(wRows === 4, `the sweep table has ${wRows} rows, expected 4`);
  // Quantized and compressed: the metric against the stored size too.
  const sizeLines = await page.locator("#sweep-size-chart polyline.sens-line").count();
  check(sizeLines === 2, `the size chart has ${sizeLines} lines, expected one per method`);
  const ratios = wJob.result.points.map((p) => p.ratio);
  check(ratios.every((x) => x < 0.5) && ratios[1] < ratios[0],
    `the compressed points are not smaller, the sparser smaller still: ${JSON.stringify(ratios)}`);
  await page.screenshot({ path: path.join(shotDir, "sweep-job.png"), fullPage: true });
  await apiCall("DELETE", "/v1/jobs/" + wId);
  await page.click("#back");
  await page.locator("#main-view").waitFor({ state: "visible" });
  await page.selectOption("#job-kind", "");
  await page.selectOption("#job-qbits", "");
  await page.uncheck("#job-qsym");
  await page.selectOption("#job-format", "");
  await page.goto(`${base}/#/jobs/${vId}`);
  await page.locator("#sens-chart").waitFor();

  step("a prune job allocated from those curves, chosen in the form");
  await page.click("#back");
  await page.locator("#main-view").waitFor({ state: "visible" });
  await page.selectOption("#job-kind", "");
  await page.fill("#job-sparsity", "0.6");
  await page.selectOption("#job-allocation", "sensitivity");
  await page.locator(`#job-alloc-from option[value="${vId}"]`).waitFor({ state: "attached" });
  await page.selectOption("#job-alloc-from", vId);
  const [aRes] = await Promise.all([
    page.waitForResponse((r) => r.url() === base + "/v1/jobs" && r.request().method() === "POST"),
    page.click("#job-submit"),
  ]);
  const aSent = JSON.parse(aRes.request().postData());
  const aWant = { checkpoint: ck.id, method: "magnitude", sparsity: 0.6, evaluation: { dataset: ds.id },
    allocation: { method: "sensitivity", from: vId } };
  check(aRes.status() === 202 && JSON.stringify(aSent) === JSON.stringify(aWant),
    `the allocation form sent ${JSON.stringify(aSent)} (${aRes.status()}), expected ${JSON.stringify(aWant)}`);
  const aId = (await aRes.json()).id;
  let aJob = null;
  for (const until = Date.now() + 30_000; Date.now() < until; await page.waitForTimeout(200)) {
    aJob = (await apiCall("GET", "/v1/jobs/" + aId)).data;
    if (aJob.status !== "queued" && aJob.status !== "running") break;
  }
  check(aJob.status === "succeeded" && aJob.result.allocation.method === "sensitivity",
    `the allocated job ended ${aJob.status}`);
  await page.selectOption("#job-allocation", "");
  await page.fill("#job-sparsity", "");
  await apiCall("DELETE", "/v1/jobs/" + aId);
  await apiCall("DELETE", "/v1/jobs/" + vId);
  assertClean("sensitivity");

  const notData = path.join(MODEL_DIR, "config.json");
  want = await apiCall("POST", "/v1/datasets?name=x", fs.readFileSync(notData), "application/octet-stream");
  check(want.status >= 400 && want.data && want.data.detail, `a JSON file as a dataset answered ${want.status}`);
  await page.setInputFiles("#ds-file", notData);
  await page.click("#ds-submit");
  await expectText(page.locator("#ds-error"), want.data.detail, "a JSON file as a dataset");
  assertClean("errors");

  step("delete the job, the dataset and the checkpoint with the page's buttons");
  page.on("dialog", (d) => d.accept());
  await page.goto(`${base}/#/jobs/${jobId}`);
  await page.locator("#job-view .title-row button.danger").click();
  await page.waitForURL((u) => !u.hash.startsWith("#/jobs/"));
  await jobRow.waitFor({ state: "detached" });
  check((await apiCall("GET", "/v1/jobs/" + jobId)).status === 404, "the job is still there after Delete");
  await dsRow.locator("button.danger").click();
  await dsRow.waitFor({ state: "detached" });
  await ckRow.locator("button.danger").click();
  await ckRow.waitFor({ state: "detached" });
  check((await apiCall("GET", "/v1/checkpoints/" + ck.id)).status === 404, "the checkpoint is still there after Delete");
  check((await apiCall("GET", "/v1/datasets/" + ds.id)).status === 404, "the dataset is still there after Delete");
  assertClean("deletes");

  step(`ok: dashboard drove upload, job, chart (${bars} bars), perplexity ${m.dense.toFixed(3)} → ` +
    `${m.pruned.toFixed(3)}, errors and deletes; screenshots in ${shotDir}`);
}

run().then(() => finish(null), (e) => finish(e));
