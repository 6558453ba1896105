'use strict';
/**
 * The chat both official demos run (the Wafer 1 demo's ChatTunnelHandler and the wafer2
 * quickstart's tunnel controller: the same logic): a tunnel requested by a logged-in user
 * joins the room on connect (everybody hears `people`), `speak` is broadcast to all,
 * `echo` goes back to its sender, a close leaves the room; a tunnel with no known user is
 * closed. Each server passes its own SDK call (`push(op, tunnelIds, type, content)`, ops
 * broadcast / closeTunnel) and how it echoes.
 */
const { out } = require('./common');

function chatRoom({ push, echo }) {
    const userMap = {};
    const connectedTunnelIds = [];

    function forgetInvalid(result) {
        const invalidTunnelIds = (result && result.data && result.data.invalidTunnelIds) || [];
        invalidTunnelIds.forEach(tunnelId => {
            delete userMap[tunnelId];
            const index = connectedTunnelIds.indexOf(tunnelId);
            if (~index) connectedTunnelIds.splice(index, 1);
        });
    }

    const $broadcast = (type, content) => push('broadcast', connectedTunnelIds, type, content).then(forgetInvalid, () => {});
    const $close = tunnelId => push('closeTunnel', [tunnelId]).catch(() => {});

    return {
        userMap,
        connectedTunnelIds,
        forgetInvalid,
        onConnect(tunnelId) {
            out({ event: 'connect', tunnelId });
            if (tunnelId in userMap) {
                connectedTunnelIds.push(tunnelId);
                $broadcast('people', { total: connectedTunnelIds.length, enter: userMap[tunnelId] });
            } else {
                $close(tunnelId);
            }
        },
        onMessage(tunnelId, type, content) {
            out({ event: 'message', tunnelId, type, content });
            switch (type) {
            case 'speak':
                if (tunnelId in userMap) {
                    $broadcast('speak', { who: userMap[tunnelId], word: content && content.word });
                } else {
                    $close(tunnelId);
                }
                break;
            case 'echo':
                echo(tunnelId, content).catch(() => {});
                break;
            default:
                break;
            }
        },
        onClose(tunnelId) {
            out({ event: 'close', tunnelId });
            if (!(tunnelId in userMap)) {
                $close(tunnelId);
                return;
            }
            const leaveUser = userMap[tunnelId];
            delete userMap[tunnelId];
            const index = connectedTunnelIds.indexOf(tunnelId);
            if (~index) connectedTunnelIds.splice(index, 1);
            if (connectedTunnelIds.length > 0) {
                $broadcast('people', { total: connectedTunnelIds.length, leave: leaveUser });
            }
        },
    };
}

module.exports = { chatRoom };
