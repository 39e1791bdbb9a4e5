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

const crypto = require('crypto');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { execFileSync } = require('child_process');
const grpc = require('@grpc/grpc-js');
const loader = require('@grpc/proto-loader');

// go-plugin's handshake: the cookie the disco host sets (plugin.Handshake).
const COOKIE_KEY = 'DISCO_PLUGIN';
const COOKIE_VALUE = 'disco-plugin-v1-6f1d2c8e';
const CORE_PROTOCOL = 1; // go-plugin's own protocol version
const APP_PROTOCOL = 2; // plugin.ProtocolVersion

// log writes an hclog JSON line on stderr: the host logs it through its
// own logger at the same level.
function log(level, message, fields) {
  const ts = new Date().toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');
  process.stderr.write(JSON.stringify({ '@level': level, '@message': message, '@timestamp': ts, ...fields }) + '\n');
}

if (process.env[COOKIE_KEY] !== COOKIE_VALUE) {
  console.error('This is a disco plugin: a disco host runs it (plugin.NewSource), not you.');
  process.exit(1);
}
const dir = process.argv[2];
if (!dir) {
  console.error('usage: node-json-source <directory>');
  process.exit(2);
}

const load = (file, dirs) =>
  grpc.loadPackageDefinition(loader.loadSync(file, { includeDirs: dirs, enums: String, longs: String, defaults: true }));
const protoDir = process.env.DISCO_PLUGIN_PROTO || path.join(__dirname, '..', '..', '..', 'core', 'plugin', 'proto');
const disco = load('disco/plugin/v2/plugin.proto', [protoDir]).disco.plugin.v2;
const health = load('health.proto', [__dirname]).grpc.health.v1;
const controller = load('controller.proto', [__dirname]).plugin;

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

// AutoMTLS: the host's certificate comes in PLUGIN_CLIENT_CERT; the plugin
// answers with a certificate of its own (for "localhost") in the handshake.
function credentials() {
  const clientCert = process.env.PLUGIN_CLIENT_CERT;
  if (!clientCert) return { creds: grpc.ServerCredentials.createInsecure(), cert: '' };
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'disco-node-plugin-'));
  const key = path.join(tmp, 'key.pem');
  const crt = path.join(tmp, 'cert.pem');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1',
    '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost', '-keyout', key, '-out', crt], { stdio: 'ignore' });
  const keyPem = fs.readFileSync(key);
  const crtPem = fs.readFileSync(crt);
  fs.rmSync(tmp, { recursive: true, force: true });
  const der = new crypto.X509Certificate(crtPem).raw.toString('base64').replace(/=+$/, '');
  return { creds: grpc.ServerCredentials.createSsl(Buffer.from(clientCert), [{ private_key: keyPem, cert_chain: crtPem }], true), cert: der };
}

// No 4 MiB cap on what the host sends (go-plugin raises it on its side too).
const server = new grpc.Server({ 'grpc.max_receive_message_length': -1, 'grpc.max_send_message_length': -1 });
server.addService(disco.SourceService.service, { watch });
server.addService(health.Health.service, { check: (call, cb) => cb(null, { status: 'SERVING' }) });
server.addService(controller.GRPCController.service, {
  shutdown: (call, cb) => {
    cb(null, {});
    setTimeout(() => process.exit(0), 10);
  },
});
const { creds, cert } = credentials();
server.bindAsync('127.0.0.1:0', creds, (err, port) => {
  if (err) {
    console.error(err);
    process.exit(1);
  }
  process.stdout.write(`${CORE_PROTOCOL}|${APP_PROTOCOL}|tcp|127.0.0.1:${port}|grpc|${cert}\n`);
});
// The host is gone (killed): stdin closes or the parent changes.
const parent = process.ppid;
setInterval(() => {
  if (process.ppid !== parent) process.exit(2);
}, 200).unref();
