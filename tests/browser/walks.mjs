// The seed workflows walked through the admin console in headless Chromium (Debian's), against
// a real server that run.sh started. Each step asserts what the page shows; a screenshot of
// every page visited is saved to $SHOTS. Waits are for conditions (an element, a state), never
// for a fixed time.
import assert from "node:assert/strict";
import crypto from "node:crypto";
import http from "node:http";
import { chromium } from "playwright-core";

const ADMIN = process.env.ADMIN;
const PHONES_HTTP = process.env.PHONES_HTTP;
const TOKEN = process.env.TOKEN;
const SHOTS = process.env.SHOTS;
const G = "ZZZ1900111-01";

// ------------------------------------------------------------------ the API, to set the scene

async function api(method, path, body) {
  const r = await fetch(ADMIN + path, {
    method,
    headers: { authorization: `Bearer ${TOKEN}`, ...(body ? { "content-type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await r.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${text}`);
  return json;
}

// A phone fetching a file over plain HTTP with HTTP Digest (RFC 7616), as the phone would.
function get(url, headers) {
  return new Promise((resolve, reject) => {
    http.get(url, { headers }, (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString() }));
    }).on("error", reject);
  });
}

async function phoneFetch(mac, password, file, ua = "Yealink SIP-T54W 96.86.0.100") {
  const url = `${PHONES_HTTP}/${file}`;
  const first = await get(url, { "user-agent": ua });
  if (first.status !== 401) return first;
  const challenge = String(first.headers["www-authenticate"]);
  const m = challenge.match(/realm="([^"]+)", qop="auth", algorithm=(SHA-256|MD5), nonce="([^"]+)"/);
  assert.ok(m, `a digest challenge: ${challenge}`);
  const [, realm, alg, nonce] = m;
  const h = (s) => crypto.createHash(alg === "MD5" ? "md5" : "sha256").update(s).digest("hex");
  const uri = `/${file}`, nc = "00000001", cnonce = "c0ffee01";
  const response = h(`${h(`${mac}:${realm}:${password}`)}:${nonce}:${nc}:${cnonce}:auth:${h(`GET:${uri}`)}`);
  const auth = `Digest username="${mac}", realm="${realm}", nonce="${nonce}", uri="${uri}", algorithm=${alg}, qop=auth, nc=${nc}, cnonce="${cnonce}", response="${response}"`;
  return get(url, { "user-agent": ua, authorization: auth });
}

// ------------------------------------------------------------------ the walk runner

const results = [];
let shot = 0;
async function snap(page, name) {
  shot += 1;
  await page.screenshot({ path: `${SHOTS}/${String(shot).padStart(2, "0")}-${name}.png`, fullPage: true });
}

async function step(name, page, fn) {
  process.stdout.write(`walk: ${name} ... `);
  try {
    await fn();
    results.push([name, true]);
    console.log("ok");
  } catch (e) {
    results.push([name, false]);
    console.log("FAILED");
    console.error(e);
    await page.screenshot({ path: `${SHOTS}/failed-${name.replace(/\W+/g, "-")}.png`, fullPage: true }).catch(() => {});
  }
}

const text = async (page, sel) => (await page.locator(sel).first().innerText()).trim();

// ------------------------------------------------------------------ the scene: the guides' group

await api("POST", "/api/v1/groups", { id: G, name: "ProConnect demo", shared_line_licenses: 2, sip: { domain: "sip.example.net", proxy: "proxy.example.net" } });
await api("POST", `/api/v1/groups/${G}/users`, { extension: "1001", first_name: "Ada", last_name: "Lovelace", phone_number: "6035551212" });
await api("POST", `/api/v1/groups/${G}/users`, { extension: "5555", first_name: "Bob", last_name: "Stone" });
await api("POST", `/api/v1/groups/${G}/devices`, { mac: "0004F2000001", name: "Reception", model: "polycom-vvx-450", owner: "1001" });
const desk = await api("POST", `/api/v1/groups/${G}/devices`, { mac: "805EC0000002", name: "Desk 5555", model: "yealink-t54w", owner: "5555" });
await api("POST", `/api/v1/groups/${G}/devices`, { mac: "0004F2000003", name: "Lobby", model: "polycom-vvx-411" });
const deskMac = desk.mac;
const deskPassword = desk.credentials.password;
const deskFiles = desk.files;
async function deskFetchesEverything() {
  for (const f of deskFiles) {
    const r = await phoneFetch(deskMac, deskPassword, f);
    assert.equal(r.status, 200, `phone fetch of ${f}: ${r.status} ${r.body}`);
  }
}

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 800 } });
const page = await context.newPage();
page.setDefaultTimeout(15000);

