/*!
 * tunnel-broker-miniprogram
 * A client of the tunnel broker's reliable WebSocket protocol (tb.reliable.v1) for WeChat
 * mini-programs (wx.connectSocket), browsers (WebSocket) and Node (an injected WebSocket).
 * MIT License.
 *
 * The protocol (docs/api.md, "The reliable protocol"): every frame starts with an ASCII
 * header that ends at the first ':'.
 *   w:<json>        broker -> client  welcome, the first frame of every socket
 *   m<seq>:<data>   both              a message; text in a text frame, bytes in a binary one
 *   a<seq>:         both              every message up to seq arrived
 *   h:              both              heartbeat (the broker answers the client's)
 * After a drop the client connects with the same URL plus &resume=<last push received>,
 * and sends again every message after the welcome's "accepted".
 *
 * Written as ES2015-compatible script (no modules, no async/await, no spread), so that the
 * WeChat npm build, a <script> tag and Node's require all take this one file unchanged.
 */
(function (root, factory) {
  // CommonJS first: WeChat wraps every file in a module and also defines a global define().
  if (typeof module === 'object' && module && module.exports) {
    module.exports = factory();
  } else if (typeof define === 'function' && define.amd) {
    define([], factory);
  } else {
    root.TunnelBrokerClient = factory();
  }
})(typeof globalThis !== 'undefined' ? globalThis : typeof self !== 'undefined' ? self : this, function () {
  'use strict';

  var VERSION = '1.0.0';
  var SUBPROTOCOL = 'tb.reliable.v1';
  var MAX_SEQ = 9007199254740991; // 2^53 - 1: the protocol's bound, exact in a JS number
  var MAX_HEADER = 18; // 'm' + 16 digits + ':'
  var SEQ_PATTERN = /^(0|[1-9][0-9]{0,15})$/;
  var COLON = 58;

  // The close code for a socket this client gives up on (heartbeat or connect timeout, a
  // broken frame). The broker treats any client close but 1000/1001 as a drop and keeps
  // the tunnel for a resume; 4000-4999 is the range a browser lets a page send.
  var DROP_CODE = 4000;
  // How a dropped socket is reported in `reconnecting` when no close frame said why.
  var ABNORMAL = 1006;

  var DEFAULTS = {
    url: '',
    getConnectUrl: null,
    WebSocket: null,
    wx: undefined,
    heartbeatInterval: 20000,
    heartbeatTimeout: 10000,
    connectTimeout: 10000,
    reconnectDelay: 500,
    maxReconnectDelay: 30000,
    maxReconnectAttempts: Infinity,
    queueLimit: 1000,
    // Acknowledgements only let the broker forget pushes (a resume starts from the last
    // push received, not the last acknowledged): a few a second are plenty, and each costs
    // the broker a frame to read (bench/reliable_bench.py: 16% more CPU per push than raw
    // frames with these, 30% when acknowledging every 10 pushes).
    ackEvery: 32,
    ackDelay: 500,
    watchSystemEvents: true
  };

  /**
   * What a close code asks of the client (docs/api.md, "Close codes"):
   *   'stop'     final: closed on purpose (1000 or a business server's 4000-4999), rejected
   *              (4403) or taken over by a newer connection (4409);
   *   'refresh'  the connect URL is no good (4401 invalid, 4408 expired): ask the business
   *              server for a new one, which is a new tunnel;
   *   'restart'  the tunnel ended (4410, its resume buffer overflowed): connect anew;
   *   'resume'   anything else (a drop, 1001, 1011, 1012 restart, 1013 overloaded, 1008...):
   *              reconnect with backoff and resume. When the broker had ended the tunnel
   *              (1001, 1008...) the welcome says so (resumed: false) and the client starts over.
   */
  function closeAction(code) {
    if (code === 4401 || code === 4408) return 'refresh';
    if (code === 4410) return 'restart';
    if (code === 1000 || (code >= 4000 && code <= 4999)) return 'stop';
    return 'resume';
  }

  /**
   * The wait before reconnect attempt `attempt` (1, 2, 3...): exponential from `base`,
   * capped at `max`, with "equal jitter": a random point in the upper half. The floor keeps
   * a fleet of clients from hammering a broker that is down; the randomness spreads the
   * reconnects of all the clients a restarting broker closed at the same moment (1012).
   */
  function backoffDelay(attempt, base, max, random) {
    var ceiling = Math.min(max, base * Math.pow(2, Math.max(0, attempt - 1)));
    var r = (random || Math.random)();
    return Math.round(ceiling / 2 + (r * ceiling) / 2);
  }

  // ---- frames ---------------------------------------------------------------------------

  function isArrayBuffer(value) {
    // Across realms (a wx ArrayBuffer is not always this realm's): by tag, not instanceof.
    return Object.prototype.toString.call(value) === '[object ArrayBuffer]';
  }

  function parseSeq(digits) {
    if (!SEQ_PATTERN.test(digits)) return -1;
    var seq = Number(digits);
    return seq <= MAX_SEQ ? seq : -1;
  }

  /**
   * A broker frame as {kind, seq, payload} (payload: the welcome's JSON text, or a
   * message's string or ArrayBuffer), or null when it is not one of the protocol's.
   */
  function parseFrame(data) {
    var kind, digits, rest, colon, i;
    if (typeof data === 'string') {
      colon = data.slice(0, MAX_HEADER).indexOf(':');
      if (colon < 1) return null;
      kind = data.charAt(0);
      digits = data.slice(1, colon);
      rest = data.slice(colon + 1);
    } else {
      var bytes = isArrayBuffer(data)
        ? new Uint8Array(data)
        : ArrayBuffer.isView(data)
          ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
          : null;
      if (!bytes) return null;
      colon = -1;
      for (i = 0; i < bytes.length && i < MAX_HEADER; i++) {
        if (bytes[i] === COLON) {
          colon = i;
          break;
        }
      }
      if (colon < 1) return null;
      kind = String.fromCharCode(bytes[0]);
      digits = '';
      for (i = 1; i < colon; i++) digits += String.fromCharCode(bytes[i]);
      // Only messages travel in binary frames; their bytes are handed over as a copy.
      if (kind !== 'm') return null;
      rest = bytes.buffer.slice(bytes.byteOffset + colon + 1, bytes.byteOffset + bytes.byteLength);
    }
    if (kind === 'w') return digits === '' ? { kind: 'w', seq: 0, payload: rest } : null;
    if (kind === 'h') return digits === '' && rest === '' ? { kind: 'h', seq: 0, payload: '' } : null;
    if (kind !== 'm' && kind !== 'a') return null;
    var seq = parseSeq(digits);
    if (seq < 0 || (kind === 'm' && seq === 0) || (kind === 'a' && rest !== '')) return null;
    return { kind: kind, seq: seq, payload: rest };
  }

  /** `m<seq>:` then the payload: a string, or an ArrayBuffer with the ASCII header first. */
  function encodeMessage(seq, payload) {
    var header = 'm' + seq + ':';
    if (typeof payload === 'string') return header + payload;
    var bytes = new Uint8Array(header.length + payload.byteLength);
    for (var i = 0; i < header.length; i++) bytes[i] = header.charCodeAt(i);
    bytes.set(new Uint8Array(payload), header.length);
    return bytes.buffer;
  }

  /** A payload the client can keep for a resend: the string, or a private copy of the bytes
   * (the caller may reuse its buffer once send() returns). */
  function ownPayload(payload) {
    if (typeof payload === 'string') return payload;
    if (isArrayBuffer(payload)) return payload.slice(0);
    if (payload && ArrayBuffer.isView(payload)) {
      return payload.buffer.slice(payload.byteOffset, payload.byteOffset + payload.byteLength);
    }
    throw new TypeError('send() takes a string, an ArrayBuffer or a typed array / DataView');
  }

  // ---- sockets ---------------------------------------------------------------------------
  // Each transport is reduced to {send(data), close(code, reason)} plus four callbacks.

  function wxTransport(wxApi) {
    return function (url, on) {
      var task = wxApi.connectSocket({
        url: url,
        protocols: [SUBPROTOCOL],
        fail: function (res) {
          on.error((res && res.errMsg) || 'connectSocket failed');
        }
      });
      if (!task || typeof task.onMessage !== 'function') {
        // Base libraries before 1.7.0 have one global socket and no SocketTask.
        throw new Error('wx.connectSocket returned no SocketTask (base library 1.7.0+ needed)');
      }
      task.onOpen(function () {
        on.open();
      });
      task.onMessage(function (res) {
        on.message(res.data);
      });
      task.onClose(function (res) {
        on.close(res && typeof res.code === 'number' ? res.code : ABNORMAL, (res && res.reason) || '');
      });
      task.onError(function (res) {
        on.error((res && res.errMsg) || 'socket error');
      });
      return {
        send: function (data) {
          task.send({ data: data });
        },
        close: function (code, reason) {
          task.close({ code: code, reason: reason });
        }
      };
    };
  }

  function webSocketTransport(Ctor) {
    return function (url, on) {
      var ws = new Ctor(url, [SUBPROTOCOL]);
      ws.binaryType = 'arraybuffer';
      // The handlers stay set for the socket's whole life: Node's `ws` throws an 'error'
      // event nobody listens to, and an abandoned socket still reports one.
      ws.onopen = function () {
        on.open();
      };
      ws.onmessage = function (event) {
        on.message(event.data);
      };
      ws.onclose = function (event) {
        on.close(event.code, event.reason || '');
      };
      ws.onerror = function (event) {
        on.error((event && event.message) || 'socket error');
      };
      return {
        send: function (data) {
          ws.send(data);
        },
        close: function (code, reason) {
          ws.close(code, reason);
        }
      };
    };
  }

  // ---- the client ------------------------------------------------------------------------

  /**
   * A reliable tunnel: connects, numbers and acknowledges, reconnects and resumes after
   * drops, and keeps what the app sends until the broker has accepted it.
   * States: 'idle' -> 'connecting' -> 'open' <-> 'reconnecting'/'connecting' -> 'closed'.
   */
  function TunnelClient(options) {
    if (!(this instanceof TunnelClient)) throw new TypeError("use 'new TunnelClient(options)'");
    var opts = {};
    var key;
    options = options || {};
    for (key in DEFAULTS) {
      if (Object.prototype.hasOwnProperty.call(DEFAULTS, key)) {
        opts[key] = options[key] !== undefined ? options[key] : DEFAULTS[key];
      }
    }
    if (!opts.url && typeof opts.getConnectUrl !== 'function') {
      throw new TypeError('TunnelClient needs a url or a getConnectUrl function');
    }
    this._opts = opts;
    this._wx = opts.wx !== undefined ? opts.wx : typeof wx !== 'undefined' ? wx : null;
    if (typeof opts.WebSocket === 'function') {
      this._transport = webSocketTransport(opts.WebSocket);
    } else if (this._wx && typeof this._wx.connectSocket === 'function') {
      this._transport = wxTransport(this._wx);
    } else if (typeof WebSocket !== 'undefined' && WebSocket) {
      // (typeof is 'object' in some old WebKit builds.)
      this._transport = webSocketTransport(WebSocket);
    } else {
      throw new TypeError('no WebSocket: pass options.WebSocket (in Node: require("ws"))');
    }

    this.tunnelId = null;
    this._state = 'idle';
    this._listeners = Object.create(null); // any event name, even 'constructor'
    this._url = opts.url || '';
    this._needUrl = !opts.url;
    this._resumable = false; // a welcome came on this URL: reconnects resume
    this._sock = null;
    this._attempt = 0;
    this._urlGen = 0;
    // Until then, a 4409 may come from a connect this client abandoned mid-handshake,
    // which the broker can still complete after the newer one: not another client.
    this._suspectUntil = 0;
    // Pushes: the last number received, and the last one acknowledged to the broker.
    this._received = 0;
    this._acked = 0;
    // The app's messages, in order, until the broker accepts them: {seq, data, sent}.
    this._pending = [];
    this._nextSeq = 1;
    this._timers = { connect: null, heartbeat: null, deadline: null, ack: null, error: null, retry: null };
    this._unwatch = [];
  }

  Object.defineProperty(TunnelClient.prototype, 'state', {
    get: function () {
      return this._state;
    }
  });

  /** Messages kept until the broker accepts them (sent or still waiting to be). */
  Object.defineProperty(TunnelClient.prototype, 'pendingCount', {
    get: function () {
      return this._pending.length;
    }
  });

  TunnelClient.prototype.on = function (event, listener) {
    if (typeof listener !== 'function') throw new TypeError('on(event, listener): not a function');
    (this._listeners[event] || (this._listeners[event] = [])).push(listener);
    return this;
  };

  TunnelClient.prototype.off = function (event, listener) {
    var list = this._listeners[event];
    if (list) {
      var i = list.indexOf(listener);
      if (i >= 0) list.splice(i, 1);
    }
    return this;
  };

  TunnelClient.prototype._emit = function (event, detail) {
    var list = (this._listeners[event] || []).slice();
    for (var i = 0; i < list.length; i++) {
      try {
        list[i].call(this, detail);
      } catch (err) {
        // An app's handler that throws must not leave the protocol half-way through a
        // frame; the error still surfaces (App.onError in WeChat, the console elsewhere).
        setTimeout(function () {
          throw err;
        }, 0);
      }
    }
  };

  /** Start connecting (once; a closed client stays closed: make a new one). */
  TunnelClient.prototype.connect = function () {
    if (this._state === 'closed') throw new Error('this TunnelClient was closed; create a new one');
    if (this._state !== 'idle') return this;
    this._watchSystem();
    this._connectNow();
    return this;
  };

  /**
   * Send a text (string) or binary (ArrayBuffer, typed array, DataView) message. While
   * disconnected it is kept and goes out, in order, after the (re)connect. Returns false,
   * keeping nothing, when `queueLimit` messages already wait for the broker's
   * acknowledgement or when the client is closed; throws TypeError for another type.
   */
  TunnelClient.prototype.send = function (payload) {
    var data = ownPayload(payload);
    if (this._state === 'closed' || this._pending.length >= this._opts.queueLimit) return false;
    var entry = { seq: this._nextSeq++, data: data, sent: false };
    this._pending.push(entry);
    if (this._state === 'open') this._transmit(entry);
    return true;
  };

  /**
   * Close for good: a close frame (1000 by default) ends the tunnel at the business
   * server; no reconnect follows. Emits `close` with what the broker had not acknowledged.
   */
  TunnelClient.prototype.close = function (code, reason) {
    if (this._state === 'closed') return;
    this._finish(code === undefined ? 1000 : code, reason || '', true);
  };

  /**
   * The network or the app is back (wx.onAppShow, network change, browser 'online'; called
   * by the client itself unless watchSystemEvents is false): reconnect now if waiting to,
   * or check an open socket with a heartbeat (it may have died in the background).
   */
  TunnelClient.prototype.wake = function () {
    if (this._state === 'reconnecting') {
      this._clear('retry');
      this._attempt = 0;
      this._connectNow();
    } else if (this._state === 'open') {
      this._probe();
    }
  };

  // ---- connecting ------------------------------------------------------------------------

  TunnelClient.prototype._connectNow = function () {
    var self = this;
    this._state = 'connecting';
    if (!this._needUrl) return this._open();
    var gen = ++this._urlGen;
    Promise.resolve()
      .then(function () {
        return self._opts.getConnectUrl();
      })
      .then(function (url) {
        if (gen !== self._urlGen || self._state !== 'connecting') return;
        if (typeof url !== 'string' || !url) throw new Error('getConnectUrl() gave no URL');
        // A new connect URL is a new tunnel: nothing on it to resume.
        self._url = url;
        self._needUrl = false;
        self._resumable = false;
        self._open();
      })
      .then(null, function (err) {
        if (gen !== self._urlGen || self._state !== 'connecting') return;
        self._emit('error', err instanceof Error ? err : new Error(String(err)));
        self._retry(ABNORMAL, 'connect_url_failed');
      });
  };

  TunnelClient.prototype._open = function () {
    var self = this;
    var url = this._url;
    if (this._resumable) url += (url.indexOf('?') < 0 ? '?' : '&') + 'resume=' + this._received;
    var sock = { welcomed: false, send: null, close: null };
    this._sock = sock;
    var on = {
      open: function () {
        // A socket abandoned while connecting that opened after all: not ours any more.
        if (sock !== self._sock) safeClose(sock, DROP_CODE, 'abandoned');
      },
      message: function (data) {
        if (sock === self._sock) self._onFrame(sock, data);
      },
      close: function (code, reason) {
        if (sock === self._sock) self._onSocketClose(code, reason);
      },
      error: function (message) {
        if (sock === self._sock) self._onSocketError(message);
      }
    };
    var transport;
    try {
      transport = this._transport(url, on);
    } catch (err) {
      this._sock = null;
      this._emit('error', err);
      return this._retry(ABNORMAL, 'connect_failed');
    }
    sock.send = transport.send;
    sock.close = transport.close;
    if (this._sock === sock) {
      this._set('connect', this._opts.connectTimeout, function () {
        self._drop('connect_timeout');
      });
    }
  };

  function safeClose(sock, code, reason) {
    try {
      if (sock.close) sock.close(code, reason);
    } catch (err) {
      // Already closed, or closing: nothing more to do with it.
    }
  }

  /** The current socket is lost (closed by the broker, or given up on). */
  TunnelClient.prototype._forgetSocket = function () {
    this._clear('connect');
    this._clear('heartbeat');
    this._clear('deadline');
    this._clear('ack');
    this._clear('error');
    this._sock = null;
  };

  /** Give up on the current socket (it looks dead or broke the protocol) and reconnect. */
  TunnelClient.prototype._drop = function (reason) {
    var sock = this._sock;
    if (!sock) return;
    if (!sock.welcomed) this._suspectUntil = Date.now() + this._opts.connectTimeout;
    this._forgetSocket();
    safeClose(sock, DROP_CODE, reason);
    this._retry(ABNORMAL, reason);
  };

  TunnelClient.prototype._onSocketError = function (message) {
    var self = this;
    this._emit('error', new Error(message));
    // Browsers and `ws` follow an error with a close; a close with a code is worth waiting
    // for, but some runtimes never send one: then the socket counts as dropped.
    if (!this._timers.error && this._sock) {
      this._set('error', 1000, function () {
        self._drop('socket_error');
      });
    }
  };

  TunnelClient.prototype._onSocketClose = function (code, reason) {
    var action = closeAction(code);
    if (code === 4409 && Date.now() < this._suspectUntil) action = 'resume';
    if (action === 'stop' || (action === 'refresh' && typeof this._opts.getConnectUrl !== 'function')) {
      return this._finish(code, reason, false);
    }
    this._forgetSocket();
    if (action === 'refresh' || action === 'restart') {
      this._resumable = false;
      this._needUrl = typeof this._opts.getConnectUrl === 'function';
    }
    this._retry(code, reason);
  };

  /** Wait (backoff) and connect again; a closed client if the attempts are used up. */
  TunnelClient.prototype._retry = function (code, reason) {
    var self = this;
    var opts = this._opts;
    this._attempt++;
    if (this._attempt > opts.maxReconnectAttempts) return this._finish(code, reason, false);
    var delay = backoffDelay(this._attempt, opts.reconnectDelay, opts.maxReconnectDelay);
    this._state = 'reconnecting';
    this._set('retry', delay, function () {
      self._connectNow();
    });
    this._emit('reconnecting', { attempt: this._attempt, delay: delay, code: code, reason: reason });
  };

  TunnelClient.prototype._finish = function (code, reason, closeSocket) {
    var sock = this._sock;
    this._forgetSocket();
    this._clear('retry');
    this._urlGen++;
    this._state = 'closed';
    for (var i = 0; i < this._unwatch.length; i++) this._unwatch[i]();
    this._unwatch = [];
    if (sock && closeSocket) safeClose(sock, code, reason);
    var unconfirmed = [];
    var unsent = [];
    for (i = 0; i < this._pending.length; i++) {
      (this._pending[i].sent ? unconfirmed : unsent).push(this._pending[i].data);
    }
    this._pending = [];
    this._emit('close', { code: code, reason: reason, unconfirmed: unconfirmed, unsent: unsent });
  };

  // ---- frames in -------------------------------------------------------------------------

  TunnelClient.prototype._onFrame = function (sock, data) {
    this._clear('deadline'); // any frame shows the connection alive
    var frame = parseFrame(data);
    if (!frame) return this._drop('invalid_frame');
    if (!sock.welcomed) {
      return frame.kind === 'w' ? this._onWelcome(sock, frame.payload) : this._drop('no_welcome');
    }
    if (frame.kind === 'm') {
      if (frame.seq <= this._received) return; // sent again after a resume: had it already
      // A gap means a lost frame: a resume from the last one received fills it.
      if (frame.seq !== this._received + 1) return this._drop('sequence_gap');
      this._received = frame.seq;
      this._emit('message', frame.payload);
      if (this._sock === sock) this._ackSoon();
    } else if (frame.kind === 'a') {
      var pending = this._pending;
      var n = 0;
      while (n < pending.length && pending[n].sent && pending[n].seq <= frame.seq) n++;
      if (n) pending.splice(0, n);
    } else if (frame.kind !== 'h') {
      this._drop('invalid_frame'); // a second welcome
    }
  };

  TunnelClient.prototype._onWelcome = function (sock, json) {
    var welcome;
    try {
      welcome = JSON.parse(json);
    } catch (err) {
      welcome = null;
    }
    if (!welcome || typeof welcome.resumed !== 'boolean' || typeof welcome.accepted !== 'number') {
      return this._drop('invalid_welcome');
    }
    var pending = this._pending;
    var i;
    this._clear('connect');
    this._clear('error');
    sock.welcomed = true;
    this._state = 'open';
    this._attempt = 0;
    this._resumable = true;
    this.tunnelId = welcome.tunnel_id;
    if (welcome.resumed) {
      // The same sequences: the resume point acknowledged every push received, and what
      // the broker accepted needs no second sending.
      this._acked = this._received;
      var accepted = 0;
      while (accepted < pending.length && pending[accepted].seq <= welcome.accepted) accepted++;
      pending.splice(0, accepted);
      var resent = 0;
      for (i = 0; i < pending.length; i++) {
        if (pending[i].sent) resent++;
        this._transmit(pending[i]);
      }
      this._startHeartbeat();
      this._emit('resumed', { tunnelId: this.tunnelId, resent: resent, welcome: welcome });
      return;
    }
    // Sequences start afresh (a first connect, a new URL, or the tunnel no longer waited).
    // Whether what went out on an older socket arrived cannot be known any more: it is
    // reported, not sent twice. What never went out is numbered anew and sent now.
    this._received = 0;
    this._acked = 0;
    var unconfirmed = [];
    var kept = [];
    for (i = 0; i < pending.length; i++) {
      if (pending[i].sent) unconfirmed.push(pending[i].data);
      else kept.push(pending[i]);
    }
    for (i = 0; i < kept.length; i++) kept[i].seq = i + 1;
    this._pending = kept;
    this._nextSeq = kept.length + 1;
    for (i = 0; i < kept.length; i++) this._transmit(kept[i]);
    this._startHeartbeat();
    this._emit('open', {
      tunnelId: this.tunnelId,
      resumed: false,
      unconfirmed: unconfirmed,
      welcome: welcome
    });
  };

  // ---- frames out ------------------------------------------------------------------------

  TunnelClient.prototype._write = function (data) {
    var sock = this._sock;
    if (!sock || !sock.welcomed) return false;
    try {
      sock.send(data);
      return true;
    } catch (err) {
      // Dropped on the next turn, not in the middle of whatever frame or call wrote.
      var self = this;
      if (!this._timers.error) {
        this._set('error', 0, function () {
          self._drop('send_failed');
        });
      }
      return false;
    }
  };

  TunnelClient.prototype._transmit = function (entry) {
    if (!this._sock || !this._sock.welcomed) return;
    // Marked first: even a write that fails may have reached the wire.
    entry.sent = true;
    this._write(encodeMessage(entry.seq, entry.data));
  };

  /** Acknowledge every `ackEvery` pushes, or `ackDelay` ms after the first unacknowledged
   * one: the broker keeps unacknowledged pushes in a bounded buffer (4410 beyond it). */
  TunnelClient.prototype._ackSoon = function () {
    var self = this;
    if (this._received - this._acked >= this._opts.ackEvery) return this._ack();
    if (!this._timers.ack) {
      this._set('ack', this._opts.ackDelay, function () {
        self._ack();
      });
    }
  };

  TunnelClient.prototype._ack = function () {
    this._clear('ack');
    if (this._received > this._acked && this._write('a' + this._received + ':')) {
      this._acked = this._received;
    }
  };

  TunnelClient.prototype._startHeartbeat = function () {
    var self = this;
    var interval = this._opts.heartbeatInterval;
    if (!(interval > 0)) return;
    this._set('heartbeat', interval, function tick() {
      self._probe();
      if (self._sock) self._set('heartbeat', interval, tick);
    });
  };

  /** A heartbeat: if nothing at all arrives within heartbeatTimeout, the socket is dead
   * (mobile networks lose connections without a close). */
  TunnelClient.prototype._probe = function () {
    var self = this;
    if (!this._write('h:') || this._timers.deadline) return;
    this._set('deadline', this._opts.heartbeatTimeout, function () {
      self._drop('heartbeat_timeout');
    });
  };

  // ---- timers and system events ----------------------------------------------------------

  TunnelClient.prototype._set = function (name, ms, fn) {
    var timers = this._timers;
    if (timers[name]) clearTimeout(timers[name]);
    timers[name] = setTimeout(function () {
      timers[name] = null;
      fn();
    }, ms);
  };

  TunnelClient.prototype._clear = function (name) {
    if (this._timers[name]) {
      clearTimeout(this._timers[name]);
      this._timers[name] = null;
    }
  };

  /** Reconnect as soon as the app comes to the foreground or the network comes back,
   * instead of waiting out the backoff (WeChat cuts a background app's sockets). */
  TunnelClient.prototype._watchSystem = function () {
    if (!this._opts.watchSystemEvents) return;
    var self = this;
    var unwatch = this._unwatch;
    var wxApi = this._wx;
    var wake = function () {
      self.wake();
    };
    if (wxApi && typeof wxApi.onAppShow === 'function') {
      wxApi.onAppShow(wake);
      unwatch.push(function () {
        if (typeof wxApi.offAppShow === 'function') wxApi.offAppShow(wake);
      });
    }
    if (wxApi && typeof wxApi.onNetworkStatusChange === 'function') {
      var onNetwork = function (res) {
        if (res && res.isConnected) self.wake();
      };
      wxApi.onNetworkStatusChange(onNetwork);
      unwatch.push(function () {
        // Only with the listener: offNetworkStatusChange() without one removes the app's too.
        if (typeof wxApi.offNetworkStatusChange === 'function') wxApi.offNetworkStatusChange(onNetwork);
      });
    }
    // Browsers: the network back, or the tab shown again (background tabs throttle timers).
    var win = typeof window !== 'undefined' ? window : null;
    if (win && typeof win.addEventListener === 'function') {
      win.addEventListener('online', wake);
      unwatch.push(function () {
        win.removeEventListener('online', wake);
      });
    }
    var doc = typeof document !== 'undefined' ? document : null;
    if (doc && typeof doc.addEventListener === 'function') {
      var onVisible = function () {
        if (doc.visibilityState === 'visible') self.wake();
      };
      doc.addEventListener('visibilitychange', onVisible);
      unwatch.push(function () {
        doc.removeEventListener('visibilitychange', onVisible);
      });
    }
  };

  return {
    TunnelClient: TunnelClient,
    SUBPROTOCOL: SUBPROTOCOL,
    VERSION: VERSION,
    closeAction: closeAction,
    backoffDelay: backoffDelay,
    parseFrame: parseFrame,
    encodeMessage: encodeMessage
  };
});
