// The console defects of issue 16 (item 11) in headless Chromium (playwright-core, the system's chromium):
//   node tests/http/console_defects.mjs <console url>
// An ImageGen panel; the jobs table's action column inside its panel, no cancel button on finished
// jobs; random weights said next to backends, chat answers and images. Prints one JSON line.
import { chromium } from "playwright-core";

const [url] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"],
});
const report = { consoleErrors: [] };
try {
  // A narrow window: each panel gets its minimum width, where the jobs table was clipped.
  const page = await browser.newPage({ viewport: { width: 900, height: 1200 } });
  page.on("console", (message) => { if (message.type() === "error") report.consoleErrors.push(message.text()); });
  await page.goto(url);
  await page.waitForSelector('#capabilities li[data-capability="llm"] .dot.ok', { timeout: 20000 });
  report.randomWeightBackends = await page.$$eval("#capabilities li", (items) => items
    .filter((item) => item.querySelector(".random-weights")).map((item) => item.dataset.capability));

  await page.click("#image-form button");
  await page.waitForFunction(() => ["done"].includes(document.querySelector("#image-status").textContent)
    || document.querySelector("#image-status").classList.contains("error-text"), null, { timeout: 60000 });
  report.imageStatus = await page.textContent("#image-status");
  report.imageWidth = await page.$eval("#image-output", (image) => image.naturalWidth);
  report.imageNote = await page.$eval("#image-note", (note) => (note.hidden ? "" : note.textContent));

  await page.fill('#chat-form input[name="message"]', "Hello");
  await page.click("#chat-form button");
  await page.waitForFunction(() => document.querySelector("#chat-status").textContent === "done", null, { timeout: 30000 });
  report.chatNote = await page.$eval("#chat-note", (note) => (note.hidden ? "" : note.textContent));

  // A job submitted and finished: its row shows no cancel button, and the table stays in its panel.
  const jobId = await page.evaluate(async () => {
    const response = await fetch("/v1/jobs", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ method: "/capmesh.tts.v1.TtsService/StreamSynthesize", request: { text: "A job." } }) });
    return (await response.json()).operation.metadata.jobId;
  });
  await page.waitForSelector(`#jobs tbody tr[data-job="${jobId}"][data-state="JOB_STATE_SUCCEEDED"]`, { timeout: 30000 });
  report.finishedCancelVisible = await page.$eval(`#jobs tbody tr[data-job="${jobId}"] .cancel`,
    (button) => !button.hidden && button.offsetParent !== null);
  report.actionInside = await page.evaluate(() => {
    const panel = document.querySelector("#jobs-panel").getBoundingClientRect();
    const action = document.querySelector("#jobs th.action").getBoundingClientRect();
    const table = document.querySelector("#jobs").getBoundingClientRect();
    return action.width >= 60 && action.right <= panel.right + 0.5 && table.right <= panel.right + 0.5;
  });
  report.ok = true;
} catch (error) {
  report.ok = false;
  report.error = String(error);
} finally {
  await browser.close();
}
console.log(JSON.stringify(report));
process.exit(report.ok ? 0 : 1);