await step("sign in: / leads to the sign-in page, a token opens the dashboard", page, async () => {
  await page.goto(ADMIN + "/");
  assert.match(page.url(), /\/ui\/login/);
  await snap(page, "sign-in");
  await page.getByLabel("Admin token").fill(TOKEN);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.locator("h1", { hasText: "Dashboard" }).waitFor();
  assert.match(await text(page, "table"), /ZZZ1900111-01/);
  await snap(page, "dashboard");
});

await step("keyboard: the first Tab reaches the skip link", page, async () => {
  await page.keyboard.press("Tab");
  const focused = await page.evaluate(() => document.activeElement && document.activeElement.textContent.trim());
  assert.equal(focused, "Skip to content");
});

await step("SCA (guide 000): Users -> 1001 -> Shared Call Appearance -> + -> Device Name, Line Port -> Save; the device's state changes", page, async () => {
  await deskFetchesEverything(); // Desk 5555 starts in sync
  await page.goto(ADMIN + "/ui/");
  await page.getByRole("link", { name: "Users" }).first().click();
  await page.getByRole("link", { name: "1001" }).click();
  await page.getByRole("link", { name: "Shared Call Appearance" }).click();
  await page.locator("h1", { hasText: "Shared Call Appearance" }).waitFor();
  // The format hint and the next free line port are offered.
  assert.match(await text(page, "#line_port-hint"), /6035551212_sca1/);
  assert.equal(await page.getByLabel("Line Port").inputValue(), "6035551212_sca1");
  await page.getByLabel("Device Name").selectOption({ label: "Desk 5555 (yealink-t54w, owner 5555)" });
  await page.getByLabel("Label").fill("Ada");
  await page.getByRole("button", { name: "Save" }).click();
  await page.locator("#sca-saved").waitFor();
  assert.match(await text(page, "#sca-saved"), /Saved 6035551212_sca1 on Desk 5555/);
  const state = page.locator("#sca-saved [data-state-of]");
  assert.notEqual((await state.innerText()).trim(), "In sync", "the change is not applied yet");
  await snap(page, "sca-saved-pending");
  assert.match(await text(page, "table"), /6035551212_sca1\s+Desk 5555/);
  // The phone fetches its files; the page shows it in sync without a reload.
  await deskFetchesEverything();
  await page.waitForFunction(() => document.querySelector("#sca-saved [data-state-of]").getAttribute("data-state") === "in_sync");
  assert.equal((await state.innerText()).trim(), "In sync");
  await snap(page, "sca-saved-in-sync");
});

await step("SCA: a Line Port already in use shows line_port_in_use at the Line Port field", page, async () => {
  await page.getByLabel("Device Name").selectOption({ label: "Lobby (polycom-vvx-411)" });
  await page.getByLabel("Line Port").fill("6035551212_sca1");
  await page.getByRole("button", { name: "Save" }).click();
  const err = page.locator("#line_port-error");
  await err.waitFor();
  assert.match(await err.innerText(), /line_port_in_use/);
  assert.equal(await page.getByLabel("Line Port").getAttribute("aria-invalid"), "true");
  await snap(page, "sca-line-port-in-use");
});

await step("SCA: edit an endpoint, then Delete -> Yes, I'm sure", page, async () => {
  await page.goto(`${ADMIN}/ui/groups/${G}/users/1001/sca`);
  await page.getByRole("link", { name: "Edit" }).first().click();
  await page.getByLabel("Label").fill("Ada L.");
  await page.getByRole("button", { name: "Save" }).click();
  await page.locator("#sca-saved").waitFor();
  assert.match(await text(page, "table"), /Ada L\./);
  await page.getByRole("link", { name: "Delete" }).first().click();
  await page.locator("h1", { hasText: "Delete shared call appearance" }).waitFor();
  await snap(page, "sca-delete-confirm");
  await page.getByRole("button", { name: "Yes, I'm sure" }).click();
  await page.getByText("No endpoint shares this line yet.").waitFor();
});

