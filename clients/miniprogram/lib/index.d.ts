// Type declarations for tunnel-broker-miniprogram (lib/index.js). Hand-written: keep in step
// with the library (test/types.test.js compiles test/types/usage.ts against them).

/** The WebSocket subprotocol the client asks for: "tb.reliable.v1". */
export declare const SUBPROTOCOL: 'tb.reliable.v1';
export declare const VERSION: string;

/** A message's payload: text, or bytes (binary payloads always arrive as an ArrayBuffer). */
export type Payload = string | ArrayBuffer;

/** What the client may send: text, or bytes (copied when `send` is called). */
export type OutgoingPayload = string | ArrayBuffer | ArrayBufferView;

export type TunnelState = 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed';

/** The broker's first frame on every socket. */
export interface Welcome {
  tunnel_id: string;
  /** Whether this socket continues the tunnel's sequences. */
  resumed: boolean;
  /** The number of the client's last message the broker accepted. */
  accepted: number;
  resume_window_seconds: number;
}

/** A WebSocket constructor in the browser's shape (the `ws` package's default export fits). */
export interface WebSocketLike {
  binaryType: string;
  // The client sets these; `any` events so that the DOM's and `ws`'s handler types fit.
  onopen: ((event: any) => void) | null;
  onmessage: ((event: any) => void) | null;
  onclose: ((event: any) => void) | null;
  onerror: ((event: any) => void) | null;
  send(data: string | ArrayBuffer): void;
  close(code?: number, reason?: string): void;
}
export type WebSocketConstructor = new (url: string, protocols: string[]) => WebSocketLike;

/** The part of WeChat's SocketTask the client uses. */
export interface SocketTaskLike {
  onOpen(listener: (res: any) => void): void;
  onMessage(listener: (res: { data: string | ArrayBuffer }) => void): void;
  onClose(listener: (res: { code: number; reason: string }) => void): void;
  onError(listener: (res: { errMsg: string }) => void): void;
  send(options: { data: string | ArrayBuffer }): void;
  close(options: { code?: number; reason?: string }): void;
}

/** The part of `wx` the client uses (every method but connectSocket is optional). */
export interface WxLike {
  connectSocket?(options: {
    url: string;
    protocols?: string[];
    fail?: (res: { errMsg: string }) => void;
  }): SocketTaskLike;
  onAppShow?(listener: (res: any) => void): void;
  offAppShow?(listener: (res: any) => void): void;
  onNetworkStatusChange?(listener: (res: { isConnected: boolean; networkType?: string }) => void): void;
  offNetworkStatusChange?(listener: (res: { isConnected: boolean; networkType?: string }) => void): void;
}

export interface TunnelClientOptions {
  /** The connect URL the business server gave (`connect_url`). Optional with getConnectUrl. */
  url?: string;
  /**
   * A fresh connect URL from the business server (a new tunnel): called when there is no
   * `url`, and after 4401 (token invalid), 4408 (token expired) and 4410 (tunnel ended).
   * A rejection counts as a failed attempt (backoff, then asked again).
   */
  getConnectUrl?: () => string | PromiseLike<string>;
  /** A WebSocket constructor (Node: `require('ws')`). Default: wx.connectSocket, else the global WebSocket. */
  WebSocket?: WebSocketConstructor;
  /** The `wx` object (default: the global `wx`); null: none. */
  wx?: WxLike | null;
  /** ms between heartbeats (`h:`); 0 turns them off. Default 20000. */
  heartbeatInterval?: number;
  /** ms without any frame after a heartbeat before the socket counts as dead. Default 10000. */
  heartbeatTimeout?: number;
  /** ms to wait for the welcome after starting a connect. Default 10000. */
  connectTimeout?: number;
  /** First reconnect delay ceiling in ms (doubles each attempt, equal jitter). Default 500. */
  reconnectDelay?: number;
  /** Largest reconnect delay ceiling in ms. Default 30000. */
  maxReconnectDelay?: number;
  /** Reconnect attempts in a row before giving up (`close`). Default Infinity. */
  maxReconnectAttempts?: number;
  /** Messages kept until acknowledged by the broker; `send` returns false beyond. Default 1000. */
  queueLimit?: number;
  /** Acknowledge after this many pushes... Default 32. */
  ackEvery?: number;
  /** ...or this many ms after the first unacknowledged one. Default 500. */
  ackDelay?: number;
  /** Reconnect on wx.onAppShow / wx.onNetworkStatusChange / window 'online' / tab shown. Default true. */
  watchSystemEvents?: boolean;
}

