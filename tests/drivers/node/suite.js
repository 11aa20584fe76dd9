// node-postgres (pg) through pgweir: pg.Pool, transactions, named queries
// ({name, text, values}: prepared once per connection, then only bound), errors,
// COPY with pg-copy-streams, and session SETs.
//
// Run: DATABASE_URL=postgres://... NODE_PATH=.../node_modules node suite.js
// (exit 0 = all passed). PGWEIR_POOL_MODE=transaction also asserts that work
// really moved between server connections.
'use strict';

const { Client, Pool } = require('pg');
const { from: copyFrom, to: copyTo } = require('pg-copy-streams');
const { pipeline } = require('node:stream/promises');
const { Readable } = require('node:stream');

const URL = process.env.DATABASE_URL;
const SHARED = process.env.PGWEIR_POOL_MODE === 'transaction';

function check(cond, what) {
  if (!cond) throw new Error(`assertion failed: ${what}`);
}

async function expectError(code, promise) {
  try {
    await promise;
  } catch (e) {
    check(e.code === code, `expected SQLSTATE ${code}, got ${e.code}: ${e.message}`);
    return;
  }
  throw new Error(`expected an error with SQLSTATE ${code}`);
}

// An error event with no listener would crash the process before the report.
const onError = (e) => console.log(`connection error: ${e.code ? `[${e.code}] ` : ''}${e.message}`);

function newClient(options) {
  const c = new Client({ connectionString: URL, ...options });
  c.on('error', onError);
  return c;
}

async function withClient(f) {
  const c = newClient({});
  await c.connect();
  try {
    return await f(c);
  } finally {
    await c.end();
  }
}

const schema = () => withClient(async (c) => {
  await c.query(`DROP SCHEMA IF EXISTS nodepg CASCADE;
    CREATE SCHEMA nodepg;
    CREATE TABLE nodepg.items (id int PRIMARY KEY, owner int NOT NULL, label text);
    CREATE TABLE nodepg.marker (v text);
    INSERT INTO nodepg.marker VALUES ('from nodepg')`);
});

const transactions = () => withClient(async (c) => {
  const insert = (id, label) => c.query({
    name: 'ins', text: 'INSERT INTO nodepg.items VALUES ($1, 0, $2)', values: [id, label],
  });
  await c.query('BEGIN');
  await insert(1, 'kept');
  await c.query('COMMIT');
  await c.query('BEGIN');
  await insert(2, 'rolled back');
  await c.query('ROLLBACK');
  await c.query('BEGIN');
  await insert(3, 'kept too');
  await c.query('COMMIT');
  const { rows } = await c.query('SELECT id FROM nodepg.items ORDER BY id');
  check(JSON.stringify(rows.map((r) => r.id)) === '[1,3]', `committed rows only: ${JSON.stringify(rows)}`);
});

const errorsAndRecovery = () => withClient(async (c) => {
  const div = (n) => c.query({ name: 'div', text: 'SELECT 10 / $1::int AS v', values: [n] });
  for (let i = 1; i < 6; i++) check((await div(i)).rows[0].v === Math.floor(10 / i), 'division');
  await expectError('22012', div(0));
  check((await div(2)).rows[0].v === 5, 'named query after an error');
  await expectError('42P01', c.query('SELECT * FROM nodepg.nope'));
  check((await c.query('SELECT 1 AS one')).rows[0].one === 1, 'connection works after an error');
  // A parse error in a named query: the name must not be taken.
  await expectError('42601', c.query({ name: 'bad', text: 'SELEC 1', values: [] }));
  check((await div(5)).rows[0].v === 2, 'named query after a failed Parse');

  await c.query('BEGIN');
  await c.query("INSERT INTO nodepg.items VALUES (10, 0, 'before the error')");
  await c.query('COMMIT');
  await c.query('BEGIN');
  await c.query("INSERT INTO nodepg.items VALUES (11, 0, 'lost')");
  await expectError('22012', div(0));
  await expectError('25P02', c.query('SELECT 1'));
  await c.query('ROLLBACK');
  const { rows } = await c.query({
    name: 'ids', text: 'SELECT id FROM nodepg.items WHERE id >= $1 ORDER BY id', values: [10],
  });
  check(JSON.stringify(rows.map((r) => r.id)) === '[10]', `failed transaction left nothing: ${JSON.stringify(rows)}`);
});