await step("Hot desk (guide 001): a hot-desk user is added and listed as such", page, async () => {
  await page.goto(`${ADMIN}/ui/groups/${G}/users`);
  const form = page.locator("#new-user");
  await form.getByLabel("Extension").fill("0901");
  await form.getByLabel("First name").fill("Hot");
  await form.getByLabel("Last name").fill("Desk");
  await form.getByLabel("Kind").selectOption("hot_desk");
  await form.getByRole("button", { name: "Add user" }).click();
  await page.locator("#once-value").waitFor();
  assert.equal(await page.getByLabel("Kind").inputValue(), "hot_desk");
  await snap(page, "user-created-hot-desk");
});

await step("Shared lines (guide 001): Shared Line List (N Licenses) -> Add -> move a hot-desk user from Available to Member", page, async () => {
  await page.goto(`${ADMIN}/ui/groups/${G}/shared-lines`);
  assert.equal(await text(page, "h1"), "Shared Line List (2 Licenses)");
  const form = page.locator("#add-line");
  await form.getByLabel("Number (2 to 5 digits)").fill("201");
  await form.getByLabel("Direct dial number").fill("6035550201");
  await form.getByLabel("Description").fill("Front desk");
  await form.getByRole("button", { name: "Add" }).click();
  await page.locator("h1", { hasText: "Shared line 201" }).waitFor();
  const avail = page.locator("section", { has: page.locator("#avail-h") });
  assert.match(await avail.innerText(), /0901 Hot Desk\s+Hot desk/);
  await page.getByLabel("Ring option for 0901").selectOption("delayed");
  await page.getByRole("button", { name: "Add 0901 to members" }).click();
  await page.getByText("Member added.").waitFor();
  const members = page.locator("section", { has: page.locator("#mem-h") });
  assert.match(await members.innerText(), /0901 Hot Desk/);
  assert.equal(await page.getByLabel("Ring option for 0901").inputValue(), "delayed");
  await snap(page, "shared-line-members");
  const line = await api("GET", `/api/v1/groups/${G}/shared-lines/201`);
  assert.deepEqual(line.members.map((m) => [m.extension, m.ring]), [["0901", "delayed"]]);
});

await step("Shared lines: a line beyond the licences is refused (no_license)", page, async () => {
  await page.goto(`${ADMIN}/ui/groups/${G}/shared-lines`);
  const form = page.locator("#add-line");
  await form.getByLabel("Number (2 to 5 digits)").fill("202");
  await form.getByRole("button", { name: "Add" }).click();
  await page.locator("h1", { hasText: "Shared line 202" }).waitFor();
  await page.getByRole("link", { name: "Back to the Shared Line List" }).click();
  await page.locator("h1", { hasText: "Shared Line List" }).waitFor();
  assert.match(await text(page, "#licences"), /2 used, 0 free/);
  await form.getByLabel("Number (2 to 5 digits)").fill("203");
  await form.getByRole("button", { name: "Add" }).click();
  const err = page.locator("#line-error");
  await err.waitFor();
  assert.match(await err.innerText(), /no_license/);
  await snap(page, "shared-line-no-license");
});

await step("Extensions (guide 002): Reset password shown once, Duplicate, Delete -> Yes, I'm sure", page, async () => {
  await page.goto(`${ADMIN}/ui/groups/${G}/users/1001`);
  await page.getByRole("button", { name: "Reset password" }).click();
  await page.locator("#once-value").waitFor();
  assert.ok((await text(page, "#once-value")).length >= 8);
  await page.goto(`${ADMIN}/ui/groups/${G}/users/1001`);
  assert.equal(await page.locator("#once-value").count(), 0, "the password is shown once only");
  const dup = page.locator("#duplicate");
  await dup.getByLabel("New extension").fill("1002");
  await dup.getByLabel("First name").fill("Ada");
  await dup.getByLabel("Last name").fill("Twin");
  await dup.getByRole("button", { name: "Duplicate" }).click();
  await page.getByText("Duplicated from 1001").waitFor();
  assert.equal(await page.getByLabel("Last name", { exact: true }).first().inputValue(), "Twin");
  assert.match(await text(page, ".side-title"), /1002/);
  await snap(page, "user-duplicated");
  await page.getByRole("link", { name: "Delete" }).click();
  await page.getByRole("button", { name: "Yes, I'm sure" }).click();
  await page.getByText("User 1002 deleted.").waitFor();
  await snap(page, "users");
});

