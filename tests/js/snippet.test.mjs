// The snippet's pure helpers, loaded from the real file without a browser: with
// globalThis.__calltrackTest set, the unrendered snippet (its config still null) only exposes them.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import vm from "node:vm";

const path = new URL("../../src/calltrack/tracking/snippet.js", import.meta.url);
const source = readFileSync(path, "utf8");
globalThis.__calltrackTest = {};
vm.runInThisContext(source, { filename: "snippet.js" });
const ct = globalThis.__calltrackTest;

const OWN = "74951234567";
const SHOWN = "+7 (812) 765-43-21";
const swap = (text, numbers = [OWN]) => ct.replaceNumbers(text, ct.matcher(numbers), SHOWN);

test("the unrendered snippet exposes its helpers and does nothing else", () => {
  assert.equal(ct.config, null);
  assert.equal(globalThis.__calltrack, undefined);
  assert.equal(typeof ct.replaceNumbers, "function");
});

test("every usual spelling of a Russian number is found", () => {
  const spellings = [
    "+7 495 123-45-67",
    "8 (495) 1234567",
    "74951234567",
    "84951234567",
    "+74951234567",
    "+7(495)123 45 67",
    "+7 (495) 123-45-67",
    "8-495-123-45-67",
    "8.495.123.45.67",
    "7 495 123 45 67",
    "+7\u00a0495\u00a0123\u201145\u201167",
    "(495) 123-45-67",
    "495 123 45 67",
  ];
  for (const spelling of spellings) {
    assert.equal(swap(`Call ${spelling} today`), `Call ${SHOWN} today`, spelling);
    assert.equal(swap(spelling), SHOWN, spelling);
  }
});

test("the configured number may itself be written in any spelling", () => {
  assert.equal(swap("tel. 8 495 123 45 67", ["+7 (495) 123-45-67"]), `tel. ${SHOWN}`);
  assert.equal(swap("tel. +7 495 123 45 67", ["84951234567"]), `tel. ${SHOWN}`);
});

test("every occurrence of every own number is swapped", () => {
  const text = "Moscow +7 495 123-45-67, sales 8 (800) 555-35-35; again 74951234567.";
  assert.equal(
    swap(text, [OWN, "78005553535"]),
    `Moscow ${SHOWN}, sales ${SHOWN}; again ${SHOWN}.`,
  );
});

test("no false matches: longer digit runs, other numbers, prices", () => {
  const untouched = [
    "174951234567",
    "749512345678",
    "order 1749512345670",
    "+7 495 123-45-68",
    "+7 495 123-45-6",
    "8 495 765-43-21",
    "18 495 123 45 67",
    "1 (495) 123-45-67",
    "+1 495 123 45 67",
    "price 4951234567.00",
    "rate 1.74951234567",
    "",
  ];
  for (const text of untouched) assert.equal(swap(text), text, text);
});

test("numbers other than Russian ones are matched by their digits", () => {
  assert.equal(swap("call +44 20 7946 0958 now", ["442079460958"]), `call ${SHOWN} now`);
  assert.equal(swap("call 1442079460958", ["442079460958"]), "call 1442079460958");
  assert.equal(ct.matcher(["123"]), null, "too short a number is never searched for");
  assert.equal(ct.matcher([]), null);
});

test("a number whose display still contains it is replaced once, not again and again", () => {
  const once = swap("+7 495 123-45-67");
  assert.equal(ct.replaceNumbers(once, ct.matcher(["78127654321"]), SHOWN), SHOWN);
});

test("the format's X marks take the number's last digits in order", () => {
  assert.equal(ct.formatNumber("74951234567", "+7 (XXX) XXX-XX-XX"), "+7 (495) 123-45-67");
  assert.equal(ct.formatNumber("74951234567", "8 XXX XXX XX XX"), "8 495 123 45 67");
  assert.equal(ct.formatNumber("74951234567", "XXXXXXXXXXX"), "74951234567");
  assert.equal(ct.formatNumber("78005553535", "XXX-XX-XX"), "555-35-35");
  assert.equal(ct.formatNumber("74951234567", ""), "+74951234567", "no format: + and the digits");
  assert.equal(ct.formatNumber("4951234", "+7 (XXX) XXX-XX-XX"), "+4951234", "too few digits");
  assert.equal(ct.formatNumber("74951234567", null), "+74951234567");
});

test("cookies are read by exact name and decoded", () => {
  const cookies = "a_ctv=no; _ctv=v%201; _cts=s1;_ga=GA1.1.123.456 ; broken=%E0%A4%A";
  assert.equal(ct.readCookie(cookies, "_ctv"), "v 1");
  assert.equal(ct.readCookie(cookies, "_cts"), "s1");
  assert.equal(ct.readCookie(cookies, "broken"), "%E0%A4%A", "undecodable: as it is");
  assert.equal(ct.readCookie(cookies, "missing"), null);
  assert.equal(ct.readCookie("", "_ctv"), null);
});

test("the GA client id is parsed from _ga", () => {
  assert.equal(ct.gaClientId("GA1.1.123.456"), "123.456");
  assert.equal(ct.gaClientId("GA1.2.1234567890.1700000000"), "1234567890.1700000000");
  assert.equal(ct.gaClientId("GA1.1.abc.456"), null);
  assert.equal(ct.gaClientId("123.456"), null);
  assert.equal(ct.gaClientId(null), null);
});

test("tel: links are compared by the digits they dial", () => {
  assert.equal(ct.telDigits("tel:+7-495-123-45-67"), OWN);
  assert.equal(ct.telDigits(" TEL:8%20(495)%20123-45-67"), "84951234567");
  assert.equal(ct.telDigits("tel:+74951234567;ext=12"), OWN);
  assert.equal(ct.telDigits("mailto:a@b.c"), "");
  assert.ok(ct.sameNumber("84951234567", OWN));
  assert.ok(!ct.sameNumber("74951234568", OWN));
  assert.ok(!ct.sameNumber("", ""));
});

test("a selector element's own number, whatever it is, gives way once", () => {
  assert.equal(ct.replaceRun("Call: 8 (999) 000-00-00 now", SHOWN), `Call: ${SHOWN} now`);
  assert.equal(ct.replaceRun(`Call: ${SHOWN} now`, SHOWN), `Call: ${SHOWN} now`);
  assert.equal(ct.replaceRun("no digits", SHOWN), "no digits");
});
