// The "build": generates dist/server.js, stamping in when it was built.
import { mkdirSync, writeFileSync } from 'node:fs';

mkdirSync('dist', { recursive: true });
const builtAt = new Date().toISOString();
writeFileSync(
  'dist/server.js',
  `import http from 'node:http';
const port = Number(process.env.PORT ?? 5000);
http.createServer((req, res) => res.end('built at ${builtAt}\\n')).listen(port, () => console.log('built app listening on port ' + port));
`,
);
console.log(`build: wrote dist/server.js (${builtAt})`);
