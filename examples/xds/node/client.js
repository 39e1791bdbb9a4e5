#!/usr/bin/env node
// A Node.js gRPC client balanced by disco over xDS, with no disco code in it.
//
// It dials xds:///<target> with @grpc/grpc-js-xds: the bootstrap named by
// GRPC_XDS_BOOTSTRAP points it at disco's xDS server (sinks/xds), which
// serves the target's endpoints; grpc-js balances its calls over them and
// follows them as pods come and go.
//
//     npm install
//     GRPC_XDS_BOOTSTRAP=bootstrap.json node client.js xds:///greeter.demo:grpc
//
// It calls grpc.testing.TestService/UnaryCall (the servers of disco's tests
// and demo answer with their name in SimpleResponse.server_id) from a number
// of concurrent callers and, driven by lines on stdin, reports what it saw
// as one JSON line on stdout (disco's end-to-end tests drive it this way):
//
//     load N    run N concurrent callers (0 stops them)
//     report    {"ok": n, "failed": n, "per": {server: calls}, "errors": [...]},
//               counted since the last report
//     once      one call without waiting for ready: {"ok", "server", "error", "ms"}
//     redial    close the channel and dial the target again
//     keep T    dial target T on a second channel, kept open, and call it once
//     quit
//
// The request is empty and the reply's server_id is read from its wire form,
// so no generated code is needed.
'use strict';

const grpc = require('@grpc/grpc-js');
require('@grpc/grpc-js-xds').register(); // the xds:/// scheme and xDS balancers
const readline = require('readline');

const METHOD = '/grpc.testing.TestService/UnaryCall';

// serverId reads field 4 (server_id, a string) of a grpc.testing.SimpleResponse.
function serverId(reply) {
  let i = 0;
  const varint = () => {
    let value = 0;
    let shift = 0;
    for (;;) {
      const b = reply[i++];
      value += (b & 0x7f) * 2 ** shift;
      shift += 7;
      if (b < 0x80) return value;
    }
  };
  while (i < reply.length) {
    const key = varint();
    const field = Math.floor(key / 8);
    const kind = key % 8;
    if (kind === 0) varint();
    else if (kind === 2) {
      const n = varint();
      if (field === 4) return reply.subarray(i, i + n).toString();
      i += n;
    } else if (kind === 1) i += 8;
    else if (kind === 5) i += 4;
    else throw new Error(`unexpected wire type ${kind}`);
  }
  return '';
}

const target = process.argv[2];
if (!target) {
  console.error('usage: client.js xds:///<target>');
  process.exit(2);
}

let client = new grpc.Client(target, grpc.credentials.createInsecure());
let want = 0;
let running = 0;
let counts = { ok: 0, failed: 0, per: {}, errors: [] };

const kept = [];

function call(timeoutMs, on = client) {
  return new Promise((resolve, reject) => {
    on.makeUnaryRequest(METHOD, (b) => b, (b) => b, Buffer.alloc(0),
      { deadline: Date.now() + timeoutMs },
      (err, reply) => (err ? reject(err) : resolve(serverId(reply))));
  });
}

const describe = (err) => `${grpc.status[err.code] || err.code}: ${err.details || err.message}`;

async function caller(n) {
  while (n < want) {
    try {
      const name = await call(5000);
      counts.ok++;
      counts.per[name] = (counts.per[name] || 0) + 1;
    } catch (err) {
      counts.failed++;
      if (counts.errors.length < 10) counts.errors.push(describe(err));
      await new Promise((r) => setTimeout(r, 10));
    }
  }
  running--;
}

async function once() {
  const begin = Date.now();
  let r;
  try {
    r = { ok: true, server: await call(30000) };
  } catch (err) {
    r = { ok: false, error: describe(err) };
  }
  r.ms = Date.now() - begin;
  return r;
}

const say = (v) => process.stdout.write(JSON.stringify(v) + '\n');

say({ started: true });
const lines = readline.createInterface({ input: process.stdin });
lines.on('line', async (line) => {
  const [cmd, arg] = line.trim().split(/\s+/);
  switch (cmd) {
    case 'load':
      want = Number(arg);
      for (; running < want; running++) caller(running);
      say({ load: want });
      break;
    case 'report':
      say(counts);
      counts = { ok: 0, failed: 0, per: {}, errors: [] };
      break;
    case 'once':
      say(await once());
      break;
    case 'redial': {
      const old = client;
      client = new grpc.Client(target, grpc.credentials.createInsecure());
      old.close();
      say({ redialed: true });
      break;
    }
    case 'keep': {
      // A channel of its own, kept open, called once so that it subscribes.
      const other = new grpc.Client(arg, grpc.credentials.createInsecure());
      kept.push(other);
      try {
        await call(5000, other);
        say({ kept: true });
      } catch (err) {
        say({ kept: true, error: describe(err) });
      }
      break;
    }
    case 'quit':
      want = 0;
      client.close();
      process.exit(0);
      break;
    case '':
    case undefined:
      break;
    default:
      say({ error: `unknown command ${cmd}` });
  }
});
lines.on('close', () => process.exit(0));
