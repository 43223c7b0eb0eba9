// socket.io 0.6.18 (the npm package, unmodified) on node, as a benchmark contender.
//
//     node benchmarks/node_sio06.js [port]
//
// Echo server for xhr-polling and jsonp-polling at /echo/<transport>/..., the
// same paths and protocol the TornadIO contender serves, plus the benchmark
// instrumentation at GET /_bench/stats (rss_kb, sessions, IOLoop-lag sampling
// with ?lag=start / ?lag=stop, cpu_s). Prints one JSON line
// {"ready": true, "port": P, "pid": PID, ...} once listening and exits when
// its stdin reaches EOF (run.py holds the other end) or on SIGTERM.
//
// socket.io 0.6 was written for node 0.4. Two things it needs are gone from
// node 20 and are put back here before it loads, without touching its files:
// process.EventEmitter (now only in the 'events' module) and
// process.binding('natives'), which 0.6 reads to choose 'util' over 'sys'.
'use strict';

const events = require('events');
const http = require('http');
const path = require('path');
const url = require('url');

if (!process.EventEmitter) process.EventEmitter = events.EventEmitter;
const originalBinding = process.binding;
process.binding = function (name) {
  if (name === 'natives') {
    try {
      const natives = originalBinding.call(process, name);
      if (natives && natives.util) return natives;
    } catch (e) { /* removed in this node: answer as node 0.4 would */ }
    return { util: true };
  }
  return originalBinding.apply(process, arguments);
};
process.removeAllListeners('warning');  // the deprecation notices of binding()

const io = require(path.join(__dirname, '..', 'node_modules', 'socket.io'));

// -- IOLoop lag: how late a 5 ms timer fires ------------------------------------------
const lag = { samples: [], timer: null, started: 0 };

function lagTick(before) {
  lag.timer = setTimeout(() => {
    const now = process.hrtime.bigint();
    const late = Number(now - before) / 1e6 - 5;
    lag.samples.push(late > 0 ? late : 0);
    lagTick(now);
  }, 5);
}

function lagSummary() {
  const values = lag.samples.slice().sort((a, b) => a - b);
  if (!values.length) return null;
  const rank = (f) => values[Math.min(values.length, Math.max(Math.ceil(f * values.length), 1)) - 1];
  return {
    samples: values.length,
    seconds: (Date.now() - lag.started) / 1000,
    p50_ms: Math.round(rank(0.5) * 1000) / 1000,
    p99_ms: Math.round(rank(0.99) * 1000) / 1000,
    max_ms: Math.round(values[values.length - 1] * 1000) / 1000,
  };
}

// -- the server -------------------------------------------------------------------------
const server = http.createServer((req, res) => {
  const parsed = url.parse(req.url, true);
  if (parsed.pathname !== '/_bench/stats') {
    res.writeHead(404);
    res.end();
    return;
  }
  const which = parsed.query.lag;
  if (which === 'start') {
    clearTimeout(lag.timer);
    lag.samples = [];
    lag.started = Date.now();
    lagTick(process.hrtime.bigint());
  } else if (which === 'stop') {
    clearTimeout(lag.timer);
    lag.timer = null;
  }
  const cpu = process.cpuUsage();
  const body = JSON.stringify({
    pid: process.pid,
    rss_kb: Math.round(process.memoryUsage().rss / 1024),
    sessions: Object.keys(listener.clients).length,
    lag: which === 'stop' ? lagSummary() : null,
    gc_collections: [0, 0, 0],
    cpu_s: (cpu.user + cpu.system) / 1e6,
  });
  res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
});

const listener = io.listen(server, {
  resource: 'echo',
  transports: ['xhr-polling', 'jsonp-polling'],
  flashPolicyServer: false,
  log: null,
});

listener.on('connection', (client) => {
  client.on('message', (message) => client.send(message));
});

server.listen(Number(process.argv[2] || 0), '127.0.0.1', () => {
  process.stdout.write(JSON.stringify({
    ready: true, port: server.address().port, pid: process.pid, kind: 'node', variants: [],
    versions: { node: process.version, 'socket.io': require(path.join(
      __dirname, '..', 'node_modules', 'socket.io', 'package.json')).version },
  }) + '\n');
});

process.stdin.on('data', () => {});
process.stdin.on('end', () => process.exit(0));
process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
