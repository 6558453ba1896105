// The mini-program, simulated in a browser. A real mini-program would call wx.login,
// wx.request and wx.connectSocket; `wx` below maps each to its browser equivalent, so the
// rest of this file reads like mini-program code. sessionStorage plays wx.setStorageSync:
// it survives a reload but not a new tab, so each tab can be a different user.
"use strict";

const wx = {
  async request({ url, method = "GET", header = {}, data }) {
    const init = { method, headers: { ...header } };
    if (data !== undefined) {
      init.headers["content-type"] = "application/json";
      init.body = JSON.stringify(data);
    }
    const response = await fetch(url, init);
    let body = null;
    try { body = await response.json(); } catch (_) { /* not JSON */ }
    return { statusCode: response.status, data: body };
  },
  connectSocket(url) { return new WebSocket(url); },
  getStorageSync(key) { return sessionStorage.getItem(key) || ""; },
  setStorageSync(key, value) { sessionStorage.setItem(key, value); },
  removeStorageSync(key) { sessionStorage.removeItem(key); },
};

// Close codes of docs/api.md, as the page explains them to the user. The client library
// (clients/miniprogram) decides what to do about each; the page only says what happened.
const CLOSE_CODES = {
  1000: "closed normally",
  1001: "idle timeout or maximum lifetime",
  1005: "closed without a code",
  1006: "connection lost",
  1008: "a limit was exceeded",
  1009: "message too big",
  1011: "broker error",
  1012: "broker restarting",
  1013: "broker overloaded",
  3000: "simulated network drop",
  4401: "connect token invalid; asking for a new tunnel",
  4403: "rejected by the business server",
  4408: "connect token expired; asking for a new tunnel",
  4409: "taken over by a newer connection",
  4410: "too many unacknowledged messages",
};

// "simulate drop": the socket closes as a network drop would, and the network stays down
// this long (connects fail), so that what others say meanwhile is missed, then resumed.
const SIMULATED_OUTAGE_MS = 3000;

const $ = (selector) => document.querySelector(selector);
const $$ = (selector) => Array.from(document.querySelectorAll(selector));

const state = {
  skey: wx.getStorageSync("skey"),
  me: null,
  client: null,
  socket: null,
  offlineUntil: 0,
  lastClose: "",
  rooms: [],
  joined: new Set(),
  room: "lobby",
  logs: {},
  presence: {},
  strokes: [],
  game: null,
  timer: null,
};

// ------------------------------------------------------------------ login and tunnel

async function login(name) {
  $("#login-error").textContent = "";
  // wx.login + wx.getUserInfo, served by the WeChat simulator through the demo server.
  const sim = await wx.request({ url: "/api/sim-login", method: "POST", data: { user: name } });
  if (sim.statusCode !== 200) throw new Error(sim.data?.detail || "simulated wx.login failed");
  // The Wafer login request: the broker checks the code with WeChat and answers an skey.
  const session = await wx.request({
    url: "/api/login",
    method: "POST",
    header: {
      "X-WX-Code": sim.data.code,
      "X-WX-Encrypted-Data": sim.data.encryptedData,
      "X-WX-IV": sim.data.iv,
    },
  });
  if (session.statusCode !== 200) throw new Error(session.data?.detail || "login failed");
  state.skey = session.data.skey;
  wx.setStorageSync("skey", state.skey);
}

// The business server's tunnel endpoint: a new tunnel for the logged-in user.
async function requestTunnel() {
  const answer = await wx.request({
    url: "/api/tunnel", method: "POST", header: { "X-WX-Skey": state.skey },
  });
  if (answer.statusCode === 401) {
    logout("Your session ended; log in again.");
    throw new Error("session ended");
  }
  if (answer.statusCode !== 200) throw new Error(answer.data?.detail || "no tunnel");
  state.me = answer.data.you;
  $("#me-nick").textContent = state.me.nick;
  return answer.data.connect_url;
}

// The browser's WebSocket, remembering the open one (for "simulate drop") and failing to
// connect while the simulated outage lasts.
class PageSocket extends WebSocket {
  constructor(url, protocols) {
    super(Date.now() < state.offlineUntil ? "ws://127.0.0.1:9/offline" : url, protocols);
    state.socket = this;
  }
}

