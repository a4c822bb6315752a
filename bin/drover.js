#!/usr/bin/env node
// Thin launcher: the CLI is compiled to dist/ by `npm ci` (the `prepare` script).
import { main } from '../dist/lib/cli/main.js';

const code = await main(process.argv.slice(2));
// Exit explicitly: a forced stop must not wait for anything still pending.
process.exit(code);
