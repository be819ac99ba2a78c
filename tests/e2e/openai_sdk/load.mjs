// Opens N concurrent server-sent-event streams against duet-router's
// /v1/completions (node's own http client: one TCP connection per stream)
// and checks every one ends with [DONE] and the requested token count.
// Usage: node load.mjs BASE_URL MODEL [N=1000] [MAX_TOKENS=32]
// Prints one JSON line: streams, ok, errors, seconds, tokens.
import http from 'node:http';

const [base, model, nArg, maxArg] = process.argv.slice(2);
const n = Number(nArg ?? 1000);
const maxTokens = Number(maxArg ?? 32);
const url = new URL(base + '/completions');
const agent = new http.Agent({ keepAlive: false, maxSockets: Infinity });
const prompts = ['Hello', 'The capital of France is', 'Once upon a time', '1 2 3'];

function stream(i) {
  return new Promise((resolve) => {
    const body = JSON.stringify({
      model, prompt: prompts[i % prompts.length], max_tokens: maxTokens,
      temperature: 0, ignore_eos: true, stream: true,
      stream_options: { include_usage: true } });
    const req = http.request(url, {
      method: 'POST', agent, timeout: 300000,
      headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) },
    }, (res) => {
      let buf = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { buf += d; });
      res.on('end', () => {
        if (res.statusCode !== 200) return resolve({ ok: false, why: `HTTP ${res.statusCode} ${buf}` });
        const events = buf.split('\n\n').filter((e) => e).map((e) => e.slice(6));
        if (events.at(-1) !== '[DONE]') return resolve({ ok: false, why: 'no [DONE]' });
        const usage = JSON.parse(events.at(-2)).usage;
        if (!usage || usage.completion_tokens !== maxTokens) {
          return resolve({ ok: false, why: `usage ${JSON.stringify(usage)}: ${events.at(-2).slice(0, 200)}` });
        }
        resolve({ ok: true, tokens: usage.completion_tokens });
      });
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (e) => resolve({ ok: false, why: String(e) }));
    req.end(body);
  });
}

const start = Date.now();
const results = await Promise.all(Array.from({ length: n }, (_, i) => stream(i)));
const errors = results.filter((r) => !r.ok);
const why = {};
for (const e of errors) why[e.why.slice(0, 120)] = (why[e.why.slice(0, 120)] ?? 0) + 1;
console.log(JSON.stringify({
  streams: n, ok: n - errors.length, errors: errors.length,
  seconds: (Date.now() - start) / 1000,
  tokens: results.reduce((s, r) => s + (r.tokens ?? 0), 0), error_kinds: why }));
process.exitCode = errors.length ? 1 : 0;
