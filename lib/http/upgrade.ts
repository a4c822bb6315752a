import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';

export type UpgradeHandler = (req: IncomingMessage, socket: Duplex, head: Buffer) => void;

/**
 * One `upgrade` listener for the server: picks the handler by exact path, else `fallback`
 * (attach, which refuses unknown paths itself). New WebSocket endpoints add a route here
 * instead of adding listeners that would each have to ignore the others' paths.
 */
export function dispatchUpgrades(routes: Record<string, UpgradeHandler>, fallback: UpgradeHandler): UpgradeHandler {
  return (req, socket, head) => {
    const path = new URL(req.url ?? '/', 'http://agent').pathname;
    (Object.hasOwn(routes, path) ? routes[path] : fallback)(req, socket, head);
  };
}
