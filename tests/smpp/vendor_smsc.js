#!/usr/bin/env node
// vendor_smsc.js: a vendor SMSC for the gateway's tests, on the third-party npm `smpp`
// package (node-smpp). The gateway binds to it as an ESME; it answers submit_sm and sends
// delivery receipts back, with the faults real vendors have.
//
//   node vendor_smsc.js [--port 0] [--host 127.0.0.1] [--accounts sys:pw[,sys:pw...]]
//     [--msgid hex|dec]        form of message_id in submit_sm_resp (default hex); with dec,
//                              receipts name the id in hex (the reverse mismatch)
//     [--dlr-id same|dec]      with hex ids: the receipt TEXT names the id in decimal
//     [--no-tlv]               receipts carry the id and state only in the text
//     [--dlr-delay-ms 50]      delay before a receipt
//     [--dlr-repeat 0]         fraction of receipts sent twice (a vendor that repeats itself)
//     [--reject-rate 0]        fraction of submit_sm answered ESME_RTHROTTLED (0x58)
//     [--refuse-dest PREFIX]   destinations starting with PREFIX get ESME_RINVDSTADR (0x0B)
//     [--drop-after 0]         destroy each connection after N submits (no resp for the N+1th)
//     [--stats-file PATH]      JSON stats, rewritten every 200 ms and at exit
//     [--exit-after 0]         seconds until it exits on its own
//     [--mo-file PATH]         polled every 100 ms; each new line "system_id source destination text"
//                              is sent once as a mobile-originated deliver_sm (esm_class 0)
//
// Prints "vendor-smsc: listening on HOST:PORT" once ready. Receipts go to a bound receiver
// or transceiver of the same system_id; while none is bound they are kept and sent on the
// next bind. Stats count every submit by (source, destination, text), so a test can count
// duplicates.
'use strict';
const smpp = require('smpp');
const fs = require('fs');

const opt = { port: 0, host: '127.0.0.1', accounts: 'vendor:vpw', msgid: 'hex', 'dlr-id': 'same',
  'no-tlv': false, 'dlr-delay-ms': 50, 'dlr-repeat': 0, 'reject-rate': 0, 'refuse-dest': '',
  'drop-after': 0, 'stats-file': '', 'exit-after': 0, 'mo-file': '' };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const name = argv[i].replace(/^--/, '');
  if (!(name in opt)) { console.error('unknown option ' + argv[i]); process.exit(2); }
  if (typeof opt[name] === 'boolean') { opt[name] = true; continue; }
  const v = argv[++i];
  opt[name] = typeof opt[name] === 'number' ? Number(v) : v;
}
const accounts = new Map(opt.accounts.split(',').map(p => p.split(':')));

const stats = { binds: 0, bind_failures: 0, submits: 0, acked: 0, throttled: 0, refused: 0, dropped: 0,
  dlr_sent: 0, dlr_acked: 0, dlr_pending: 0, connections: 0, duplicates: 0 };
const seen = new Map();           // "src|dst|text" -> count
const receivers = new Map();      // system_id -> Set(session)
const pending = new Map();        // system_id -> [receipt pdu fields]
let nextId = 1000;

function stamp(d) {
  const p = n => String(n).padStart(2, '0');
  return p(d.getUTCFullYear() % 100) + p(d.getUTCMonth() + 1) + p(d.getUTCDate()) + p(d.getUTCHours()) + p(d.getUTCMinutes());
}

// Receipts sent and not yet acknowledged, per session: when the session dies they are sent
// again on another (or the next) receiver, as real SMSCs do. Duplicates are then possible.
const unacked = new Map();        // session -> Set(fields)
let turn = 0;

function sendReceipt(sys, fields) {
  const set = receivers.get(sys);
  const list = set ? [...set] : [];
  if (list.length === 0) { (pending.get(sys) || pending.set(sys, []).get(sys)).push(fields); return; }
  const sess = list[turn++ % list.length];
  stats.dlr_sent++;
  const waiting = unacked.get(sess) || unacked.set(sess, new Set()).get(sess);
  waiting.add(fields);
  sess.deliver_sm(fields, resp => {
    waiting.delete(fields);
    if (resp.command_status === 0) stats.dlr_acked++;
    else setTimeout(() => sendReceipt(sys, fields), 100);
  });
}

function receipt(sys, id, pdu) {
  const n = BigInt('0x' + id);
  const textId = opt['dlr-id'] === 'dec' && opt.msgid === 'hex' ? n.toString(10) : id;
  const now = stamp(new Date());
  const fields = {
    source_addr: pdu.destination_addr, destination_addr: pdu.source_addr, esm_class: 0x04,
    short_message: `id:${textId} sub:001 dlvrd:001 submit date:${now} done date:${now} stat:DELIVRD err:000 text:`,
  };
  if (!opt['no-tlv']) { fields.receipted_message_id = id; fields.message_state = 2; }
  setTimeout(() => {
    sendReceipt(sys, fields);
    if (opt['dlr-repeat'] > 0 && Math.random() < opt['dlr-repeat']) sendReceipt(sys, fields);
  }, opt['dlr-delay-ms']);
}

