#!/usr/bin/env node
// A disco source plugin written in Node.js: no Go, only the protocol
// (core/plugin/proto/disco/plugin/v2/plugin.proto) over hashicorp/go-plugin's
// gRPC handshake with AutoMTLS. A host runs it like any plugin:
//
//   src, err := plugin.NewSource("./node-json-source", plugin.WithArgs("/etc/disco/json"))
//
// Target <name>'s endpoints are the file <dir>/<name>.json, a list of
// "host:port" strings, read every 10 ms; no file is no endpoints. A file
// <dir>/broken makes every target fail (unavailable) until it goes.
'use strict';

const fs = require('fs');
const path = require('path');
const kit = require('../node-kit/kit.js')(require('@grpc/grpc-js'), require('@grpc/proto-loader'));

const { log } = kit;
const [dir] = kit.start('node-json-source <directory>');
const disco = kit.disco();

// endpointsOf reads a target's file: a Map of id to endpoint, or null if
// the file cannot be used now.
function endpointsOf(name) {
  let data;
  try {
    data = fs.readFileSync(path.join(dir, name + '.json'), 'utf8');
  } catch (e) {
    if (e.code === 'ENOENT') return { data: '', eps: new Map() };
    return null;
  }
  let list;
  try {
    list = JSON.parse(data);
  } catch (e) {
    return null; // being written: the next read sees it whole
  }
  const eps = new Map();
  for (const hp of list) {
    const i = hp.lastIndexOf(':');
    let host = hp.slice(0, i);
    if (host.startsWith('[')) host = host.slice(1, -1);
    eps.set(hp, { id: hp, addresses: [host], port: Number(hp.slice(i + 1)) });
  }
  return { data, eps };
}

function watch(call) {
  const name = call.request.target.name;
  log('info', 'watch started', { target: name });
  let last = null; // what the host holds: Map id -> endpoint
  let lastData = null;
  let failing = false;
  const tick = () => {
    if (fs.existsSync(path.join(dir, 'broken'))) {
      // Errors are data: a kind, a message (and a retry mark, a delay, a
      // resync flag when they apply).
      call.write({
        kind: 'EVENT_KIND_FAIL',
        error: { kind: 'ERROR_KIND_UNAVAILABLE', message: `node-json-source: ${dir}: backend broken` },
        count: last ? last.size : 0,
      });
      failing = true;
      return;
    }
    const got = endpointsOf(name);
    if (!got || (!failing && got.data === lastData && last)) return;
    const ev = { kind: 'EVENT_KIND_PUBLISH', count: got.eps.size, upserts: [], removed: [] };
    if (!last) {
      ev.full = true;
      ev.upserts = [...got.eps.values()];
    } else {
      ev.upserts = [...got.eps.values()].filter((e) => !last.has(e.id));
      ev.removed = [...last.keys()].filter((id) => !got.eps.has(id));
    }
    call.write(ev);
    last = got.eps;
    lastData = got.data;
    failing = false;
  };
  const timer = setInterval(tick, 10);
  tick();
  call.on('cancelled', () => {
    clearInterval(timer);
    fs.writeFileSync(path.join(dir, name + '.cancelled'), '');
    log('debug', 'watch cancelled', { target: name });
  });
}

kit.serve(disco.SourceService.service, { watch });
