#!/usr/bin/env node
// A disco sink plugin written in Node.js: every update it gets is applied
// to what it holds of the target, and the result written as one JSON line
// to the file given as its argument (and logged through the host):
//
//   {"target":"demo/greeter:grpc","seq":7,"endpoints":["10.244.0.2:50051", ...],"stale":""}
//
// A host runs it like any sink plugin (plugin.NewSink, or disco's agent:
// a sink of type plugin). Errors are data: a delta that does not fit what
// it holds asks the host for the full state (resync).
'use strict';

const fs = require('fs');
const kit = require('../node-kit/kit.js')(require('@grpc/grpc-js'), require('@grpc/proto-loader'));

const { log } = kit;
const [out] = kit.start('node-log-sink <file>');
const disco = kit.disco();

const held = new Map(); // target -> {seq, eps: Map id -> "host:port"}

const key = (t) => `${t.namespace ? t.namespace + '/' : ''}${t.name}${t.port ? ':' + t.port : ''}`;
const hostPort = (e) => (e.addresses || []).map((a) => (a.includes(':') ? `[${a}]:${e.port}` : `${a}:${e.port}`)).join(',');

function update(call, cb) {
  const u = call.request;
  const t = key(u.target);
  const seq = Number(u.seq);
  const base = Number(u.baseSeq);
  let cur = held.get(t);
  if (u.full) {
    // The whole state: replace what is held.
    cur = { seq: 0, eps: new Map() };
    for (const e of u.endpoints) cur.eps.set(e.id, hostPort(e));
  } else {
    // A delta: from nothing (base 0), or from the seq held.
    if (base === 0) cur = { seq: 0, eps: new Map() };
    else if (!cur || cur.seq !== base) {
      cb(null, { error: { kind: 'ERROR_KIND_UNAVAILABLE', message: `node-log-sink: ${t}: delta from ${base}, held ${cur ? cur.seq : 'nothing'}`, resync: true } });
      return;
    }
    for (const id of u.removed) cur.eps.delete(id);
    for (const e of [...u.added, ...u.changed]) cur.eps.set(e.id, hostPort(e));
  }
  cur.seq = seq;
  held.set(t, cur);
  const line = { target: t, seq, endpoints: [...cur.eps.values()].sort(), stale: u.stale ? u.stale.reason : '' };
  fs.appendFileSync(out, JSON.stringify(line) + '\n');
  log('info', 'update', { target: t, seq, endpoints: cur.eps.size });
  cb(null, {});
}

kit.serve(disco.SinkService.service, { update });