async function openTunnel() {
  setStatus("connecting");
  const url = await requestTunnel();
  showApp();
  // The library reconnects with backoff and resumes: pushes missed while away arrive, in
  // order and once, and what this page sent is relayed once (docs/api.md).
  const client = new TunnelBrokerClient.TunnelClient({
    url,
    getConnectUrl: requestTunnel,
    WebSocket: PageSocket,
    wx: null, // the page's `wx` above is a stand-in without sockets
    reconnectDelay: 300,
    maxReconnectDelay: 10000,
  });
  state.client = client;
  client.on("open", () => setStatus("connected"));
  client.on("resumed", () => {
    setStatus("connected");
    showCloseInfo(`${state.lastClose}; resumed: nothing missed`);
  });
  client.on("message", (data) => {
    try { handle(JSON.parse(data)); } catch (error) { console.error(error); }
  });
  client.on("reconnecting", ({ code, reason }) => {
    stopTimer();
    state.lastClose = describeClose(code, reason);
    showCloseInfo(`${state.lastClose}; reconnecting`, code);
    setStatus("reconnecting");
  });
  client.on("close", ({ code, reason }) => {
    if (client !== state.client) return;
    stopTimer();
    showCloseInfo(describeClose(code, reason), code);
    setStatus("closed");
  });
  client.connect();
}

function describeClose(code, reason) {
  const meaning = CLOSE_CODES[code] || (code >= 4000 ? "closed by the business server" : "closed");
  return `Closed ${code}${reason ? " " + reason : ""}: ${meaning}`;
}

function simulateDrop() {
  if (!state.socket || state.socket.readyState !== WebSocket.OPEN) return;
  state.offlineUntil = Date.now() + SIMULATED_OUTAGE_MS;
  state.socket.close(3000, "simulated drop");
}

function send(message) {
  // Kept and sent after the reconnect when offline; false only when too many wait.
  if (state.client && state.client.send(JSON.stringify(message))) return true;
  showCloseInfo("Too many messages wait for the connection: message not sent.");
  return false;
}

function logout(message) {
  const client = state.client;
  state.client = null;
  if (client) client.close(1000, "logout");
  state.socket = null;
  state.skey = "";
  wx.removeStorageSync("skey");
  $("#app-view").hidden = true;
  $("#login-view").hidden = false;
  $("#login-error").textContent = message || "";
  setStatus("offline");
}

// ------------------------------------------------------------------ messages from the server

function handle(message) {
  switch (message.type) {
    case "welcome":
      state.me = message.you;
      $("#board-color").value = colorOf(state.me.openid);
      state.rooms = message.rooms;
      // After a reconnect the token re-joins only the lobby: join the other rooms again.
      for (const room of state.joined) {
        if (!message.joined.includes(room)) send({ type: "join", room });
      }
      for (const room of message.joined) state.joined.add(room);
      renderRooms();
      break;
    case "joined": {
      const fresh = !state.joined.has(message.room);
      state.joined.add(message.room);
      if (fresh) selectRoom(message.room);
      else renderRooms();
      break;
    }
    case "left":
      state.joined.delete(message.room);
      if (state.room === message.room) selectRoom("lobby");
      else renderRooms();
      break;
    case "presence":
      state.presence[message.room] = message.users;
      renderOnline();
      break;
    case "notice":
      addLine(message.room, message.text, "notice");
      break;
    case "chat":
      addLine(message.room, `${message.from.nick}: ${message.text}`, "chat");
      break;
    case "dm": {
      const mine = message.from.openid === state.me.openid;
      const who = mine ? `to ${message.to.nick}` : `from ${message.from.nick}`;
      appendItem($("#dm-log"), `(${who}) ${message.text}`, "dm");
      break;
    }
    case "board.strokes":
      state.strokes = message.strokes;
      drawBoard();
      break;
    case "board.stroke":
      state.strokes.push(message.stroke);
      drawBoard();
      break;
    case "board.cleared":
      state.strokes = state.strokes.filter((s) => s.openid !== message.openid);
      drawBoard();
      break;
    case "error":
      showCloseInfo(`Server: ${message.text}`);
      break;
    default:
      if (message.type.startsWith("rps.")) handleGame(message);
  }
}

// ------------------------------------------------------------------ chat

function renderRooms() {
  const nav = $("#rooms");
  nav.textContent = "";
  for (const room of state.rooms) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "room" + (state.joined.has(room) ? " joined" : "");
    button.dataset.room = room;
    button.textContent = "#" + room;
    button.setAttribute("aria-selected", String(room === state.room));
    button.onclick = () => {
      if (state.joined.has(room)) selectRoom(room);
      else send({ type: "join", room });
    };
    nav.appendChild(button);
  }
  $("#leave-btn").disabled = state.room === "lobby";
}

