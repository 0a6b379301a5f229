// Drives the web console in headless Chromium (playwright-core, the system's chromium):
//   node tests/http/console_check.mjs <console url> <screenshot path> <image path>
// Prints one JSON line with what it saw; exits non-zero when a step fails.
import { chromium } from "playwright-core";

const [url, screenshotPath, imagePath] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"],
});
const report = { consoleErrors: [], requests: [] };
let page = null;
try {
  page = await browser.newPage({ viewport: { width: 1400, height: 1100 } });
  page.on("console", (message) => { if (message.type() === "error") report.consoleErrors.push(message.text()); });
  page.on("request", (request) => report.requests.push(request.url()));
  page.on("response", (response) => { if (response.status() >= 400) report.consoleErrors.push(`${response.status()} ${response.url()}`); });
  await page.goto(url);

  // Capabilities with live health over the WatchCapabilities SSE stream.
  await page.waitForSelector('#capabilities li[data-capability="tts"] .dot.ok', { timeout: 20000 });
  report.watchState = await page.textContent("#watch-state");
  report.capabilities = await page.$$eval("#capabilities li", (items) =>
    items.map((item) => ({ name: item.dataset.capability, state: item.dataset.state, green: !!item.querySelector(".dot.ok") })));

  // Speak a text and get a playable audio element.
  await page.click("#speak-form button");
  await page.waitForFunction(() => document.querySelector("#speak-status").textContent === "done", null, { timeout: 30000 });
  report.audioDuration = await page.$eval("#speak-audio", (audio) => new Promise((resolve) => {
    if (audio.readyState >= 1) resolve(audio.duration); else audio.addEventListener("loadedmetadata", () => resolve(audio.duration));
  }));

  // Chat with streaming.
  await page.fill('#chat-form input[name="message"]', "Hello");
  await page.click("#chat-form button");
  await page.waitForFunction(() => document.querySelector("#chat-status").textContent === "done", null, { timeout: 30000 });
  report.chatLines = await page.$$eval("#chat-log div", (lines) => lines.map((line) => line.className));

  // A video job with a live progress bar, then the video itself.
  await page.setInputFiles('#video-form input[name="image"]', imagePath);
  await page.fill('#video-form input[name="frames"]', "5");
  await page.click("#video-form button");
  await page.waitForSelector('#jobs tbody tr[data-state="JOB_STATE_SUCCEEDED"]', { timeout: 90000 });
  report.jobProgress = await page.$eval('#jobs tbody tr[data-state="JOB_STATE_SUCCEEDED"] progress', (bar) => bar.value);
  await page.waitForFunction(() => document.querySelector("#video-status").textContent === "done"
    || document.querySelector("#video-status").classList.contains("error-text"), null, { timeout: 30000 });
  report.videoStatus = await page.textContent("#video-status");
  report.videoSource = await page.$eval("#video-video", (video) => video.src.slice(0, 5));

  await page.screenshot({ path: screenshotPath, fullPage: true });

  // The API docs page renders the OpenAPI document by itself.
  await page.goto(new URL("/docs", url).href);
  await page.waitForSelector("details.op", { timeout: 20000 });
  report.docsOperations = await page.$$eval("details.op", (items) => items.length);
  report.ok = true;
} catch (error) {
  report.ok = false;
  report.error = String(error);
  try {
    report.statuses = await page.$$eval(".status", (items) => items.map((item) => item.textContent));
    report.jobs = await page.$$eval("#jobs tbody tr", (rows) => rows.map((row) => row.textContent));
    await page.screenshot({ path: screenshotPath, fullPage: true });
  } catch (_) { /* best effort: the page may be gone */ }
} finally {
  await browser.close();
}
console.log(JSON.stringify(report));
process.exit(report.ok ? 0 : 1);
