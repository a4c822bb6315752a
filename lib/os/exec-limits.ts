// What execve(2) accepts on Linux. Past these the kernel refuses the whole exec with E2BIG,
// which Node's spawn() throws synchronously: drover checks them first, so the error can name
// the variable at fault.

/** MAX_ARG_STRLEN: the longest single argument or environment string, "NAME=value" and its NUL included. */
export const MAX_ARG_STRLEN = 32 * 4096;

/**
 * The most argv + envp may take, strings and pointers together. The kernel allows a quarter of
 * the stack limit (2 MiB with the usual 8 MiB); half of that leaves room for a smaller stack
 * limit and for the wrapper drover runs every command in.
 */
export const MAX_EXEC_BYTES = 1024 * 1024;

/** Bytes one "NAME=value" takes in envp: the string, its NUL and its pointer. */
export function envEntryBytes(name: string, value: string): number {
  return envStringBytes(name, value) + 8;
}

/** Length of "NAME=value\0" in bytes, as the kernel counts it against MAX_ARG_STRLEN. */
export function envStringBytes(name: string, value: string): number {
  return Buffer.byteLength(name) + 1 + Buffer.byteLength(value) + 1;
}

/** Why a variable cannot be passed to a child, or null when it can. */
export function envStringProblem(name: string, value: string): string | null {
  const n = envStringBytes(name, value);
  if (n <= MAX_ARG_STRLEN) return null;
  return `${name} is ${n} bytes as "${name}=value"; Linux refuses any environment string over ${MAX_ARG_STRLEN} bytes (MAX_ARG_STRLEN, including the name, "=" and the final NUL)`;
}

/**
 * Throws when a command with this argv and environment could not be exec'd: one string over
 * MAX_ARG_STRLEN (naming the variable, and `where` it came from), or the whole over MAX_EXEC_BYTES.
 */
export function checkExecSize(argv: readonly string[], env: Record<string, string>, where: (name: string) => string = () => ''): void {
  let total = 0;
  for (const [name, value] of Object.entries(env)) {
    const problem = envStringProblem(name, value);
    if (problem) throw new Error(`environment variable ${problem}${where(name)}`);
    total += envEntryBytes(name, value);
  }
  for (const a of argv) {
    const n = Buffer.byteLength(a) + 1;
    if (n > MAX_ARG_STRLEN) throw new Error(`the command is ${n} bytes; Linux refuses any single argument over ${MAX_ARG_STRLEN} bytes`);
    total += n + 8;
  }
  if (total > MAX_EXEC_BYTES) {
    const biggest = Object.entries(env).sort((a, b) => envEntryBytes(b[0], b[1]) - envEntryBytes(a[0], a[1]))[0];
    throw new Error(
      `the environment and command take ${total} bytes, over the ${MAX_EXEC_BYTES} bytes drover passes to a command ` +
        `(Linux allows about a quarter of the stack limit)${biggest ? `; the largest variable is ${biggest[0]}${where(biggest[0])}` : ''}`,
    );
  }
}