function selectRoom(room) {
  state.room = room;
  $("#room-name").textContent = room;
  const log = $("#chat-log");
  log.textContent = "";
  for (const [text, kind] of state.logs[room] || []) appendItem(log, text, kind);
  renderRooms();
  renderOnline();
}

function addLine(room, text, kind) {
  (state.logs[room] = state.logs[room] || []).push([text, kind]);
  if (room === state.room) appendItem($("#chat-log"), text, kind);
}

function appendItem(list, text, kind) {
  const item = document.createElement("li");
  item.className = kind;
  item.textContent = text;
  list.appendChild(item);
  list.scrollTop = list.scrollHeight;
}

function renderOnline() {
  const list = $("#online");
  list.textContent = "";
  for (const user of state.presence[state.room] || []) {
    const item = document.createElement("li");
    item.textContent = user.nick;
    item.dataset.openid = user.openid;
    item.title = "message privately";
    item.onclick = () => { $("#dm-to").value = user.openid; $("#dm-input").focus(); };
    list.appendChild(item);
  }
  // Everyone online in any room can get a private message.
  const select = $("#dm-to");
  const current = select.value;
  const people = new Map();
  for (const users of Object.values(state.presence)) {
    for (const user of users) {
      if (!state.me || user.openid !== state.me.openid) people.set(user.openid, user.nick);
    }
  }
  select.textContent = "";
  for (const [openid, nick] of people) {
    const option = document.createElement("option");
    option.value = openid;
    option.textContent = nick;
    select.appendChild(option);
  }
  if (people.has(current)) select.value = current;
}

// ------------------------------------------------------------------ game

function handleGame(message) {
  const status = $("#rps-status");
  switch (message.type) {
    case "rps.waiting":
      status.textContent = `Waiting for an opponent… a bot joins after ${message.bot_after}s.`;
      $("#rps-find").disabled = true;
      break;
    case "rps.start":
      state.game = message.game;
      status.textContent = `Playing ${message.opponent.nick}${message.opponent.bot ? " (bot)" : ""}`
        + ` — first to ${message.wins_needed}.`;
      $("#rps-over").textContent = "";
      $("#rps-log").textContent = "";
      $("#rps-score").textContent = "0 : 0";
      $("#rps-find").disabled = true;
      break;
    case "rps.round":
      setMoves(true);
      startTimer(message.seconds, message.round);
      break;
    case "rps.opponent_moved":
      appendItem($("#rps-log"), `Round ${message.round}: your opponent has chosen.`, "notice");
      break;
    case "rps.result": {
      stopTimer();
      const outcome = message.winner === null ? "draw"
        : message.winner === state.me.openid ? "you win" : "you lose";
      const late = message.timed_out ? " (time ran out)" : "";
      appendItem($("#rps-log"),
        `Round ${message.round}: ${message.you || "—"} vs ${message.opponent || "—"}: ${outcome}${late}`,
        "result");
      $("#rps-score").textContent = `${message.score.you} : ${message.score.opponent}`;
      break;
    }
    case "rps.over":
      stopTimer();
      setMoves(false);
      state.game = null;
      $("#rps-score").textContent = `${message.score.you} : ${message.score.opponent}`;
      $("#rps-over").textContent = message.you_won ? "You won the game!"
        : message.winner === null ? "The game is a draw." : "You lost the game.";
      if (message.reason === "forfeit") $("#rps-over").textContent += " (opponent left)";
      $("#rps-find").disabled = false;
      status.textContent = "Play again?";
      break;
    case "rps.error":
      showCloseInfo(`Game: ${message.text}`);
      $("#rps-find").disabled = false;
      break;
    default:
      break;
  }
}

function setMoves(enabled) {
  for (const button of $$(".move")) button.disabled = !enabled;
}

function startTimer(seconds, round) {
  stopTimer();
  const deadline = Date.now() + seconds * 1000;
  const tick = () => {
    const left = Math.max(0, Math.ceil((deadline - Date.now()) / 1000));
    $("#rps-timer").textContent = `round ${round} · ${left}s`;
  };
  tick();
  state.timer = setInterval(tick, 250);
}

function stopTimer() {
  clearInterval(state.timer);
  state.timer = null;
  $("#rps-timer").textContent = "";
}

// ------------------------------------------------------------------ board

const PALETTE = ["#e4572e", "#17bebb", "#4c6ef5", "#f4a259", "#8f2d56", "#2a9d8f"];

function colorOf(openid) {
  // Each user starts with their own colour, so two people's strokes are easy to tell apart.
  let hash = 0;
  for (const ch of openid) hash = (hash * 31 + ch.charCodeAt(0)) >>> 0;
  return PALETTE[hash % PALETTE.length];
}

