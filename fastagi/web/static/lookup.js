// The "which department is this extension in?" tester: answers as you type, from
// /config/lookup.json. Without this script the form is a plain GET form that reloads
// the page with the answer. Text only (textContent): a department's name is never HTML.
"use strict";

(function () {
  const form = document.getElementById("lookup-form");
  const input = document.getElementById("lookup-extension");
  const result = document.getElementById("lookup-result");
  if (!form || !input || !result) {
    return;
  }
  let timer = null;
  let asked = 0;

  function say(text, isError) {
    result.replaceChildren();
    const paragraph = document.createElement("p");
    paragraph.className = isError ? "field-error" : "lookup-answer";
    if (isError) {
      const label = document.createElement("strong");
      label.textContent = "Error: ";
      paragraph.append(label);
    }
    paragraph.append(text);
    result.append(paragraph);
  }

  function describe(found) {
    if (!found.pattern) {
      return found.extension + ": " + found.department + ": no mapping matches; an alarm"
        + " from it is keyed " + found.alarm_key + ".";
    }
    let text = found.extension + ": " + found.department + ", by " + found.kind + " "
      + found.pattern;
    if (found.candidates.length > 1) {
      text += " (the most specific of " + found.candidates.join(", ") + ")";
    }
    const devices = found.devices.length ? found.devices.join(" ") : "no devices";
    return text + "; an alarm pages " + devices + " every " + found.interval_seconds + " s.";
  }

  async function lookUp() {
    const extension = input.value.trim();
    if (!extension) {
      result.replaceChildren();
      return;
    }
    const mine = ++asked;
    try {
      const answer = await fetch("/config/lookup.json?" + new URLSearchParams({extension}), {
        headers: {Accept: "application/json"},
        credentials: "same-origin",
      });
      const body = await answer.json();
      if (mine !== asked) {
        return;  // a later keystroke's answer wins
      }
      if (answer.ok) {
        say(describe(body), false);
      } else {
        say(body.error || "no answer", true);
      }
    } catch (error) {
      if (mine === asked) {
        say("the console did not answer: " + error, true);
      }
    }
  }

  input.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(lookUp, 200);
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    clearTimeout(timer);
    lookUp();
  });
})();
