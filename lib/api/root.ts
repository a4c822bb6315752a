import type { Base } from './base.js';

// The document at `/`: the one address a client knows; everything else is found from here.
// (Not index.ts: that name reads as the folder's barrel module.)
export function rootDocument(base: Base) {
  return {
    create: `${base.http}/create-process`,
    list: `${base.http}/list-processes`,
    data: `${base.http}/data`,
    runs: `${base.http}/runs`,
    // Server-Sent Events at this URL; a WebSocket at the same path (ws://).
    inspect: `${base.http}/inspect`,
    machine: `${base.http}/machine`,
    ui: `${base.http}/ui`,
  };
}
