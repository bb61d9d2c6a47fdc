// Serves the functions at http://127.0.0.1:3000/api/inngest for the Inngest dev server
// (`npx inngest-cli@latest dev -u http://127.0.0.1:3000/api/inngest`) or Inngest Cloud
// (set INNGEST_SIGNING_KEY). Run it with `node src/serve.ts` (Node 22.18 or later).
import { createServer } from 'node:http';
import { serve } from 'inngest/node';
import { inngest, functions } from './index.ts';

const port = Number(process.env.PORT) || 3000;
const handler = serve({ client: inngest, functions });
createServer((req, res) => {
  if (req.url?.startsWith('/api/inngest')) return handler(req, res);
  res.writeHead(404).end();
}).listen(port, '127.0.0.1', () => console.log(`Inngest functions at http://127.0.0.1:${port}/api/inngest`));