await step("Users: search finds by name", page, async () => {
  await page.getByLabel("Search users").fill("stone");
  await page.getByRole("button", { name: "Search" }).click();
  const rows = await page.locator("tbody tr").allInnerTexts();
  assert.equal(rows.length, 1);
  assert.match(rows[0], /5555/);
});

await step("Devices: list, key grid, file preview, Resync, hot-desk login/logout, credentials shown once", page, async () => {
  await page.goto(`${ADMIN}/ui/groups/${G}/devices`);
  assert.match(await text(page, "tbody"), /Desk 5555\s+805ec0000002\s+yealink-t54w\s+5555/i);
  await snap(page, "devices");
  await page.getByRole("link", { name: "Reception" }).click();
  await page.locator("h1", { hasText: "Device Reception" }).waitFor();
  assert.match(await text(page, ".keygrid .key.primary"), /1001 \(own line\)/);
  await page.getByRole("button", { name: "Resync" }).click();
  await page.getByText("Re-sync sent.").waitFor();
  await page.getByLabel("Hot-desk user").selectOption("0901");
  await page.getByRole("button", { name: "Log in" }).click();
  await page.getByText("Logged in: 0901").waitFor();
  assert.match(await text(page, ".keygrid .key.primary"), /0901 \(own line\)/);
  await snap(page, "device-hot-desk");
  await page.getByRole("button", { name: "Log out" }).click();
  await page.getByText("Hot-desk user logged out.").waitFor();
  await page.getByRole("button", { name: "Rotate provisioning credentials" }).click();
  assert.match(await text(page, "#once-value"), /username 0004f2000001\s+password \S{8,}/i);
  await page.locator(".card a", { hasText: /\.cfg|\.xml/ }).first().click();
  await page.locator("pre.code").waitFor();
  assert.ok((await text(page, "pre.code")).length > 20);
  await snap(page, "device-file");
});

await step("Unprovisioned: Add this device from the dashboard, with an expansion module drawn as its own key grid", page, async () => {
  const ua = "Cisco-CP-8851-3PCC/11.3.1 (0c1167000010)";
  const r = await get(`${PHONES_HTTP}/0c1167000010.xml`, { "user-agent": ua });
  assert.notEqual(r.status, 200);
  await page.goto(`${ADMIN}/ui/`);
  const row = page.getByRole("row", { name: /0c1167000010/i });
  await row.getByRole("link", { name: "Add this device" }).click();
  const form = page.locator("#new-device");
  await form.waitFor();
  assert.match(await form.getByLabel("MAC address").inputValue(), /0c1167000010/i);
  assert.equal(await form.getByLabel("Model", { exact: true }).inputValue(), "cisco-cp-8851-3pcc", "the model is guessed from the User-Agent");
  await form.getByLabel("Device Name (empty: the MAC)").fill("Boardroom");
  await form.getByLabel(/Expansion modules/).fill("polycom-em50:1");
  await form.getByRole("button", { name: "Add device" }).click();
  const err = page.locator("#new-device .error");
  await err.first().waitFor();
  assert.match(await err.first().innerText(), /validation.*cisco-8800-kem/s);
  await page.locator("#new-device").getByLabel(/Expansion modules/).fill("cisco-8800-kem:1");
  await page.locator("#new-device").getByRole("button", { name: "Add device" }).click();
  await page.locator("h1", { hasText: "Device Boardroom" }).waitFor();
  assert.match(await text(page, "#once-value"), /password \S{8,}/);
  await page.locator("h3", { hasText: "Expansion module cisco-8800-kem #1" }).waitFor();
  assert.equal(await page.locator(".keygrid.module .key").count() > 0, true);
  await snap(page, "device-expansion-module");
});

