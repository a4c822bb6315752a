/**
 * A process's name on an agent: `APP.NODE` (`shop.web.0`). Imports nothing, so the CLI can
 * use the same rule without loading the agent's modules.
 */
export function slugOf(app: string, node: string): string {
  return `${app}.${node}`;
}