export interface OpenEvent {
  tunnelId: string;
  /** Always false: a resumed reconnect emits `resumed` instead. */
  resumed: false;
  /**
   * Messages sent on an earlier socket and never acknowledged; not sent again, since they
   * may or may not have arrived.
   */
  unconfirmed: Payload[];
  welcome: Welcome;
}

export interface ResumedEvent {
  tunnelId: string;
  /** Messages sent again because the broker had not accepted them. */
  resent: number;
  welcome: Welcome;
}

export interface ReconnectingEvent {
  /** 1 for the first attempt after a success, then 2, 3... */
  attempt: number;
  /** ms until the attempt. */
  delay: number;
  /** The close code that ended the socket (1006 when no close frame said, or no socket opened). */
  code: number;
  reason: string;
}

export interface CloseEvent {
  code: number;
  reason: string;
  /** Messages sent but never acknowledged by the broker. */
  unconfirmed: Payload[];
  /** Messages never sent. */
  unsent: Payload[];
}

export interface TunnelClientEvents {
  open: OpenEvent;
  resumed: ResumedEvent;
  message: Payload;
  reconnecting: ReconnectingEvent;
  close: CloseEvent;
  error: Error;
}

export declare class TunnelClient {
  constructor(options: TunnelClientOptions);
  /** The tunnel's id, from the last welcome (null before the first). */
  tunnelId: string | null;
  readonly state: TunnelState;
  /** Messages kept until the broker acknowledges them (sent or waiting to be). */
  readonly pendingCount: number;
  /** Start connecting. Throws on a closed client. */
  connect(): this;
  /**
   * Send text or bytes; kept while disconnected and sent, in order, after the (re)connect.
   * Returns false (keeping nothing) when `queueLimit` messages are pending or the client is
   * closed. Throws TypeError for another type.
   */
  send(payload: OutgoingPayload): boolean;
  /** Close for good (default 1000): the tunnel ends; emits `close`. */
  close(code?: number, reason?: string): void;
  /** Reconnect now if waiting to, or check an open socket with a heartbeat. */
  wake(): void;
  on<K extends keyof TunnelClientEvents>(event: K, listener: (detail: TunnelClientEvents[K]) => void): this;
  off<K extends keyof TunnelClientEvents>(event: K, listener: (detail: TunnelClientEvents[K]) => void): this;
}

/** A parsed broker frame (null from parseFrame when not one of the protocol's). */
export interface Frame {
  kind: 'w' | 'm' | 'a' | 'h';
  seq: number;
  payload: Payload;
}

/** What a close code asks of the client. */
export declare function closeAction(code: number): 'stop' | 'refresh' | 'restart' | 'resume';
/**
 * The reconnect delay (ms) of attempt `attempt` (1-based): in [ceiling/2, ceiling],
 * ceiling = min(max, base * 2^(attempt-1)); `random` defaults to Math.random.
 */
export declare function backoffDelay(
  attempt: number,
  base: number,
  max: number,
  random?: () => number
): number;
export declare function parseFrame(data: string | ArrayBuffer | ArrayBufferView): Frame | null;
export declare function encodeMessage(seq: number, payload: string | ArrayBuffer): string | ArrayBuffer;

export as namespace TunnelBrokerClient;
