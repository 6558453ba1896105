// Compiled (never run) by test/types.test.js against lib/index.d.ts: how an app uses the
// library, and mistakes the declarations must refuse.
import { TunnelClient, SUBPROTOCOL, backoffDelay, closeAction, Payload } from '../../lib/index';

declare const wx: {
    connectSocket(options: { url: string; protocols?: string[] }): {
        onOpen(cb: (res: { header?: Record<string, string> }) => void): void;
        onMessage(cb: (res: { data: string | ArrayBuffer }) => void): void;
        onClose(cb: (res: { code: number; reason: string }) => void): void;
        onError(cb: (res: { errMsg: string }) => void): void;
        send(options: { data: string | ArrayBuffer; success?: () => void }): void;
        close(options: { code?: number; reason?: string }): void;
    };
    onAppShow(cb: (options: { path: string }) => void): void;
    offAppShow(cb: (options: { path: string }) => void): void;
    onNetworkStatusChange(cb: (res: { isConnected: boolean; networkType: string }) => void): void;
    request(options: { url: string; success: (res: { data: { connect_url: string } }) => void; fail: (err: unknown) => void }): void;
};

function getConnectUrl(): Promise<string> {
    return new Promise((resolve, reject) => {
        wx.request({ url: 'https://biz.example/api/tunnel', success: (res) => resolve(res.data.connect_url), fail: reject });
    });
}

const client = new TunnelClient({ getConnectUrl, wx, heartbeatInterval: 15000, queueLimit: 200 });
const browser = new TunnelClient({ url: 'wss://b/v1/connect?token=t', WebSocket: WebSocket, wx: null });
const state: 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed' = client.state;
const id: string | null = client.tunnelId;
const count: number = client.pendingCount;
const protocol: 'tb.reliable.v1' = SUBPROTOCOL;

client
    .on('open', (e) => {
        const resumed: false = e.resumed;
        const lost: Payload[] = e.unconfirmed;
        const tunnel: string = e.welcome.tunnel_id;
    })
    .on('resumed', (e) => {
        const n: number = e.resent + e.welcome.accepted;
    })
    .on('message', (payload) => {
        if (typeof payload === 'string') payload.toUpperCase();
        else new Uint8Array(payload);
    })
    .on('reconnecting', (e) => {
        const n: number = e.attempt + e.delay + e.code;
        const why: string = e.reason;
    })
    .on('close', (e) => {
        const all: Payload[] = e.unconfirmed.concat(e.unsent);
        const code: number = e.code;
    })
    .on('error', (err) => err.message)
    .connect();

const ok: boolean =
    client.send('text') &&
    client.send(new ArrayBuffer(2)) &&
    client.send(new Uint8Array(2)) &&
    client.send(new DataView(new ArrayBuffer(1)));
client.wake();
client.close();
client.close(4000, 'bye');
browser.off('message', () => undefined);
const delay: number = backoffDelay(1, 500, 30000, Math.random);
const action: 'stop' | 'refresh' | 'restart' | 'resume' = closeAction(4409);

// @ts-expect-error: no such event
client.on('connected', () => undefined);
// @ts-expect-error: a message is a string or an ArrayBuffer, not a number
client.on('message', (payload: number) => payload);
// @ts-expect-error: objects are not payloads
client.send({ text: 'no' });
// @ts-expect-error: the state is read-only
client.state = 'open';
// @ts-expect-error: options are checked
new TunnelClient({ url: 'x', heartbeatInterval: '20s' });

export { state, id, count, protocol, ok, delay, action };