async function preparedAcrossTransactions() {
  const pool = new Pool({ connectionString: URL, max: 4 });
  pool.on('error', onError);
  const pids = new Map();
  try {
    const worker = async (w) => {
      const seen = new Set();
      for (let i = 0; i < 25; i++) {
        const c = await pool.connect();
        try {
          await c.query('BEGIN');
          const r = await c.query({
            name: 'calc', text: 'SELECT $1::int * 1000 + $2::int AS v, pg_backend_pid() AS pid', values: [w, i],
          });
          check(r.rows[0].v === w * 1000 + i, `worker ${w} got ${r.rows[0].v}`);
          seen.add(r.rows[0].pid);
          await c.query({
            name: 'ins', text: 'INSERT INTO nodepg.items VALUES ($1, $2, $3)', values: [100000 + w * 1000 + i, w, `w${w}`],
          });
          await c.query('SELECT pg_sleep(0.002)');
          await c.query('COMMIT');
        } finally {
          c.release();
        }
        const n = await pool.query({
          name: 'count', text: 'SELECT count(*)::int AS n FROM nodepg.items WHERE owner = $1', values: [w],
        });
        check(n.rows[0].n === i + 1, `worker ${w} sees ${n.rows[0].n} own rows, expected ${i + 1}`);
      }
      pids.set(w, seen);
    };
    await Promise.all([1, 2, 3, 4, 5, 6].map(worker));
  } finally {
    await pool.end();
  }
  const all = new Set([...pids.values()].flatMap((s) => [...s]));
  console.log(`  workers ran on ${all.size} server connections`);
  if (SHARED) {
    check(all.size >= 2, 'transaction mode spreads work over server connections');
    check([...pids.values()].some((s) => s.size >= 2), "a client's statements moved servers");
  }
}

const copy = () => withClient(async (c) => {
  const lines = Array.from({ length: 500 }, (_, i) => `${200000 + i}\t99\tcopied ${i}\n`);
  await pipeline(Readable.from(lines), c.query(copyFrom('COPY nodepg.items (id, owner, label) FROM STDIN')));
  const chunks = [];
  const out = c.query(copyTo('COPY (SELECT id, label FROM nodepg.items WHERE owner = 99 ORDER BY id) TO STDOUT'));
  for await (const chunk of out) chunks.push(chunk);
  const got = Buffer.concat(chunks).toString().split('\n').filter((l) => l);
  check(got.length === 500 && got[7] === '200007\tcopied 7', `copy out: ${got.length} lines, ${got[7]}`);
  try {
    await pipeline(Readable.from(['200000\t99\tduplicate\n']),
      c.query(copyFrom('COPY nodepg.items (id, owner, label) FROM STDIN')));
    throw new Error('duplicate key in COPY accepted');
  } catch (e) {
    check(e.code === '23505', `expected a unique violation, got ${e.code}: ${e.message}`);
  }
  const n = await c.query('SELECT count(*)::int AS n FROM nodepg.items WHERE owner = 99');
  check(n.rows[0].n === 500, 'the failed COPY added nothing');
});

async function sessionSettings() {
  const a = newClient({});
  const b = newClient({ application_name: 'nodepg-b' });
  await a.connect();
  await b.connect();
  try {
    const bZone = (await b.query('SHOW TimeZone')).rows[0].TimeZone;
    await a.query("SET TimeZone = 'Asia/Tokyo'");
    await a.query("SET application_name = 'node-suite'");
    await a.query('SET search_path = nodepg, public');
    await a.query("SET statement_timeout = '7s'");
    const q = {
      name: 'settings',
      text: "SELECT current_setting('TimeZone') AS tz, current_setting('application_name') AS app, "
        + "current_setting('statement_timeout') AS st",
    };
    for (let i = 0; i < 8; i++) {
      await Promise.all([a.query('BEGIN'), b.query('BEGIN')]);
      const [ra, rb, rm] = await Promise.all([a.query(q), b.query(q), a.query('SELECT v FROM marker')]);
      await Promise.all([a.query('COMMIT'), b.query('COMMIT')]);
      const got = JSON.stringify([ra.rows[0], rm.rows[0].v]);
      check(got === JSON.stringify([{ tz: 'Asia/Tokyo', app: 'node-suite', st: '7s' }, 'from nodepg']),
        `client A settings ${got}`);
      check(JSON.stringify(rb.rows[0]) === JSON.stringify({ tz: bZone, app: 'nodepg-b', st: '0' }),
        `client B sees only its own settings ${JSON.stringify(rb.rows[0])}`);
      await new Promise((r) => setTimeout(r, 10));
    }
    await a.query('RESET TimeZone');
    const zone = (await a.query('SHOW TimeZone')).rows[0].TimeZone;
    check(zone === bZone, `RESET gives back the default, got ${zone}`);
  } finally {
    await a.end();
    await b.end();
  }
}

async function main() {
  const started = Date.now();
  const failed = [];
  const steps = { schema, transactions, errorsAndRecovery, preparedAcrossTransactions, copy, sessionSettings };
  for (const [name, step] of Object.entries(steps)) {
    const t = Date.now();
    try {
      await step();
      console.log(`ok ${name} (${((Date.now() - t) / 1000).toFixed(2)} s)`);
    } catch (e) {
      console.log(`FAIL ${name}: ${e.code ? `[${e.code}] ` : ''}${e.message}`);
      failed.push(name);
    }
  }
  if (failed.length) {
    console.log(`node-postgres suite FAILED: ${failed.join(', ')}`);
    process.exit(1);
  }
  console.log(`node-postgres suite passed in ${((Date.now() - started) / 1000).toFixed(2)} s`);
}

main().catch((e) => {
  console.log(`node-postgres suite crashed: ${e.stack}`);
  process.exit(1);
});
