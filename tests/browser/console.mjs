// Drives the operator console in Debian's Chromium with playwright-core.
// Run by crates/cli/tests/console.rs against a real orchestrator it seeded:
//   BASE_URL, TOKEN (admin), SCREENSHOTS (a directory), CHROMIUM (the binary).
// Opens every page (a screenshot of each), resumes the needs_operator saga,
// cancels a running one and redrives the dead-lettered message through the
// UI, and checks a live update arrives without a reload. Exits non-zero on
// the first failed check, printing what it saw.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

const base = process.env.BASE_URL;
const token = process.env.TOKEN;
const shots = process.env.SCREENSHOTS;
if (!base || !token || !shots) {
  console.error("BASE_URL, TOKEN and SCREENSHOTS must be set");
  process.exit(2);
}
mkdirSync(shots, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
const errors = [];
page.on("pageerror", (e) => errors.push(String(e)));
page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
page.setDefaultTimeout(15000);

let step = "start";
function check(cond, what) {
  if (!cond) throw new Error(`${step}: ${what}`);
}

async function open(hash, page_name) {
  step = "open " + hash;
  await page.evaluate(() => { document.getElementById("main").dataset.ready = ""; });
  await page.evaluate((h) => { location.hash = h; }, hash);
  await page.waitForSelector(`main[data-ready="1"][data-page="${page_name}"]`);
}

async function shot(name) {
  await page.screenshot({ path: join(shots, name + ".png"), fullPage: true });
}

async function toast(text) {
  await page.waitForFunction((t) => document.getElementById("toast").textContent.includes(t), text);
}

/** Every form control on the page has a label a screen reader announces. */
async function labelled() {
  const unlabelled = await page.evaluate(() =>
    [...document.querySelectorAll("input, select, button")]
      .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute("aria-label") && !el.textContent.trim())
      .map((el) => el.outerHTML.slice(0, 80)));
  check(unlabelled.length === 0, "controls without a label: " + unlabelled.join(" | "));
}

async function api(path, method = "GET") {
  return page.evaluate(async ([p, m, t]) => {
    const r = await fetch("/api/v1" + p, { method: m, headers: { Authorization: "Bearer " + t } });
    return { status: r.status, body: await r.json() };
  }, [path, method, token]);
}

try {
  step = "load";
  await page.goto(base + "/");
  // Without a token the API refuses, and the page says so.
  await page.waitForSelector('main[data-ready="1"]');
  check((await page.textContent("main")).includes("needs a token"), "the page asks for a token");
  // Keyboard: the first Tab reaches the skip link.
  await page.keyboard.press("Tab");
  check(await page.evaluate(() => document.activeElement.classList.contains("skip")), "first Tab lands on the skip link");
  errors.length = 0; // the 401s of the token-less first load were the point
  await page.fill("#token", token);
  await page.click("#token-form button");
  await page.waitForFunction(() => document.getElementById("whoami").textContent.includes("as admin"));

  await open("#/", "overview");
  check((await page.textContent("main")).includes("order-stuck"), "the overview lists the saga needing an operator");
  check(await page.isVisible("text=Dead-letter queues"), "DLQ depths shown");
  await labelled();
  await shot("overview");

  await open("#/sagas", "sagas");
  await labelled();
  await shot("sagas");
  step = "filter";
  await page.selectOption("#f-status", "needs_operator");
  await page.click("form.filters button[type=submit]");
  await page.waitForFunction(() => location.hash.includes("status=needs_operator") && document.querySelectorAll("main tbody tr").length === 1);
  check((await page.textContent("main tbody")).includes("order-stuck"), "the filter keeps order-stuck");

  await open("#/saga/order-stuck", "sagas");
  await page.waitForSelector("svg.graph g[data-node=step0][data-state=compensation_failed]");
  await labelled();
  await shot("saga");
  step = "resume";
  await page.click("button#resume");
  await toast("Resume: requested");
  // The orchestrator acts on it; the page follows (live stream or re-render).
  await page.waitForFunction(() => document.querySelector("main h2").textContent.includes("compensating"));
  check((await page.textContent("ol.timeline")).includes("resumed by operator"), "the history shows the resume");

  await open("#/operator", "operator");
  await labelled();
  await shot("operator");
  step = "cancel";
  await page.click('button[aria-label="Cancel order-run-1"]');
  await toast("Cancel: requested");

  step = "live update";
  await open("#/saga/order-run-2", "sagas");
  check((await page.textContent("main h2")).includes("running"), "order-run-2 is running");
  // Cancelled behind the page's back: only the live stream can tell it.
  const r = await api("/sagas/order-run-2/cancel", "POST");
  check(r.status === 202, "cancel through the API: " + JSON.stringify(r));
  await page.waitForFunction(() => /compensat/.test(document.querySelector("main h2").textContent));
  check((await page.textContent("ol.timeline")).includes("cancelled by admin"), "the history names who cancelled");
  await shot("saga-cancelled");

  await open("#/dlq/inventory", "dlq");
  await page.waitForSelector("button[data-redrive]");
  check((await page.textContent("main")).includes("not a known sqsaga envelope"), "the reason is shown");
  await labelled();
  await shot("dlq");
  step = "redrive";
  await page.click("button[data-redrive]");
  await toast("Redrive: requested");
  await page.waitForFunction(() => document.querySelector("main").textContent.includes("This dead-letter queue is empty."));

  await open("#/fleet", "fleet");
  await shot("fleet");
  await open("#/definitions", "definitions");
  await shot("definitions");
  await open("#/definition/create_order/1", "definitions");
  await page.waitForSelector("svg.graph");
  await shot("definition");

  check(errors.length === 0, "console errors: " + errors.join(" | "));
  console.log("console test passed");
} catch (e) {
  console.error(String(e && e.stack || e));
  try { await shot("failure"); } catch (_) { /* the browser may be gone */ }
  try { console.error((await page.textContent("main")).slice(0, 2000)); } catch (_) { /* idem */ }
  await browser.close();
  process.exit(1);
}
await browser.close();
