import { createServer } from 'node:http';

const port = Number(process.env.PORT ?? 5000);
const greeting = process.env.GREETING ?? 'hello from drover';
createServer((req, res) => {
  console.log(`${req.method} ${req.url}`);
  res.setHeader('content-type', 'text/plain');
  res.end(`${greeting} (${process.env.DYNO ?? 'local'})\n`);
}).listen(port, () => console.log(`listening on port ${port}`));
process.on('SIGTERM', () => {
  console.log('SIGTERM received, shutting down');
  process.exit(0);
});