await step("Device keys: a BLF key typed in the device form appears on the key grid; a bad line is shown at the field", page, async () => {
  await page.goto(`${ADMIN}/ui/devices/0004f2000001`);
  const keys = page.getByLabel(/Programmable keys/);
  await keys.fill("x blf 5555");
  await page.getByRole("button", { name: "Save" }).click();
  await page.locator("#keys-error").waitFor();
  assert.match(await text(page, "#keys-error"), /validation/);
  await page.getByLabel(/Programmable keys/).fill("5 blf 5555 Bob");
  await page.getByRole("button", { name: "Save" }).click();
  await page.getByText("Saved.").waitFor();
  assert.match(await text(page, ".keygrid .key.blf"), /5\s+Bob \(blf 5555\)/);
  await snap(page, "device-keys");
});

await step("Group settings: time zone and language saved; licences below those used refused at the field", page, async () => {
  await page.goto(`${ADMIN}/ui/groups/${G}`);
  await page.getByLabel("Time zone").fill("Europe/Paris");
  await page.getByLabel("Language").fill("fr");
  await page.getByRole("button", { name: "Save" }).first().click();
  await page.getByText("Saved.").waitFor();
  assert.equal(await page.getByLabel("Time zone").inputValue(), "Europe/Paris");
  const g = await api("GET", `/api/v1/groups/${G}`);
  assert.equal(g.settings.timezone, "Europe/Paris");
  assert.equal(g.settings.language, "fr");
  await page.getByLabel("Shared line licences").fill("1");
  await page.getByRole("button", { name: "Save" }).first().click();
  await page.locator("#lic-error").waitFor();
  assert.match(await text(page, "#lic-error"), /no_license/);
  await snap(page, "group-settings");
});

await step("Extensions (guide 002): allowed to log in, Unregister", page, async () => {
  await page.goto(`${ADMIN}/ui/groups/${G}/users/5555`);
  const box = page.getByLabel("Allowed to log in");
  assert.equal(await box.isChecked(), true);
  await box.uncheck();
  await page.getByRole("button", { name: "Save" }).first().click();
  await page.getByText("Saved.").waitFor();
  assert.equal(await page.getByLabel("Allowed to log in").isChecked(), false);
  assert.equal((await api("GET", `/api/v1/groups/${G}/users/5555`)).login_allowed, false);
  await page.getByLabel("Allowed to log in").check();
  await page.getByRole("button", { name: "Save" }).first().click();
  await page.getByText("Saved.").waitFor();
  await page.getByRole("button", { name: "Unregister" }).click();
  await page.locator("#unregistered").waitFor();
  assert.equal((await api("GET", `/api/v1/groups/${G}/users/5555`)).unregistered, true);
  await snap(page, "user-unregistered");
});

await step("Provisioning log: a refused fetch shows its reason to the admin, a repeated request its count", page, async () => {
  // Two bare requests, then the refused exchange's own: one row of three.
  for (let i = 0; i < 2; i++) assert.equal((await get(`${PHONES_HTTP}/${deskFiles[0]}`, { "user-agent": "Yealink SIP-T54W 96.86.0.100" })).status, 401);
  const refused = await phoneFetch(deskMac, "not-the-password", deskFiles[0]);
  assert.equal(refused.status, 401);
  assert.doesNotMatch(refused.body, /wrong/i, "the phone is not told why");
  await page.goto(`${ADMIN}/ui/devices/${deskMac}`);
  const log = page.locator("#prov-log");
  await log.waitFor();
  const first = (await log.locator("tbody tr").first().innerText());
  assert.match(first, /401/);
  assert.match(first, /wrong_credentials\s+wrong credentials/);
  const second = (await log.locator("tbody tr").nth(1).innerText());
  assert.match(second, /401\s*×3/, "the three bare requests are one row with their count");
  assert.match(second, /no_credentials/);
  assert.match(second, / to \d{4}-\d\d-\d\d/, "with the time of the last");
  assert.match(await log.innerText(), /\b200\b/, "the good fetches are there too");
  await log.scrollIntoViewIfNeeded();
  await snap(page, "device-provisioning-log");
});