const server = smpp.createServer({}, session => {
  stats.connections++;
  session.socket.setNoDelay(true);
  let sys = null;
  let submits = 0;
  const bind = kind => pdu => {
    if (accounts.get(pdu.system_id) !== pdu.password) {
      stats.bind_failures++;
      session.send(pdu.response({ command_status: smpp.ESME_RBINDFAIL }));
      return;
    }
    sys = pdu.system_id;
    stats.binds++;
    session.send(pdu.response({ system_id: 'vendor' }));
    if (kind !== 'tx') {
      (receivers.get(sys) || receivers.set(sys, new Set()).get(sys)).add(session);
      const queued = pending.get(sys) || [];
      pending.delete(sys);
      for (const f of queued) sendReceipt(sys, f);
    }
  };
  session.on('bind_transceiver', bind('trx'));
  session.on('bind_transmitter', bind('tx'));
  session.on('bind_receiver', bind('rx'));
  session.on('enquire_link', pdu => session.send(pdu.response()));
  session.on('unbind', pdu => { session.send(pdu.response()); session.close(); });
  session.on('submit_sm', pdu => {
    if (!sys) { session.send(pdu.response({ command_status: smpp.ESME_RINVBNDSTS })); return; }
    submits++;
    if (opt['drop-after'] > 0 && submits > opt['drop-after']) { stats.dropped++; session.socket.destroy(); return; }
    stats.submits++;
    if (opt['reject-rate'] > 0 && Math.random() < opt['reject-rate']) {
      stats.throttled++;
      session.send(pdu.response({ command_status: smpp.ESME_RTHROTTLED }));
      return;
    }
    if (opt['refuse-dest'] && pdu.destination_addr.startsWith(opt['refuse-dest'])) {
      stats.refused++;
      session.send(pdu.response({ command_status: smpp.ESME_RINVDSTADR }));
      return;
    }
    const text = Buffer.isBuffer(pdu.short_message) ? pdu.short_message.toString('latin1')
      : (pdu.short_message && pdu.short_message.message) || '';
    const key = `${pdu.source_addr}|${pdu.destination_addr}|${text}`;
    const count = (seen.get(key) || 0) + 1;
    seen.set(key, count);
    if (count > 1) stats.duplicates++;
    const n = nextId++;
    const id = opt.msgid === 'dec' ? String(n) : n.toString(16).toUpperCase().padStart(8, '0');
    stats.acked++;
    session.send(pdu.response({ message_id: id }));
    if ((pdu.registered_delivery & 0x03) !== 0) receipt(sys, opt.msgid === 'dec' ? n.toString(16) : id, pdu);
  });
  session.on('unknown', pdu => session.send(new smpp.PDU('generic_nack', { sequence_number: pdu.sequence_number, command_status: smpp.ESME_RINVCMDID })));
  const gone = () => {
    if (sys && receivers.get(sys)) receivers.get(sys).delete(session);
    const waiting = unacked.get(session);
    unacked.delete(session);
    if (sys && waiting) for (const f of waiting) { stats.dlr_resent = (stats.dlr_resent || 0) + 1; sendReceipt(sys, f); }
  };
  session.on('close', gone);
  session.on('error', gone);
});

let moLines = 0;
function pollMo() {
  if (!opt['mo-file'] || !fs.existsSync(opt['mo-file'])) return;
  const lines = fs.readFileSync(opt['mo-file'], 'utf8').split('\n').filter(l => l.trim());
  for (; moLines < lines.length; moLines++) {
    const [sys, src, dst, ...text] = lines[moLines].split(' ');
    stats.mo_sent = (stats.mo_sent || 0) + 1;
    sendReceipt(sys, { source_addr: src, destination_addr: dst, esm_class: 0, short_message: text.join(' ') });
  }
}
setInterval(pollMo, 100).unref();

function writeStats() {
  stats.dlr_pending = [...pending.values()].reduce((a, l) => a + l.length, 0);
  stats.distinct = seen.size;
  if (opt['stats-file']) fs.writeFileSync(opt['stats-file'] + '.tmp', JSON.stringify(stats)), fs.renameSync(opt['stats-file'] + '.tmp', opt['stats-file']);
}
setInterval(writeStats, 200).unref();
function finish() { writeStats(); console.log('vendor-smsc: ' + JSON.stringify(stats)); process.exit(0); }
process.on('SIGTERM', finish);
process.on('SIGINT', finish);
if (opt['exit-after'] > 0) setTimeout(finish, opt['exit-after'] * 1000);
server.listen(opt.port, opt.host, () => console.log(`vendor-smsc: listening on ${opt.host}:${server.address().port}`));
