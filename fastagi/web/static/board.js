// The live board: applies the server's updates (Server-Sent Events from /events) to the
// server-rendered page, says plainly when updates are lost, and alerts on a new alarm
// with a beep (Web Audio) and a browser notification. Without this script the page still
// works (it refreshes itself).
"use strict";

(function () {
  const PING_SECONDS = 10;
  const SILENT_LIMIT_MS = PING_SECONDS * 3 * 1000;  // a stalled stream: reconnect
  const board = document.getElementById("board");
  const bannerSlot = document.getElementById("banner-slot");
  const feedState = document.getElementById("feed-state");
  const soundControls = document.getElementById("sound-controls");
  const enableButton = document.getElementById("enable-alerts");
  const alertsState = document.getElementById("alerts-state");
  const originalTitle = "fastagi-panic";
  let known = new Set(ids(board));
  let clockOffset = Number(board.dataset.now || Date.now()) - Date.now();
  let source = null;
  let lastMessage = Date.now();
  let audio = null;

  function ids(root) {
    return Array.from(root.querySelectorAll("article.alarm")).map((a) => a.dataset.alarmId);
  }

  function showFeed(state, text) {
    feedState.dataset.state = state;
    feedState.textContent = text;
    feedState.hidden = state === "live";
    document.body.dataset.feed = state;
  }

  function setTitle(count) {
    document.title = count > 0
      ? "ALARM ACTIVE (" + count + ") · " + originalTitle
      : "No active alarm · " + originalTitle;
  }

  function fragment(html) {
    const template = document.createElement("template");
    template.innerHTML = html.trim();
    return template.content.firstElementChild;
  }

  function apply(update) {
    if (!update.available) {
      showFeed("lost", "The server cannot read the alarms right now — retrying");
      return;
    }
    clockOffset = update.now - Date.now();
    bannerSlot.replaceChildren(fragment(update.banner));
    const incoming = new Set();
    let previous = null;
    for (const alarm of update.alarms) {
      const id = String(alarm.id);
      incoming.add(id);
      const fresh = fragment(alarm.html);
      let card = document.getElementById("alarm-" + id);
      if (card) {
        // Keep the action forms as they are (someone may be typing a reason).
        card.querySelector(".status").replaceWith(fresh.querySelector(".status"));
      } else {
        card = fresh;
      }
      if (previous) {
        previous.after(card);
      } else {
        board.prepend(card);
      }
      previous = card;
    }
    for (const card of Array.from(board.querySelectorAll("article.alarm"))) {
      if (!incoming.has(card.dataset.alarmId)) card.remove();
    }
    const added = Array.from(incoming).filter((id) => !known.has(id));
    known = incoming;
    setTitle(incoming.size);
    document.body.dataset.alarms = String(incoming.size);
    if (added.length) alert(update.alarms.filter((a) => added.includes(String(a.id))));
    tick();
    if (update.live) {
      showFeed("live", "Live");
    } else {
      showFeed("lost", "Live updates lost — reconnecting");
    }
  }

  function alert(alarms) {
    beep();
    const text = alarms.map((a) => {
      const card = document.getElementById("alarm-" + a.id);
      const title = card ? card.querySelector("h2").textContent : "Alarm " + a.id;
      return title.trim();
    }).join("\n");
    if ("Notification" in window && Notification.permission === "granted") {
      new Notification("ALARM ACTIVE", { body: text, requireInteraction: true, tag: "fastagi-panic" });
    }
  }

  function beep() {
    try {
      audio = audio || new AudioContext();
      const now = audio.currentTime;
      for (let i = 0; i < 3; i++) {
        const tone = audio.createOscillator();
        const gain = audio.createGain();
        tone.type = "square";
        tone.frequency.value = 880;
        gain.gain.value = 0.2;
        tone.connect(gain).connect(audio.destination);
        tone.start(now + i * 0.35);
        tone.stop(now + i * 0.35 + 0.2);
      }
    } catch (error) {
      alertsState.textContent = "Sound is not available in this browser.";
    }
  }

  function tick() {
    const now = Date.now() + clockOffset;
    for (const element of document.querySelectorAll("[data-since]")) {
      element.textContent = duration(now - Number(element.dataset.since));
    }
    for (const element of document.querySelectorAll("[data-until]")) {
      element.textContent = duration(Number(element.dataset.until) - now);
    }
  }

  function duration(ms) {
    const total = Math.max(0, Math.floor(ms / 1000));
    const hours = Math.floor(total / 3600);
    const minutes = Math.floor((total % 3600) / 60);
    const seconds = total % 60;
    const two = (n) => String(n).padStart(2, "0");
    if (hours) return hours + " h " + two(minutes) + " min";
    if (minutes) return minutes + " min " + two(seconds) + " s";
    return seconds + " s";
  }

  function connect() {
    if (source) source.close();
    source = new EventSource("/events");
    lastMessage = Date.now();
    source.addEventListener("open", () => {
      lastMessage = Date.now();
    });
    source.addEventListener("board", (event) => {
      lastMessage = Date.now();
      apply(JSON.parse(event.data));
    });
    source.addEventListener("ping", () => {
      lastMessage = Date.now();
    });
    source.addEventListener("logout", () => {
      source.close();
      window.location.assign("/login?next=/");
    });
    source.addEventListener("error", () => {
      // EventSource reconnects by itself; say so meanwhile.
      showFeed("lost", "Live updates lost — reconnecting");
      if (source.readyState === EventSource.CLOSED) setTimeout(connect, 1000);
    });
  }

  function watchdog() {
    if (Date.now() - lastMessage > SILENT_LIMIT_MS) {
      showFeed("lost", "Live updates lost — reconnecting");
      connect();
    }
    tick();
  }

  function alertsReady() {
    const notifications = "Notification" in window ? Notification.permission : "unsupported";
    const sound = audio && audio.state === "running";
    soundControls.hidden = false;
    enableButton.hidden = sound && notifications !== "default";
    alertsState.textContent =
      "Sound " + (sound ? "on" : "off (press the button)") +
      "; notifications " + (notifications === "granted" ? "on" : notifications) + ".";
  }

  // A browser started for a wall screen may allow sound without a click (Chromium's
  // --autoplay-policy=no-user-gesture-required); others need the button once.
  try {
    audio = new AudioContext();
    audio.addEventListener("statechange", alertsReady);
  } catch (error) {
    audio = null;
  }

  enableButton.addEventListener("click", async () => {
    audio = audio || new AudioContext();
    await audio.resume();
    if ("Notification" in window && Notification.permission === "default") {
      await Notification.requestPermission();
    }
    alertsReady();
  });

  // Leaving the page (a form sent, logging out): the stream's end is no loss to report,
  // and its "logout" event must not race the form's own answer.
  document.addEventListener("submit", () => {
    if (source) source.close();
  });

  showFeed("connecting", "Connecting to live updates…");
  setTitle(known.size);
  document.body.dataset.alarms = String(known.size);
  alertsReady();
  connect();
  setInterval(watchdog, 1000);
})();