await step("Key profiles: a profile made in the console, chosen on a device, drawn on its key grid", page, async () => {
  await page.goto(`${ADMIN}/ui/groups/${G}`);
  await page.getByRole("link", { name: "Key profiles" }).click();
  const form = page.locator("#new-profile");
  await form.getByLabel("Name").fill("Front");
  await form.getByLabel(/Programmable keys/).fill("8 speed_dial 100 Operator");
  await form.getByRole("button", { name: "Add key profile" }).click();
  await page.locator("h1", { hasText: "Key profile Front" }).waitFor();
  await snap(page, "key-profile");
  await page.goto(`${ADMIN}/ui/devices/0004f2000001`);
  await page.getByLabel("Key profile").selectOption("Front");
  await page.getByRole("button", { name: "Save" }).click();
  await page.getByText("Saved.").waitFor();
  assert.match(await text(page, ".keygrid .key.speed_dial"), /8\s+Operator \(speed_dial 100\)/);
});

await step("Templates: the validation error is shown at its line; diff against live", page, async () => {
  const models = await api("GET", "/api/v1/models");
  const vvx = models.find((m) => m.id === "polycom-vvx-450");
  const tpl = vvx.files[0].template;
  await page.goto(`${ADMIN}/ui/templates`);
  await page.getByRole("row", { name: /polycom-vvx-450/ }).getByRole("link", { name: tpl }).click();
  await page.locator("h1", { hasText: `Template ${tpl}` }).waitFor();
  const body = page.getByLabel("Template source");
  const live = await body.inputValue();
  const lines = live.split("\n");
  lines.splice(2, 0, "{% endif %}");
  await body.fill(lines.join("\n"));
  await page.getByRole("button", { name: "Diff against live" }).click();
  await page.locator("#diff").waitFor();
  assert.match(await text(page, "#diff .add"), /\{% endif %\}/);
  await page.getByRole("button", { name: "Upload and make live" }).click();
  const err = page.locator("#body-error");
  await err.waitFor();
  assert.match(await err.innerText(), /invalid_template at line 3/);
  assert.match(await text(page, "#bad-line"), /endif/);
  await snap(page, "template-error");
  // A valid version goes live; then roll back to the built-in one.
  await page.getByLabel("Template source").fill(live + "\n{# uploaded by the console walk #}\n");
  await page.getByRole("button", { name: "Upload and make live" }).click();
  await page.getByText("Version 1 is live.").waitFor();
  assert.match(await text(page, "main > p"), /Live: version 1/);
  await page.getByRole("button", { name: "Roll back to 0" }).click();
  await page.getByText("Rolled back: version 0 is live.").waitFor();
  await snap(page, "template-versions");
  await page.getByLabel("Device", { exact: true }).selectOption({ label: `Reception (${G})` });
  await page.getByRole("button", { name: "Preview" }).click();
  await page.locator("#preview pre.code").first().waitFor();
  assert.match(await text(page, "#preview pre.code"), /<\?xml/);
  await snap(page, "template-preview");
});

await step("Change log: filter by action, paginated", page, async () => {
  await page.goto(`${ADMIN}/ui/changes`);
  await page.getByLabel("Action").selectOption("sca.create");
  await page.getByRole("button", { name: "Filter" }).click();
  const rows = await page.locator("tbody tr").allInnerTexts();
  assert.equal(rows.length, 1, rows.join("\n"));
  assert.match(rows[0], /sca\.create\s+6035551212_sca1/);
  await snap(page, "changes");
});

await step("Narrow screen: the user page reflows (no horizontal scroll of the page)", page, async () => {
  await page.setViewportSize({ width: 390, height: 844 });
  await page.goto(`${ADMIN}/ui/groups/${G}/users/1001/sca`);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 1, `page wider than the screen by ${overflow}px`);
  await snap(page, "narrow-sca");
  await page.setViewportSize({ width: 1280, height: 800 });
});

await browser.close();
const failed = results.filter(([, ok]) => !ok);
console.log(`walks: ${results.length - failed.length} passed, ${failed.length} failed; screenshots in ${SHOTS}`);
process.exit(failed.length ? 1 : 0);
