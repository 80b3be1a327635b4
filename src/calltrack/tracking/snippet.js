/*
 * calltrack page snippet: shows this visit's tracking number in place of the site's own numbers.
 *
 * Served by GET /t/{site_key}.js with its configuration injected below; plain ES2017, no
 * dependencies. Every step is guarded: when anything fails (no fetch, the server down, odd
 * markup, an invalid selector) the page keeps its own numbers and its own scripts run on.
 * Configuration and answers are data only: text is set with textContent, links with setAttribute.
 */
try {
  (function () {
    "use strict";

    // The server replaces this token with the campaign's settings (a JSON object):
    // {k, hit, replace, selector, format, ping}. Unrendered (tests), it stays null.
    const CONFIG = /*CALLTRACK_CONFIG*/null;

    const ROOT = typeof globalThis !== "undefined" ? globalThis : window;
    const VISITOR_COOKIE = "_ctv";
    const SESSION_COOKIE = "_cts";
    const VISITOR_SECONDS = 180 * 86400;
    const SESSION_SECONDS = 30 * 60;
    const URL_CHARS = 2048; // two URLs and the ids stay well under the hit's 8 KB bound
    // What may sit between the digits of a written number: spaces (any), brackets, dots, dashes.
    const SEP_CHARS = "\\s().\\-\\u2010-\\u2015";
    const SEP = "[" + SEP_CHARS + "]{0,3}";
    const SEP_ONLY = new RegExp("[" + SEP_CHARS + "]");
    const SKIP = { SCRIPT: 1, STYLE: 1, TEXTAREA: 1, INPUT: 1, NOSCRIPT: 1, SELECT: 1 };

    // ---- pure helpers (exposed to tests through globalThis.__calltrackTest) ----

    function digitsOf(text) {
      return String(text == null ? "" : text).replace(/\D/g, "");
    }

    function clip(value, max) {
      return typeof value === "string" && value ? value.slice(0, max) : null;
    }

    // A Russian number (11 digits, 7 or 8 first) without its country code, else null.
    function national(digits) {
      const russian = digits.length === 11 && (digits[0] === "7" || digits[0] === "8");
      return russian ? digits.slice(1) : null;
    }

    // Two spellings of one number: the same digits, or the same Russian number after 7, 8 or +7.
    function sameNumber(a, b) {
      const x = digitsOf(a);
      const y = digitsOf(b);
      if (!x || !y) return false;
      return x === y || (national(x) !== null && national(x) === national(y));
    }

    // The regular expression source finding one number in text in its usual spellings. A Russian
    // number may start with +7, 7, 8 or nothing ("(495) 123-45-67"); separators between any digits.
    function numberPattern(digits) {
      const rest = national(digits);
      if (rest === null) return "\\+?" + digits.split("").join(SEP);
      return "(?:(?:\\+" + SEP + "7|7|8)" + SEP + "|\\()?" + rest.split("").join(SEP);
    }

    // One global RegExp finding any of the numbers (longest first), or null when there is none.
    function matcher(numbers) {
      const patterns = [];
      for (const number of numbers || []) {
        const digits = digitsOf(number);
        // Shorter runs would match prices and dates; longer ones are no phone number (E.164: 15).
        if (digits.length >= 5 && digits.length <= 15) patterns.push(digits);
      }
      if (!patterns.length) return null;
      patterns.sort((a, b) => b.length - a.length);
      return new RegExp(patterns.map(numberPattern).join("|"), "g");
    }

    // A match is a number only when it is not part of a longer run of digits: no digit or "+"
    // right before it, no digit right after it (nor a decimal point and a digit: "4951234567.00").
    // A match without country code must not follow digits across separators either, or
    // "495 123-45-67" would be found inside "18 495 123-45-67".
    function standsAlone(text, start, end, found) {
      if (/^[.,]?\d/.test(text.slice(end, end + 2))) return false;
      if (/(?:\d[.,]?|\+)$/.test(text.slice(Math.max(0, start - 2), start))) return false;
      let i = start - 1;
      if (digitsOf(found).length === 10) {
        while (i >= 0 && SEP_ONLY.test(text.charAt(i))) i -= 1;
        if (/[\d+]/.test(text.charAt(i))) return false;
      }
      return true;
    }

    // text with every standalone occurrence that re finds replaced by shown (text itself if none).
    function replaceNumbers(text, re, shown) {
      if (!re || !text) return text;
      let out = "";
      let last = 0;
      let found;
      re.lastIndex = 0;
      while ((found = re.exec(text)) !== null) {
        const start = found.index;
        const end = start + found[0].length;
        if (standsAlone(text, start, end, found[0])) {
          out += text.slice(last, start) + shown;
          last = end;
          re.lastIndex = end;
        } else {
          re.lastIndex = start + 1;
        }
      }
      return last ? out + text.slice(last) : text;
    }

    // The first number-like run in text (a selector element's number, whatever it is) replaced.
    function replaceRun(text, shown) {
      if (!text || text.indexOf(shown) !== -1) return text;
      return text.replace(/[+(]?\d(?:[\s().\-\u2010-\u2015]*\d)*/, () => shown);
    }

    // The number in the campaign's format: the X marks take the number's last digits in order.
    function formatNumber(number, format) {
      const digits = digitsOf(number);
      const pattern = typeof format === "string" ? format : "";
      const marks = (pattern.match(/X/g) || []).length;
      if (!digits || !marks || marks > digits.length) return digits ? "+" + digits : "";
      let i = digits.length - marks;
      return pattern.replace(/X/g, () => digits[i++]);
    }

    // One cookie's value from a document.cookie string, or null.
    function readCookie(cookies, name) {
      for (const part of String(cookies || "").split(";")) {
        const eq = part.indexOf("=");
        if (eq > 0 && part.slice(0, eq).trim() === name) {
          const raw = part.slice(eq + 1).trim();
          try {
            return decodeURIComponent(raw);
          } catch (e) {
            return raw;
          }
        }
      }
      return null;
    }

    // Google Analytics' client id from its _ga cookie: "GA1.1.123.456" -> "123.456".
    function gaClientId(value) {
      const found = /^GA\d+\.[^.]+\.(\d+\.\d+)$/.exec(String(value || "").trim());
      return found ? found[1] : null;
    }

    // The digits a tel: link dials, without extension or pause (";ext=12", ",12").
    function telDigits(href) {
      const match = /^\s*tel:([^;,]*)/i.exec(String(href || ""));
      if (!match) return "";
      try {
        return digitsOf(decodeURIComponent(match[1]));
      } catch (e) {
        return digitsOf(match[1]);
      }
    }

    const exposed = ROOT.__calltrackTest;
    if (exposed && typeof exposed === "object") {
      Object.assign(exposed, {
        config: CONFIG, digitsOf, sameNumber, matcher, replaceNumbers, replaceRun,
        formatNumber, readCookie, gaClientId, telDigits,
      });
    }

    // ---- the page ----

    if (!CONFIG || typeof CONFIG !== "object" || typeof document === "undefined") return;
    if (ROOT.__calltrack) return; // pasted twice: one hit, one swapper
    ROOT.__calltrack = true;

    const own = Array.isArray(CONFIG.replace) ? CONFIG.replace.map(digitsOf) : [];
    const selector = typeof CONFIG.selector === "string" ? CONFIG.selector : "";
    const state = { n: "", shown: "", numbers: [], re: null, observer: null };

    function guard(fn) {
      return function () {
        try {
          return fn.apply(this, arguments);
        } catch (e) {
          return undefined; // never the page's problem
        }
      };
    }

    function setCookie(name, value, seconds) {
      if (typeof value !== "string" || !value || value.length > 128) return;
      document.cookie = name + "=" + encodeURIComponent(value) + "; max-age=" + seconds +
        "; path=/; SameSite=Lax" + (location.protocol === "https:" ? "; Secure" : "");
    }

    function skipped(el) {
      return !el || SKIP[String(el.nodeName).toUpperCase()] === 1 || el.isContentEditable === true;
    }

    function swapText(node) {
      const text = node.textContent;
      if (!text || text.length < 5 || !/\d/.test(text)) return;
      const next = replaceNumbers(text, state.re, state.shown);
      if (next !== text) node.textContent = next;
    }

    function swapLink(link) {
      const href = link.getAttribute && link.getAttribute("href");
      if (!href || !/^\s*tel:/i.test(href)) return;
      const dialled = telDigits(href);
      if (state.numbers.some((number) => sameNumber(number, dialled))) {
        link.setAttribute("href", "tel:+" + state.n);
      }
    }

    // Text nodes and tel: links under top (an element or a text node), skipping scripts, styles,
    // form fields and whatever the visitor is editing.
    function swapTree(top) {
      if (top.nodeType === 3) {
        if (!skipped(top.parentElement) && !insideSkipped(top.parentElement)) swapText(top);
        return;
      }
      if (top.nodeType !== 1 || skipped(top) || insideSkipped(top)) return;
      const kinds = NodeFilter.SHOW_ELEMENT | NodeFilter.SHOW_TEXT;
      const walker = document.createTreeWalker(top, kinds, { acceptNode: accept });
      const texts = [];
      if (top.nodeName === "A") swapLink(top);
      for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        if (node.nodeType === 3) texts.push(node);
        else if (node.nodeName === "A") swapLink(node);
      }
      texts.forEach(swapText);
    }

    // The TreeWalker's filter: a skipped element is rejected with everything inside it.
    function accept(node) {
      if (node.nodeType === 1 && skipped(node)) return NodeFilter.FILTER_REJECT;
      return NodeFilter.FILTER_ACCEPT;
    }

    function insideSkipped(el) {
      return Boolean(el && el.closest && el.closest("script,style,textarea,noscript,select"));
    }

    // The selector's elements show the number whatever they held: their first number-like text
    // and their tel: links.
    function swapSelected() {
      if (!selector) return;
      let elements;
      try {
        elements = document.querySelectorAll(selector);
      } catch (e) {
        return; // an invalid selector swaps nothing
      }
      const target = "tel:+" + state.n;
      for (const el of Array.prototype.slice.call(elements)) {
        if (skipped(el)) continue;
        const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
        for (let node = walker.nextNode(); node; node = walker.nextNode()) {
          if (!/\d/.test(node.textContent)) continue;
          const next = replaceRun(node.textContent, state.shown);
          if (next !== node.textContent) node.textContent = next;
          break;
        }
        const links = Array.prototype.slice.call(el.querySelectorAll("a[href]"));
        if (el.nodeName === "A") links.push(el);
        for (const link of links) {
          if (/^\s*tel:/i.test(link.getAttribute("href")) && link.getAttribute("href") !== target) {
            link.setAttribute("href", target);
          }
        }
      }
    }

    function swapAll() {
      swapTree(document.body || document.documentElement);
      swapSelected();
    }

    // Content added later (single-page sites) is swapped as it arrives. Our own edits raise
    // records too: they are dropped with takeRecords, so the observer never feeds itself.
    function observe() {
      if (state.observer || typeof MutationObserver !== "function") return;
      const observer = new MutationObserver(guard((records) => {
        try {
          for (const record of records) {
            if (record.type === "characterData") swapTree(record.target);
            else if (record.type === "attributes") swapLink(record.target);
            else Array.prototype.forEach.call(record.addedNodes, swapTree);
          }
          swapSelected();
        } finally {
          observer.takeRecords();
        }
      }));
      observer.observe(document.documentElement, {
        childList: true,
        subtree: true,
        characterData: true,
        attributes: true,
        attributeFilter: ["href"],
      });
      state.observer = observer;
    }

    function whenReady(fn) {
      if (document.readyState !== "loading") fn();
      else document.addEventListener("DOMContentLoaded", fn, { once: true });
    }

    function onAnswer(answer) {
      if (!answer || typeof answer !== "object") return;
      setCookie(VISITOR_COOKIE, answer.v, VISITOR_SECONDS);
      setCookie(SESSION_COOKIE, answer.s, SESSION_SECONDS);
      const n = typeof answer.n === "string" ? digitsOf(answer.n) : "";
      if (!n || n.length > 15 || n === state.n) return; // "": the page keeps its own numbers
      const d = typeof answer.d === "string" && answer.d.trim() ? answer.d.slice(0, 64) : "";
      // Should the number change (a hold lost), the one shown so far is swapped as well. The
      // number shown is never searched for itself: a stub equal to an own number stays as written.
      const previous = state.n ? [state.n] : [];
      state.numbers = own.concat(previous).filter((number) => !sameNumber(number, n));
      state.re = matcher(state.numbers);
      state.n = n;
      state.shown = d || formatNumber(n, CONFIG.format);
      whenReady(guard(() => {
        swapAll();
        observe();
      }));
    }

    function send(type) {
      const cookies = document.cookie;
      const body = {
        k: String(CONFIG.k),
        v: clip(readCookie(cookies, VISITOR_COOKIE), 128),
        s: clip(readCookie(cookies, SESSION_COOKIE), 128),
        t: type,
        u: String(location.href).slice(0, URL_CHARS),
        r: String(document.referrer || "").slice(0, URL_CHARS),
        ga: gaClientId(readCookie(cookies, "_ga")),
        ym: clip(readCookie(cookies, "_ym_uid"), 64),
        rs: clip(readCookie(cookies, "roistat_visit"), 64),
      };
      return fetch(String(CONFIG.hit), {
        method: "POST",
        body: JSON.stringify(body),
        headers: { "Content-Type": "text/plain" }, // a simple request: no CORS preflight
        credentials: "omit",
        keepalive: true,
        mode: "cors",
      })
        .then((response) => (response.ok ? response.json() : null))
        .then(guard(onAnswer))
        .catch(() => undefined);
    }

    guard(() => {
      send("hit");
      const seconds = Math.max(10, Math.min(3600, Number(CONFIG.ping) || 60));
      setInterval(guard(() => {
        if (document.visibilityState === "visible") send("ping");
      }), seconds * 1000);
    })();
  })();
} catch (e) {
  // Whatever went wrong, the page keeps its own numbers and its own scripts run on.
}
