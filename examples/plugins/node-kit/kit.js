// What every disco plugin in Node.js needs, whatever it serves: hashicorp/
// go-plugin's handshake (the cookie, the protocol versions, AutoMTLS with a
// certificate of its own made by openssl), hclog JSON logs on stderr (the
// host logs them through its own logger), the health and shutdown services
// go-plugin's host uses, and the end of the plugin when its host goes.
// node-json-source (a source) and node-log-sink (a sink) use it:
//
//   const kit = require('../node-kit/kit.js')(require('@grpc/grpc-js'), require('@grpc/proto-loader'));
//
// (the plugin passes its own npm packages, installed beside it).
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { execFileSync } = require('child_process');

module.exports = (grpc, loader) => {

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

// start checks it was started by a disco host and returns the plugin's
// arguments; usage is what to say otherwise.
function start(usage) {
  if (process.env[COOKIE_KEY] !== COOKIE_VALUE) {
    console.error('This is a disco plugin: a disco host runs it (plugin.NewSource or plugin.NewSink), not you.');
    process.exit(1);
  }
  const args = process.argv.slice(2);
  if (args.length === 0) {
    console.error(`usage: ${usage}`);
    process.exit(2);
  }
  return args;
}

const load = (file, dirs) =>
  grpc.loadPackageDefinition(loader.loadSync(file, { includeDirs: dirs, enums: String, longs: String, defaults: true }));

// disco is the plugin protocol's package (disco.plugin.v2).
function disco() {
  const protoDir = process.env.DISCO_PLUGIN_PROTO || path.join(__dirname, '..', '..', '..', 'core', 'plugin', 'proto');
  return load('disco/plugin/v2/plugin.proto', [protoDir]).disco.plugin.v2;
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

// serve serves the plugin's service (service: its definition, impl: its
// handlers) with go-plugin's health and shutdown, and writes the handshake
// line the host reads.
function serve(service, impl) {
  const health = load('health.proto', [__dirname]).grpc.health.v1;
  const controller = load('controller.proto', [__dirname]).plugin;
  // No 4 MiB cap on what the host sends (go-plugin raises it on its side too).
  const server = new grpc.Server({ 'grpc.max_receive_message_length': -1, 'grpc.max_send_message_length': -1 });
  server.addService(service, impl);
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
  // The host is gone (killed): the parent changes.
  const parent = process.ppid;
  setInterval(() => {
    if (process.ppid !== parent) process.exit(2);
  }, 200).unref();
}

return { log, start, disco, serve };
};