function drawBoard() {
  const canvas = $("#board");
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  for (const stroke of state.strokes) drawStroke(ctx, stroke, canvas);
  const mine = state.me ? state.strokes.filter((s) => s.openid === state.me.openid).length : 0;
  $("#board-info").textContent = `${state.strokes.length} strokes · ${mine} mine`;
  $("#board-info").dataset.mine = String(mine);
  $("#board-info").dataset.total = String(state.strokes.length);
}

function drawStroke(ctx, stroke, canvas) {
  ctx.strokeStyle = stroke.color;
  ctx.lineWidth = stroke.width;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  ctx.beginPath();
  stroke.points.forEach(([x, y], i) => {
    const px = x * canvas.width;
    const py = y * canvas.height;
    if (i === 0) ctx.moveTo(px, py); else ctx.lineTo(px, py);
  });
  if (stroke.points.length === 1) ctx.lineTo(stroke.points[0][0] * canvas.width + 0.1, stroke.points[0][1] * canvas.height);
  ctx.stroke();
}

function setUpBoard() {
  const canvas = $("#board");
  let current = null;
  const point = (event) => {
    const rect = canvas.getBoundingClientRect();
    const clamp = (v) => Math.min(1, Math.max(0, v));
    return [clamp((event.clientX - rect.left) / rect.width), clamp((event.clientY - rect.top) / rect.height)];
  };
  canvas.addEventListener("pointerdown", (event) => {
    canvas.setPointerCapture(event.pointerId);
    current = { color: $("#board-color").value, width: 4, points: [point(event)] };
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!current || current.points.length >= 1000) return;
    current.points.push(point(event));
    drawStroke(canvas.getContext("2d"), current, canvas);
  });
  const finish = () => {
    if (current) send({ type: "board.stroke", stroke: current });
    current = null;
  };
  canvas.addEventListener("pointerup", finish);
  canvas.addEventListener("pointercancel", finish);
}

// ------------------------------------------------------------------ chrome

function setStatus(text) {
  $("#status").textContent = text;
  $("#status").dataset.state = text;
}

function showCloseInfo(text, code) {
  const info = $("#close-info");
  info.hidden = false;
  info.textContent = text;
  if (code !== undefined) info.dataset.code = String(code);
}

function showError(error) {
  $("#login-error").textContent = String(error.message || error);
  showCloseInfo(String(error.message || error));
}

function showApp() {
  $("#login-view").hidden = true;
  $("#app-view").hidden = false;
}

function selectTab(tab) {
  for (const button of $$(".tab")) button.setAttribute("aria-selected", String(button.dataset.tab === tab));
  for (const panel of $$(".tab-panel")) panel.hidden = panel.id !== "tab-" + tab;
}

function wireUp() {
  $("#login-btn").onclick = () => {
    const name = $("#login-name").value.trim();
    if (!name) return;
    $("#login-btn").disabled = true;
    login(name).then(openTunnel).catch(showError).finally(() => { $("#login-btn").disabled = false; });
  };
  $("#login-name").addEventListener("keydown", (e) => { if (e.key === "Enter") $("#login-btn").click(); });
  $("#logout-btn").onclick = () => logout();
  $("#drop-btn").onclick = simulateDrop;
  $("#leave-btn").onclick = () => send({ type: "leave", room: state.room });
  $("#chat-send").onclick = () => {
    const text = $("#chat-input").value.trim();
    if (text && send({ type: "chat", room: state.room, text })) $("#chat-input").value = "";
  };
  $("#chat-input").addEventListener("keydown", (e) => { if (e.key === "Enter") $("#chat-send").click(); });
  $("#dm-send").onclick = () => {
    const to = $("#dm-to").value;
    const text = $("#dm-input").value.trim();
    if (to && text && send({ type: "dm", to, text })) $("#dm-input").value = "";
  };
  $("#rps-find").onclick = () => send({ type: "rps.find" });
  for (const button of $$(".move")) {
    button.onclick = () => {
      if (!state.game) return;
      send({ type: "rps.move", game: state.game, move: button.dataset.move });
      setMoves(false);
      appendItem($("#rps-log"), `You chose ${button.dataset.move}.`, "notice");
    };
  }
  $("#board-clear").onclick = () => send({ type: "board.clear" });
  for (const button of $$(".tab")) button.onclick = () => selectTab(button.dataset.tab);
  setUpBoard();
}

wireUp();
if (state.skey) openTunnel().catch(showError);
