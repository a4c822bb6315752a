import type { AnyStateMachine } from 'xstate';

/** The parts of XState's definition (as JSON: targets are "#id" strings) that the diagram uses. */
interface PlainNode {
  id: string;
  type: string;
  initial?: { target?: string[] };
  invoke: { src: unknown; id: string }[];
  transitions: { target?: string[]; eventType: string; guard?: unknown; delay?: unknown }[];
  states: Record<string, PlainNode>;
}

/** One arrow of the diagram. `source` is "*" for a transition the machine accepts in any state. */
export interface MachineTransition {
  source: string;
  target: string;
  event: string;
  /** Short text for drawing: "START", "done", "error", "after 0 ms", "after backoff". */
  label: string;
  guard: string | null;
}

export interface MachineDocument {
  id: string;
  initial: string;
  states: { name: string; type: string; invokes: string[] }[];
  transitions: MachineTransition[];
  /** XState's own definition, functions removed, for tools that read it. */
  definition: unknown;
}

/**
 * XState's definition as plain data. Its objects serialise themselves (targets become "#id"
 * strings); functions (actions, guards and delays written in code) are left out, not nulled.
 */
export function plainDefinition(machine: AnyStateMachine): PlainNode {
  return JSON.parse(JSON.stringify(machine.definition, (_k, v) => (Array.isArray(v) ? v.filter((x) => typeof x !== 'function') : v)));
}

function label(eventType: string, delay: unknown): string {
  if (eventType.startsWith('xstate.done.actor.')) return 'done';
  if (eventType.startsWith('xstate.error.actor.')) return 'error';
  if (eventType.startsWith('xstate.after.')) return typeof delay === 'number' ? `after ${delay} ms` : `after ${String(delay)}`;
  return eventType;
}

function guardName(guard: unknown): string | null {
  if (!guard) return null;
  if (typeof guard === 'string') return guard;
  if (typeof guard === 'object' && typeof (guard as { type?: unknown }).type === 'string') return (guard as { type: string }).type;
  return 'guard';
}

/** The machine as a list of states and arrows, which is what a diagram needs. */
export function describeMachine(machine: AnyStateMachine): MachineDocument {
  const root = plainDefinition(machine);
  const prefix = `${root.id}.`;
  const name = (id: string) => {
    const bare = id.startsWith('#') ? id.slice(1) : id;
    return bare === root.id ? '*' : bare.startsWith(prefix) ? bare.slice(prefix.length) : bare;
  };
  const states: MachineDocument['states'] = [];
  const transitions: MachineTransition[] = [];
  const walk = (node: PlainNode) => {
    if (node !== root) {
      states.push({ name: name(node.id), type: node.type, invokes: node.invoke.map((i) => (typeof i.src === 'string' ? i.src : i.id)) });
    }
    for (const tr of node.transitions) {
      // Targetless transitions (actions only) do not move the process: nothing to draw.
      for (const target of tr.target ?? []) {
        transitions.push({
          source: name(node.id),
          target: name(target),
          event: tr.eventType,
          label: label(tr.eventType, tr.delay),
          guard: guardName(tr.guard),
        });
      }
    }
    for (const child of Object.values(node.states)) walk(child);
  };
  walk(root);
  const initial = root.initial?.target?.[0];
  return {
    id: root.id,
    initial: initial ? name(initial) : (states[0]?.name ?? ''),
    states,
    transitions,
    definition: root,
  };
}
