// Drives duet-router's OpenAI-compatible API with the official `openai`
// SDK and compares the texts with what tests/e2e/openai_http_test.cc got
// over gRPC for the same requests (written to the JSON file named by
// argv[3]). Usage: node check.mjs BASE_URL WANT_JSON. Exit code 0 and the
// line "openai sdk: all checks passed" when every check holds.
import OpenAI from 'openai';
import { readFileSync } from 'node:fs';
import assert from 'node:assert/strict';

const [baseURL, wantPath] = process.argv.slice(2);
const want = JSON.parse(readFileSync(wantPath, 'utf8'));
const client = new OpenAI({ baseURL, apiKey: 'unused', maxRetries: 0, timeout: 30000 });
const model = want.model;
const greedy = { temperature: 0, ignore_eos: true };

async function check(name, fn) {
  try {
    await fn();
    console.log(`ok   ${name}`);
  } catch (e) {
    console.log(`FAIL ${name}: ${e.stack || e}`);
    process.exitCode = 1;
  }
}

await check('models.list', async () => {
  const ids = [];
  for await (const m of client.models.list()) ids.push(m.id);
  assert.deepEqual(ids, [model]);
});

await check('completions', async () => {
  const r = await client.completions.create({ model, prompt: want.prompt, max_tokens: 10, ...greedy });
  assert.equal(r.choices[0].text, want.completion);
  assert.equal(r.choices[0].finish_reason, 'length');
  assert.equal(r.usage.prompt_tokens, want.prompt_tokens);
  assert.equal(r.usage.completion_tokens, 10);
});

await check('completions n=2 seeded', async () => {
  const r = await client.completions.create({
    model, prompt: want.prompt, max_tokens: 8, temperature: 0.9, seed: 5, n: 2, ignore_eos: true });
  assert.deepEqual(r.choices.map((c) => c.text), want.seeded);
});

await check('completions stream n=2 seeded', async () => {
  const stream = await client.completions.create({
    model, prompt: want.prompt, max_tokens: 8, temperature: 0.9, seed: 5, n: 2, ignore_eos: true,
    stream: true });
  const texts = ['', ''];
  for await (const chunk of stream) {
    for (const c of chunk.choices) texts[c.index] += c.text;
  }
  assert.deepEqual(texts, want.seeded);
});

await check('completions stop', async () => {
  const r = await client.completions.create({
    model, prompt: want.prompt, max_tokens: 10, stop: [want.stop], ...greedy });
  assert.equal(r.choices[0].text, want.stopped);
  assert.equal(r.choices[0].finish_reason, 'stop');
});

await check('chat', async () => {
  const r = await client.chat.completions.create({
    model, messages: want.messages, max_tokens: 8, ...greedy });
  assert.equal(r.choices[0].message.role, 'assistant');
  assert.equal(r.choices[0].message.content, want.chat);
  assert.equal(r.usage.prompt_tokens, want.chat_prompt_tokens);
});

await check('chat stream include_usage', async () => {
  const stream = await client.chat.completions.create({
    model, messages: want.messages, max_completion_tokens: 8, ...greedy,
    stream: true, stream_options: { include_usage: true } });
  let text = '';
  let usage = null;
  let finish = null;
  for await (const chunk of stream) {
    for (const c of chunk.choices) {
      text += c.delta.content ?? '';
      if (c.finish_reason) finish = c.finish_reason;
    }
    if (chunk.usage) usage = chunk.usage;
  }
  assert.equal(text, want.chat);
  assert.equal(finish, 'length');
  assert.equal(usage.prompt_tokens, want.chat_prompt_tokens);
  assert.equal(usage.completion_tokens, 8);
});

// Logprobs as the SDK types them: each token's text, logprob and its top
// alternatives' texts, equal to the gRPC path's TokenChunk.logprobs.
await check('chat logprobs', async () => {
  const r = await client.chat.completions.create({
    model, messages: want.messages, max_tokens: 8, ...greedy,
    logprobs: true, top_logprobs: 2 });
  const got = r.choices[0].logprobs.content.map(
    (e) => [e.token, e.logprob, e.top_logprobs.map((t) => t.token)]);
  assert.deepEqual(got, want.chat_logprobs);
});

await check('completions logprobs stream', async () => {
  const stream = await client.completions.create({
    model, prompt: want.prompt, max_tokens: 10, ...greedy, logprobs: 2, stream: true });
  const tokens = [];
  const logprobs = [];
  for await (const chunk of stream) {
    for (const c of chunk.choices) {
      if (!c.logprobs) continue;
      tokens.push(...c.logprobs.tokens);
      logprobs.push(...c.logprobs.token_logprobs);
    }
  }
  assert.deepEqual(tokens, want.completion_logprobs.map((e) => e[0]));
  assert.deepEqual(logprobs, want.completion_logprobs.map((e) => e[1]));
});

await check('unknown model is NotFoundError', async () => {
  await assert.rejects(
    client.completions.create({ model: 'no-such-model', prompt: 'hi', max_tokens: 2 }),
    (e) => e instanceof OpenAI.NotFoundError && e.code === 'model_not_found');
});

await check('bad parameter is BadRequestError', async () => {
  await assert.rejects(
    client.completions.create({ model, prompt: 'hi', max_tokens: 2, n: 0 }),
    (e) => e instanceof OpenAI.BadRequestError && e.param === 'n');
});

if (!process.exitCode) console.log('openai sdk: all checks passed');
