// scripts/bench_express.js: the reference row of scripts/bench, the original design's stack
// (/work/shared/seed-design.md: Express reading the cached tournament from Redis on every request).
//
// GET /api/tournaments/:id answers the bytes stored in Redis under `tournament:<id>` (one GET per
// request, over the loopback TCP connection of one node-redis client), with Content-Type
// application/json; 404 when the key is missing. Express's defaults stay on (ETag, X-Powered-By), as
// in the original design. GET /health answers "ok" once the body is stored.
//
// Environment:
//   PORT        port to listen on (127.0.0.1)
//   REDIS_URL   redis://127.0.0.1:<port> (the bench starts redis-server in its temp dir)
//   BODY_FILE   file whose bytes are stored under `tournament:<BODY_ID>` at start (SET, no TTL)
//   BODY_ID     the tournament id of BODY_FILE
//   WORKERS     processes: 1 (default) is one process; N > 1 forks N workers with node:cluster,
//               which share the port (the primary only forks and restarts nothing)
//
// Packages: Debian's node-express and node-redis (NODE_PATH=/usr/share/nodejs).
'use strict';

const cluster = require('node:cluster');
const fs = require('node:fs');

const workers = Number(process.env.WORKERS || '1');

async function connect() {
  const { createClient } = require('redis');
  const redis = createClient({ url: process.env.REDIS_URL });
  redis.on('error', (err) => console.error('redis:', err.message));
  await redis.connect();
  return redis;
}

async function store(redis) {
  if (process.env.BODY_FILE) {
    await redis.set(`tournament:${process.env.BODY_ID}`, fs.readFileSync(process.env.BODY_FILE));
  }
}

async function primary() {
  const redis = await connect();
  await store(redis); // before any worker answers
  await redis.quit();
  for (let i = 0; i < workers; i++) cluster.fork();
  cluster.on('exit', (worker, code) => console.error(`worker ${worker.process.pid} exited (${code})`));
  const stop = () => {
    for (const worker of Object.values(cluster.workers)) worker.process.kill('SIGTERM');
    process.exit(0);
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

const run = workers > 1 && cluster.isPrimary ? primary : main;
run().catch((err) => {
  console.error(err);
  process.exit(1);
});

async function main() {
  const express = require('express');
  const { commandOptions } = require('redis');
  const redis = await connect();
  if (!cluster.isWorker) await store(redis);

  const app = express();
  const asBuffer = commandOptions({ returnBuffers: true });

  app.get('/api/tournaments/:id', async (req, res, next) => {
    try {
      const body = await redis.get(asBuffer, `tournament:${req.params.id}`);
      if (body === null) {
        res.status(404).json({ error: { code: 'not_found', message: 'tournament not cached' } });
        return;
      }
      res.type('application/json').send(body);
    } catch (err) {
      next(err);
    }
  });
  app.get('/health', (req, res) => res.send('ok'));

  app.listen(Number(process.env.PORT), '127.0.0.1');
  process.on('SIGINT', () => process.exit(0)); // a benchmark target: no graceful drain
  process.on('SIGTERM', () => process.exit(0));
}
