// BullMQ on the same Redis as Drover's e2e bench, the same flow: submit N no-op jobs, then
// process them with one worker at the given concurrency, and report jobs per second as one
// JSON object. Run by `drover-bench e2e --peer bullmq`; usable alone:
//   node bench.mjs redis://127.0.0.1:PORT 20000 64
import { Queue, Worker } from 'bullmq';
import { readFileSync } from 'node:fs';

const url = new URL(process.argv[2] ?? 'redis://127.0.0.1:6379');
const jobs = Number(process.argv[3] ?? 20000);
const concurrency = Number(process.argv[4] ?? 64);
if (!Number.isInteger(jobs) || jobs <= 0 || !Number.isInteger(concurrency) || concurrency <= 0) {
  console.error('usage: node bench.mjs REDIS_URL JOBS CONCURRENCY');
  process.exit(2);
}
const connection = { host: url.hostname, port: Number(url.port || 6379), maxRetriesPerRequest: null };
const version = JSON.parse(readFileSync(new URL('./node_modules/bullmq/package.json', import.meta.url))).version;
const name = `drover-peer-${process.pid}`;
const queue = new Queue(name, { connection });

const submitStart = performance.now();
for (let i = 0; i < jobs; i += 1000) {
  const n = Math.min(1000, jobs - i);
  await queue.addBulk(Array.from({ length: n }, (_, k) => ({ name: 'noop', data: { i: i + k } })));
}
const submitEnd = performance.now();

let done = 0;
let finish;
const finished = new Promise((resolve) => { finish = resolve; });
const processStart = performance.now();
const worker = new Worker(name, async () => {}, { connection, concurrency });
worker.on('completed', () => {
  done += 1;
  if (done === jobs) finish();
});
worker.on('failed', (_, err) => { console.error(err); process.exit(1); });
await finished;
const processEnd = performance.now();

console.log(JSON.stringify({
  peer: 'bullmq',
  version,
  jobs,
  concurrency,
  submit_per_sec: jobs / ((submitEnd - submitStart) / 1000),
  jobs_per_sec: jobs / ((processEnd - processStart) / 1000),
}));
await worker.close();
await queue.obliterate({ force: true });
await queue.close();
