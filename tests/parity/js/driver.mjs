// The official JavaScript SDKs (`openai`, `@anthropic-ai/sdk`) used as a user would, against a gateway.
// Usage: AIGRID_URL=http://127.0.0.1:PORT [AIGRID_KEY=...] node driver.mjs CASE...
// Prints one JSON object: each case's name -> what the SDK handed back (values the test asserts on), or
// {"threw": ...} with the SDK's error as it reports it. A case that throws does not stop the others.
// Driven by tests/parity/test_js_sdk_surface.py.
// Older SDK majors run it too (tests/parity/test_js_sdk_surface.py's AIGRID_JS_SDKS, scripts/sdk_matrix.py): what a
// version lacks (a module, a resource, a helper) makes the cases that use it answer {"unsupported": WHAT}, which the
// test skips naming WHAT, instead of failing the whole run.
import OpenAI, { toFile } from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import { VERSION as OPENAI_VERSION } from 'openai/version';
import { VERSION as ANTHROPIC_VERSION } from '@anthropic-ai/sdk/version';

const { ResponsesWS } = await import('openai/resources/responses/ws').catch(() => ({}));
const { betaTool } = await import('@anthropic-ai/sdk/helpers/beta/json-schema').catch(() => ({}));

/** Thrown by need(): this SDK version has no `what`; the case answers {"unsupported": what}. */
class Unsupported extends Error {}

/** Each of `features` ({name: value}) present in this SDK version, else Unsupported naming the first missing. */
function need(features) {
  for (const [what, value] of Object.entries(features)) {
    if (value === undefined || value === null) throw new Unsupported(`${what} (not in this version)`);
  }
}

const BASE = process.env.AIGRID_URL;
const KEY = process.env.AIGRID_KEY || 'unused';
const MODEL = 'smollm2-135m';
const ASK = [{ role: 'user', content: 'Name a colour.' }];
const HI = [{ role: 'user', content: 'Hi' }];
const oai = new OpenAI({ baseURL: `${BASE}/v1`, apiKey: KEY, maxRetries: 0, timeout: 20_000 });
const claude = new Anthropic({ baseURL: BASE, apiKey: KEY, maxRetries: 0, timeout: 20_000 });

// The chat helpers (stream, runTools) are oai.chat.completions' since openai 5; openai 4 has them under beta
const chatHelpers = oai.chat.completions.stream ? oai.chat.completions : oai.beta.chat.completions;
// openai 4 deletes a file with files.del
const deleteFile = (id) => (oai.files.delete ? oai.files.delete(id) : oai.files.del(id));
// A response's text: the SDK's output_text, which openai 6 and later add to every Response they hand back; openai 4
// and 5 add it to some only (create()'s answer, retrieve()'s from 5; not withResponse()'s data or a stream helper's
// final response), so there it is the text of its output's message items, as a user of those versions reads it
const OLD_OUTPUT_TEXT = Number(OPENAI_VERSION.split('.')[0]) <= 5;
const outputText = (r) => (OLD_OUTPUT_TEXT && r.output_text === undefined
  ? r.output.filter((o) => o.type === 'message').flatMap((o) => o.content)
    .filter((p) => p.type === 'output_text').map((p) => p.text).join('')
  : r.output_text);
// an error's response header: a Headers object in openai 5 and later, a plain object in openai 4
const header = (e, name) => (typeof e.headers?.get === 'function' ? e.headers.get(name) : e.headers?.[name]);

const WEATHER_FN = {
  type: 'function',
  function: {
    name: 'get_weather', description: 'Weather in a city',
    parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
  },
};
const WEATHER_TOOL = {
  name: 'get_weather', description: 'Weather in a city',
  input_schema: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
};
const OPENAI_ERRORS = ['BadRequestError', 'AuthenticationError', 'PermissionDeniedError', 'NotFoundError',
  'ConflictError', 'UnprocessableEntityError', 'RateLimitError', 'InternalServerError'];
// subclasses first: an OverloadedError (529) is an InternalServerError too
const ANTHROPIC_ERRORS = ['OverloadedError', 'ServiceUnavailableError', ...OPENAI_ERRORS];

/** The SDK's error as a user reads it: which of the SDK's own classes it is, and its fields. */
function described(e) {
  if (e instanceof OpenAI.APIError) {
    return {
      sdk: 'openai', class: OPENAI_ERRORS.find((n) => OpenAI[n] && e instanceof OpenAI[n]) ?? 'APIError',
      status: e.status ?? null, requestID: e.requestID ?? e.request_id ?? null, type: e.type ?? null,  // 4: request_id
      code: e.code ?? null,
      param: e.param ?? null, message: e.message, retryAfter: header(e, 'retry-after') ?? null,
      shouldRetry: header(e, 'x-should-retry') ?? null, error: e.error ?? null,
    };
  }
  if (e instanceof Anthropic.APIError) {
    return {
      sdk: 'anthropic', class: ANTHROPIC_ERRORS.find((n) => Anthropic[n] && e instanceof Anthropic[n]) ?? 'APIError',
      status: e.status ?? null, requestID: e.requestID ?? null, type: e.type ?? null, errorCode: e.errorCode ?? null,
      apiMessage: e.apiMessage ?? null, retryAfter: header(e, 'retry-after') ?? null,
      shouldRetry: header(e, 'x-should-retry') ?? null, error: e.error ?? null,
    };
  }
  return { sdk: null, class: e?.constructor?.name ?? typeof e, message: String(e?.message ?? e), stack: e?.stack };
}

/** `call` must throw: the error as described(), else a note that it did not. */
async function refused(call) {
  try {
    const got = await call();
    return { notRefused: JSON.parse(JSON.stringify(got ?? null)) };
  } catch (e) {
    return described(e);
  }
}

async function collect(stream) {
  const out = [];
  for await (const ev of stream) out.push(ev);
  return out;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function until(get, done, what) {
  for (let i = 0; i < 1500; i++) {  // 30 s at most
    const got = await get();
    if (done(got)) return got;
    await sleep(20);
  }
  throw new Error(`${what}: never done`);
}

const chatText = (choice) => choice.message?.content ?? null;

const cases = {
  // --- OpenAI: chat completions --------------------------------------------------------------------------
  async chat() {
    const { data, request_id, response } = await oai.chat.completions
      .create({ model: MODEL, messages: ASK, max_completion_tokens: 16 }).withResponse();
    return {
      id: data.id, object: data.object, model: data.model, created: data.created, requestID: request_id,
      site: response.headers.get('x-aigrid-site'),
      choices: data.choices.map((c) => ({ index: c.index, role: c.message.role, content: chatText(c),
        finish: c.finish_reason })),
      usage: data.usage,
    };
  },
  async chat_stream() {
    const stream = await oai.chat.completions.create({ model: MODEL, messages: ASK, stream: true,
      stream_options: { include_usage: true } });
    const chunks = await collect(stream);
    return {
      objects: [...new Set(chunks.map((c) => c.object))], ids: [...new Set(chunks.map((c) => c.id))],
      text: chunks.flatMap((c) => c.choices.map((ch) => ch.delta?.content ?? '')).join(''),
      finishes: chunks.flatMap((c) => c.choices.map((ch) => ch.finish_reason)).filter(Boolean),
      usage: chunks.filter((c) => c.usage).map((c) => c.usage),
      usageLast: chunks.at(-1).choices.length === 0 && !!chunks.at(-1).usage,
    };
  },
  async chat_stream_helper() {
    const texts = [];
    const runner = chatHelpers.stream({ model: MODEL, messages: ASK,
      stream_options: { include_usage: true } });
    runner.on('content', (delta) => texts.push(delta));
    const done = await runner.finalChatCompletion();
    return { texts, content: chatText(done.choices[0]), finish: done.choices[0].finish_reason, usage: done.usage,
      id: done.id, object: done.object };
  },
  async chat_n() {
    const whole = await oai.chat.completions.create({ model: MODEL, messages: ASK, n: 2 });
    const runner = chatHelpers.stream({ model: MODEL, messages: ASK, n: 2,
      stream_options: { include_usage: true } });
    const streamed = await runner.finalChatCompletion();
    const shape = (d) => ({ choices: d.choices.map((c) => [c.index, chatText(c), c.finish_reason]), usage: d.usage });
    return { whole: shape(whole), streamed: shape(streamed) };
  },
  async chat_logprobs() {
    const tokens = (c) => c.choices.map((ch) => ch.logprobs?.content?.map((t) => [t.token, t.logprob,
      t.top_logprobs.map((x) => x.token)]) ?? null);
    const params = { model: MODEL, messages: ASK, logprobs: true, top_logprobs: 1 };
    const whole = await oai.chat.completions.create(params);
    const streamed = await chatHelpers.stream(params).finalChatCompletion();
    const two = await chatHelpers.stream({ ...params, n: 2 }).finalChatCompletion();
    return { whole: tokens(whole), bytes: whole.choices[0].logprobs?.content?.map((t) => t.bytes) ?? null,
      streamed: tokens(streamed), streamedN2: tokens(two) };
  },
  // --- OpenAI: legacy completions, embeddings, models -------------------------------------------------------
  async completions() {
    const whole = await oai.completions.create({ model: MODEL, prompt: 'Roses are', max_tokens: 8, logprobs: 1 });
    const chunks = await collect(await oai.completions.create({ model: MODEL, prompt: 'Roses are', max_tokens: 8,
      stream: true, stream_options: { include_usage: true } }));
    return {
      id: whole.id, object: whole.object, text: whole.choices[0].text, finish: whole.choices[0].finish_reason,
      tokens: whole.choices[0].logprobs?.tokens ?? null, usage: whole.usage,
      streamed: chunks.flatMap((c) => c.choices.map((ch) => ch.text)).join(''),
      streamedObjects: [...new Set(chunks.map((c) => c.object))], streamedUsage: chunks.at(-1).usage ?? null,
    };
  },
  async embeddings() {
    const floats = await oai.embeddings.create({ model: 'fixed-embedder', input: ['a', 'b'], encoding_format: 'float' });
    const dflt = await oai.embeddings.create({ model: 'fixed-embedder', input: ['a', 'b'] }); // base64, decoded
    return {
      object: floats.object, model: floats.model, usage: floats.usage,
      floats: floats.data.map((d) => [d.object, d.index, d.embedding]),
      decoded: dflt.data.map((d) => [d.index, Array.from(d.embedding)]),
    };
  },
  async models() {
    const ids = [];
    for await (const m of oai.models.list()) ids.push(m.id);
    const one = await oai.models.retrieve(MODEL);
    return { ids, one: { id: one.id, object: one.object, owned_by: one.owned_by, created: one.created } };
  },
  async openai_errors() {
    return {
      unknownModel: await refused(() => oai.chat.completions.create({ model: 'nope', messages: ASK })),
      badField: await refused(() => oai.chat.completions.create({ model: MODEL, messages: ASK, temperature: 3 })),
      badRole: await refused(() => oai.chat.completions.create({ model: MODEL,
        messages: [{ role: 'x', content: 'y' }] })),
      unknownEmbedder: await refused(() => oai.embeddings.create({ model: 'nope', input: 'x' })),
      retrieveUnknown: await refused(() => oai.models.retrieve('nope')),
      notServed: await refused(() => oai.images.generate({ prompt: 'x' })),
      streamedUnknownModel: await refused(async () => collect(await oai.chat.completions.create({
        model: 'nope', messages: ASK, stream: true }))),
      responsesUnknown: await refused(() => oai.responses.retrieve('resp_nope')),
      responsesBadField: await refused(() => oai.responses.create({ model: MODEL, input: 'x',
        max_output_tokens: -1 })),
    };
  },
  // --- OpenAI: Responses ------------------------------------------------------------------------------------
  async responses() {
    const { data, request_id } = await oai.responses.create({ model: MODEL, input: 'Name a colour.',
      instructions: 'Be brief.', max_output_tokens: 16, metadata: { run: '1' } }).withResponse();
    const again = await oai.responses.retrieve(data.id);
    const next = await oai.responses.create({ model: MODEL, input: 'And another?', previous_response_id: data.id });
    return {
      id: data.id, object: data.object, status: data.status, model: data.model, outputText: outputText(data),
      output: data.output.map((o) => [o.type, o.role, o.content?.map((p) => p.type)]), usage: data.usage,
      metadata: data.metadata, requestID: request_id, retrieved: [again.id, again.status, outputText(again)],
      next: [next.status, next.previous_response_id, outputText(next)],
    };
  },
  async responses_stream() {
    const events = await collect(await oai.responses.create({ model: MODEL, input: 'Name a colour.', stream: true }));
    const helper = oai.responses.stream({ model: MODEL, input: 'Name a colour.' });
    const deltas = [];
    helper.on('response.output_text.delta', (ev) => deltas.push(ev.delta));
    const final = await helper.finalResponse();
    return {
      types: events.map((e) => e.type), sequence: events.map((e) => e.sequence_number),
      text: events.filter((e) => e.type === 'response.output_text.delta').map((e) => e.delta).join(''),
      completed: events.at(-1).response ? [events.at(-1).response.status, outputText(events.at(-1).response) ?? null,
        events.at(-1).response.usage?.total_tokens ?? null] : null,
      helper: { deltas, status: final.status, outputText: outputText(final), id: final.id },
    };
  },
  async responses_background() {
    const queued = await oai.responses.create({ model: MODEL, input: 'Name a colour.', background: true });
    const done = await until(() => oai.responses.retrieve(queued.id),
      (r) => !['queued', 'in_progress'].includes(r.status), 'background response');
    const events = await collect(await oai.responses.create({ model: MODEL, input: 'Name a colour.',
      background: true, stream: true }));
    const id = events[0].response.id;
    const resumed = await collect(await oai.responses.retrieve(id, { stream: true, starting_after: 3 }));
    const helper = oai.responses.stream({ response_id: id });
    const final = await helper.finalResponse();
    return {
      queued: [queued.object, queued.status, queued.background], done: [done.id === queued.id, done.status,
        outputText(done)],
      streamed: events.map((e) => [e.sequence_number, e.type]), resumed: resumed.map((e) => [e.sequence_number, e.type]),
      helper: [final.id === id, final.status, outputText(final)],
    };
  },
  async responses_logprobs() {
    const params = { model: MODEL, input: 'Name a colour.', include: ['message.output_text.logprobs'], top_logprobs: 1 };
    const tokens = (r) => r.output[0].content[0].logprobs?.map((t) => [t.token, t.logprob]) ?? null;
    const whole = await oai.responses.create(params);
    const deltas = [];
    const stream = oai.responses.stream(params);
    stream.on('response.output_text.delta', (e) => deltas.push(e.logprobs.map((t) => t.token)));
    return { whole: tokens(whole), streamed: tokens(await stream.finalResponse()), deltas };
  },
  async responses_input_items() {
    const r = await oai.responses.create({ model: MODEL, input: [
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: [{ type: 'input_text', text: 'Name a colour.' }] },
    ] });
    const items = [];
    for await (const item of oai.responses.inputItems.list(r.id)) items.push(item);
    return { status: r.status, items: items.map((i) => [i.type, i.role, i.content?.map((p) => [p.type, p.text])]) };
  },
  // WebSocket mode (the SDK's ResponsesWS, over the `ws` package): two responses on one socket, the second
  // continuing the first with previous_response_id
  async responses_socket() {
    need({ 'openai/resources/responses/ws (ResponsesWS)': ResponsesWS });
    const ws = new ResponsesWS(oai);
    const seen = [];
    const finals = [];
    const events = ws.stream();
    ws.send({ type: 'response.create', model: MODEL, input: 'My name is Ada.' });
    for await (const ev of events) {
      if (ev.type === 'connecting' || ev.type === 'open') continue;
      if (ev.type !== 'message') {
        seen.push([ev.type, String(ev.error?.message ?? '')]);
        break;
      }
      const m = ev.message;
      seen.push(m.type);
      if (['response.completed', 'response.failed', 'response.incomplete', 'error'].includes(m.type)) {
        finals.push(m.response ?? m);
        if (finals.length === 2 || m.type === 'error') break;
        ws.send({ type: 'response.create', model: MODEL, input: 'What is my name?',
          previous_response_id: m.response.id });
      }
    }
    ws.close();
    return { seen, finals: finals.map((r) => [r.status ?? r.type, r.previous_response_id ?? null, r.usage?.total_tokens ?? null]),
      chained: finals.length === 2 && finals[1].previous_response_id === finals[0].id };
  },
  async responses_more() {
    need({ 'responses.inputTokens': oai.responses.inputTokens, 'responses.compact': oai.responses.compact,
      conversations: oai.conversations });
    const counted = await oai.responses.inputTokens.count({ model: MODEL, input: 'Name a colour.',
      instructions: 'Be brief.' });
    const compacted = await oai.responses.compact({ model: MODEL, input: [
      { role: 'user', content: 'My name is Ada.' }, { role: 'assistant', content: 'Hello Ada.' }] });
    const item = compacted.output.find((o) => o.type === 'compaction');
    const after = await oai.responses.create({ model: MODEL, input: [...compacted.output,
      { role: 'user', content: 'What is my name?' }] });
    const gone = await oai.responses.create({ model: MODEL, input: 'x' });
    await oai.responses.delete(gone.id);
    const deleted = await refused(() => oai.responses.retrieve(gone.id));
    const bg = await oai.responses.create({ model: MODEL, input: 'x', background: true });
    const cancelled = await oai.responses.cancel(bg.id);
    const conv = await oai.conversations.create({ metadata: { topic: 'colours' },
      items: [{ type: 'message', role: 'user', content: 'Name a colour.' }] });
    const inConv = await oai.responses.create({ model: MODEL, conversation: conv.id, input: 'Another?' });
    const updated = await oai.conversations.update(conv.id, { metadata: { topic: 'paint' } });
    const added = await oai.conversations.items.create(conv.id, { items: [{ type: 'message', role: 'user',
      content: 'Thanks.' }] });
    const items = [];
    for await (const i of oai.conversations.items.list(conv.id, { order: 'asc' })) items.push([i.type, i.role]);
    const one = await oai.conversations.items.retrieve(added.data[0].id, { conversation_id: conv.id });
    const afterDelete = await oai.conversations.items.delete(added.data[0].id, { conversation_id: conv.id });
    const convDeleted = await oai.conversations.delete(conv.id);
    return {
      counted: [counted.object, counted.input_tokens > 0],
      compacted: [compacted.object, item?.type, typeof item?.encrypted_content, compacted.usage?.total_tokens > 0],
      after: [after.status, outputText(after)], deleted: [deleted.class, deleted.status],
      cancelled: [cancelled.id === bg.id, cancelled.status],
      conversation: [conv.object, conv.metadata, updated.metadata, inConv.conversation?.id === conv.id,
        outputText(inConv)],
      added: [added.object, added.data.map((i) => [i.type, i.role])], items, one: [one.id === added.data[0].id,
        one.type], afterDelete: afterDelete.id === conv.id, convDeleted: [convDeleted.id === conv.id,
        convDeleted.deleted, convDeleted.object],
    };
  },
  // --- Anthropic: messages ----------------------------------------------------------------------------------
  async messages() {
    const { data, request_id } = await claude.messages.create({ model: MODEL, max_tokens: 32,
      system: [{ type: 'text', text: 'Be brief.', cache_control: { type: 'ephemeral' } }], messages: HI })
      .withResponse();
    return { id: data.id, type: data.type, role: data.role, model: data.model,
      content: data.content.map((b) => [b.type, b.text]), stop: [data.stop_reason, data.stop_sequence],
      usage: data.usage, requestID: request_id, sdkRequestID: data._request_id ?? null };
  },
  async messages_stream() {
    const texts = [];
    const stream = claude.messages.stream({ model: MODEL, max_tokens: 32, messages: HI });
    stream.on('text', (t) => texts.push(t));
    const final = await stream.finalMessage();
    const raw = await collect(await claude.messages.create({ model: MODEL, max_tokens: 32, messages: HI,
      stream: true }));
    return { texts, final: { id: final.id, content: final.content.map((b) => [b.type, b.text]),
      stop: final.stop_reason, usage: final.usage }, finalText: await stream.finalText(),
      rawTypes: raw.map((e) => e.type) };
  },
  async messages_more() {
    const warmed = await claude.messages.stream({ model: MODEL, max_tokens: 0, messages: HI }).finalMessage();
    const prefill = [...HI, { role: 'assistant', content: 'Red' }];
    const continued = await claude.messages.stream({ model: MODEL, max_tokens: 32, messages: prefill }).finalMessage();
    const whole = await claude.messages.create({ model: MODEL, max_tokens: 32, messages: prefill });
    return {
      warmed: [warmed.content.length, warmed.stop_reason, warmed.usage.output_tokens],
      continued: [continued.content.map((b) => b.text), continued.stop_reason],
      whole: [whole.content.map((b) => b.text), whole.stop_reason],
    };
  },
  async count_tokens() {
    const counted = await claude.messages.countTokens({ model: MODEL, system: 'Be brief.', tools: [WEATHER_TOOL],
      messages: HI });
    const list = await claude.models.list();
    const one = await claude.models.retrieve(MODEL);
    return { count: counted.input_tokens, ids: list.data.map((m) => m.id), hasMore: list.has_more,
      one: [one.id, one.type, typeof one.created_at] };
  },
  async anthropic_errors() {
    return {
      unknownModel: await refused(() => claude.messages.create({ model: 'nope', max_tokens: 8, messages: HI })),
      badMaxTokens: await refused(() => claude.messages.create({ model: MODEL, max_tokens: -1, messages: HI })),
      systemRole: await refused(() => claude.messages.create({ model: MODEL, max_tokens: 8,
        messages: [{ role: 'system', content: 'x' }] })),
      countNoMessages: await refused(() => claude.messages.countTokens({ model: MODEL, messages: [] })),
      retrieveUnknown: await refused(() => claude.models.retrieve('nope')),
      streamUnknownModel: await refused(() => claude.messages.stream({ model: 'nope', max_tokens: 8,
        messages: HI }).finalMessage()),
      unknownBatch: await refused(() => claude.messages.batches.retrieve('msgbatch_nope')),
    };
  },
  // --- 429: a tenant whose one request a minute is spent (AIGRID_TENANT names it) ---------------------------
  async rate_limited() {
    const headers = { 'x-aigrid-tenant': process.env.AIGRID_TENANT };
    const first = await oai.chat.completions.create({ model: MODEL, messages: ASK }, { headers });
    return {
      first: first.choices[0].finish_reason,
      openai: await refused(() => oai.chat.completions.create({ model: MODEL, messages: ASK }, { headers })),
      anthropic: await refused(() => claude.messages.create({ model: MODEL, max_tokens: 8, messages: HI },
        { headers })),
    };
  },
  // --- 401: a key the gateway never issued, where keys are enforced ----------------------------------------
  async unauthorized() {
    return {
      chat: await refused(() => oai.chat.completions.create({ model: MODEL, messages: ASK })),
      models: await refused(() => oai.models.list()),
      responses: await refused(() => oai.responses.create({ model: MODEL, input: 'x' })),
      messages: await refused(() => claude.messages.create({ model: MODEL, max_tokens: 8, messages: HI })),
      claudeModels: await refused(() => claude.models.list()),
    };
  },
  // --- Files and Batches, Message Batches -------------------------------------------------------------------
  async batches() {
    const lines = ['r0', 'r1'].map((id) => JSON.stringify({ custom_id: id, method: 'POST', url: '/v1/chat/completions',
      body: { model: MODEL, messages: ASK, max_tokens: 8 } })).join('\n') + '\n';
    const file = await oai.files.create({ file: await toFile(Buffer.from(lines), 'in.jsonl'), purpose: 'batch' });
    const batch = await oai.batches.create({ input_file_id: file.id, endpoint: '/v1/chat/completions',
      completion_window: '24h' });
    const done = await until(() => oai.batches.retrieve(batch.id),
      (b) => ['completed', 'failed', 'cancelled', 'expired'].includes(b.status), 'batch');
    const out = done.output_file_id ? (await (await oai.files.content(done.output_file_id)).text()) : '';
    const answers = out.split('\n').filter(Boolean).map(JSON.parse)
      .map((x) => [x.custom_id, x.response.status_code, x.response.body.choices[0].message.content]);
    const deleted = await deleteFile(file.id);
    return { file: [file.object, file.purpose, file.bytes, file.filename], status: done.status,
      counts: done.request_counts, answers: answers.sort(), deleted: [deleted.id === file.id, deleted.deleted] };
  },
  async message_batches() {
    const created = await claude.messages.batches.create({ requests: ['a', 'b'].map((id) => ({
      custom_id: id, params: { model: MODEL, max_tokens: 16, messages: HI } })) });
    const ended = await until(() => claude.messages.batches.retrieve(created.id),
      (b) => b.processing_status === 'ended', 'message batch');
    const results = [];
    for await (const r of await claude.messages.batches.results(created.id)) {
      results.push([r.custom_id, r.result.type, r.result.message?.content?.map((b) => b.text).join('')]);
    }
    return { type: created.type, counts: ended.request_counts, results: results.sort() };
  },
  // --- the client's own tools (a SCRIPTED engine that calls get_weather, then answers its result) ----------
  async chat_tools() {
    const whole = await oai.chat.completions.create({ model: MODEL, messages: ASK, tools: [WEATHER_FN] });
    const call = whole.choices[0].message.tool_calls?.[0];
    const streamed = await chatHelpers.stream({ model: MODEL, messages: ASK, tools: [WEATHER_FN] })
      .finalChatCompletion();
    const scall = streamed.choices[0].message.tool_calls?.[0];
    const answered = await oai.chat.completions.create({ model: MODEL, tools: [WEATHER_FN], messages: [
      ...ASK, whole.choices[0].message, { role: 'tool', tool_call_id: call.id, content: 'sunny' }] });
    const ran = [];
    const runner = chatHelpers.runTools({ model: MODEL, messages: ASK, tools: [{ type: 'function',
      function: { ...WEATHER_FN.function, parse: JSON.parse, function: (args) => { ran.push(args); return 'sunny'; } } }] });
    const content = await runner.finalContent();
    return {
      whole: [whole.choices[0].finish_reason, call?.type, call?.function.name, JSON.parse(call?.function.arguments),
        typeof call?.id],
      streamed: [streamed.choices[0].finish_reason, scall?.function.name, JSON.parse(scall?.function.arguments)],
      answered: [answered.choices[0].finish_reason, answered.choices[0].message.content],
      runTools: { ran, content },
    };
  },
  async messages_tools() {
    const params = { model: MODEL, max_tokens: 64, tools: [WEATHER_TOOL], messages: HI };
    const whole = await claude.messages.create(params);
    const use = whole.content.find((b) => b.type === 'tool_use');
    const stream = claude.messages.stream(params);
    const jsons = [];
    stream.on('inputJson', (partial) => jsons.push(partial));
    const streamed = await stream.finalMessage();
    const suse = streamed.content.find((b) => b.type === 'tool_use');
    const answered = await claude.messages.create({ ...params, messages: [...HI,
      { role: 'assistant', content: whole.content },
      { role: 'user', content: [{ type: 'tool_result', tool_use_id: use.id, content: 'sunny' }] }] });
    return {
      whole: [whole.stop_reason, use?.name, use?.input, typeof use?.id],
      streamed: [streamed.stop_reason, suse?.name, suse?.input, jsons.length > 0],
      answered: [answered.stop_reason, answered.content.map((b) => [b.type, b.text])],
    };
  },
  // text before the calls, and two calls in one turn (the test's engine does both when asked, with native calls)
  async parallel_tools() {
    const ask = (text) => [{ role: 'user', content: text }];
    const chat = await chatHelpers.stream({ model: MODEL, messages: ask('TALK TWICE'), tools: [WEATHER_FN] })
      .finalChatCompletion();
    const chatWhole = await oai.chat.completions.create({ model: MODEL, messages: ask('TALK TWICE'),
      tools: [WEATHER_FN] });
    const jsons = [];
    const stream = claude.messages.stream({ model: MODEL, max_tokens: 64, tools: [WEATHER_TOOL],
      messages: ask('TALK TWICE') });
    stream.on('inputJson', (_, snapshot) => jsons.push(snapshot));
    const message = await stream.finalMessage();
    const messageWhole = await claude.messages.create({ model: MODEL, max_tokens: 64, tools: [WEATHER_TOOL],
      messages: ask('TALK TWICE') });
    const tools = [{ type: 'function', name: 'get_weather', parameters: WEATHER_FN.function.parameters, strict: false }];
    const response = await oai.responses.stream({ model: MODEL, input: 'TALK TWICE', tools }).finalResponse();
    const responseWhole = await oai.responses.create({ model: MODEL, input: 'TALK TWICE', tools });
    const chatShape = (c) => [c.choices[0].finish_reason, c.choices[0].message.content,
      (c.choices[0].message.tool_calls ?? []).map((t) => [t.id, t.function.name, JSON.parse(t.function.arguments)])];
    const messageShape = (m) => [m.stop_reason, m.content.map((b) => (b.type === 'text' ? ['text', b.text]
      : [b.type, b.id, b.name, b.input]))];
    const responseShape = (r) => [r.status, r.output.map((o) => (o.type === 'message' ? ['message', outputText(r)]
      : [o.type, o.call_id, o.name, JSON.parse(o.arguments)]))];
    return {
      chat: chatShape(chat), chatWhole: chatShape(chatWhole), message: messageShape(message),
      messageWhole: messageShape(messageWhole), inputJsonSnapshots: jsons.length,
      response: responseShape(response), responseWhole: responseShape(responseWhole),
    };
  },
  async tool_runner() {
    need({ '@anthropic-ai/sdk/helpers/beta/json-schema (betaTool)': betaTool,
      'beta.messages.toolRunner': claude.beta.messages.toolRunner });
    const ran = [];
    const weather = betaTool({ name: 'get_weather', description: 'Weather in a city',
      inputSchema: WEATHER_TOOL.input_schema, run: (input) => { ran.push(input); return 'sunny'; } });
    const runner = claude.beta.messages.toolRunner({ model: MODEL, max_tokens: 64, messages: HI, tools: [weather] });
    const final = await runner;
    const streamed = [];
    for await (const stream of claude.beta.messages.toolRunner({ model: MODEL, max_tokens: 64, messages: HI,
      tools: [weather], stream: true })) {
      streamed.push((await stream.finalMessage()).stop_reason);
    }
    return { ran, final: [final.stop_reason, final.content.map((b) => [b.type, b.text])], streamed };
  },
  async responses_tools() {
    const tools = [{ type: 'function', name: 'get_weather', parameters: WEATHER_FN.function.parameters, strict: false }];
    const r = await oai.responses.create({ model: MODEL, input: 'Weather in Paris?', tools });
    const call = r.output.find((o) => o.type === 'function_call');
    const events = await collect(await oai.responses.create({ model: MODEL, input: 'Weather in Paris?', tools,
      stream: true }));
    const next = await oai.responses.create({ model: MODEL, previous_response_id: r.id, tools, input: [
      { type: 'function_call_output', call_id: call.call_id, output: 'sunny' }] });
    const done = events.find((e) => e.type === 'response.function_call_arguments.done');
    const helped = await oai.responses.stream({ model: MODEL, input: 'Weather in Paris?', tools }).finalResponse();
    const hcall = helped.output.find((o) => o.type === 'function_call');
    return {
      helper: [helped.status, hcall?.name, JSON.parse(hcall?.arguments ?? 'null'), hcall?.call_id === undefined],
      call: [r.status, call?.name, JSON.parse(call?.arguments ?? 'null'), typeof call?.call_id],
      streamed: [events.at(-1).type, done?.arguments ? JSON.parse(done.arguments) : null],
      next: [next.status, outputText(next)],
    };
  },
  // --- a tool the grid runs itself (calculator), in the gateway's tool loop --------------------------------
  async server_tools() {
    const tools = [{ type: 'function', name: 'calculator' }];
    const input = 'What is 1234 * 5678?';
    const shape = (r) => ({ status: r.status, text: outputText(r), output: r.output.map((o) => [o.type, o.name ?? null,
      o.output ?? null, o.server_label ?? null]) });
    const whole = await oai.responses.create({ model: MODEL, input, tools });
    const events = [];
    const helper = oai.responses.stream({ model: MODEL, input, tools });
    helper.on('event', (e) => events.push(e.type));
    const streamed = await helper.finalResponse();
    const fn = [{ type: 'function', function: { name: 'calculator' } }];
    const chat = await oai.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: input }],
      tools: fn });
    const chatStreamed = await chatHelpers.stream({ model: MODEL, messages: [{ role: 'user',
      content: input }], tools: fn }).finalChatCompletion();
    return { whole: shape(whole), streamed: shape(streamed), events,
      chat: [chat.choices[0].finish_reason, chat.choices[0].message.content],
      chatStreamed: [chatStreamed.choices[0].finish_reason, chatStreamed.choices[0].message.content] };
  },
  // --- lists a page at a time: the SDKs' auto-pagers follow has_more / last_id ----------------------------
  async paging() {
    need({ conversations: oai.conversations });
    const files = [];
    for (const name of ['a.jsonl', 'b.jsonl', 'c.jsonl']) {
      files.push((await oai.files.create({ file: await toFile(Buffer.from('{}\n'), name), purpose: 'batch' })).id);
    }
    const listedFiles = [];
    for await (const f of oai.files.list({ limit: 1 })) listedFiles.push(f.id);
    const r = await oai.responses.create({ model: MODEL, input: [
      { role: 'user', content: 'one' }, { role: 'assistant', content: 'two' }, { role: 'user', content: 'three' }] });
    const items = [];
    for await (const i of oai.responses.inputItems.list(r.id, { limit: 1, order: 'asc' })) items.push(i.content[0].text);
    const conv = await oai.conversations.create({ items: ['one', 'two', 'three'].map((t) => ({ type: 'message',
      role: 'user', content: t })) });
    const convItems = [];
    for await (const i of oai.conversations.items.list(conv.id, { limit: 1, order: 'asc' })) {
      convItems.push(i.content[0].text);
    }
    const claudeModels = [];
    for await (const m of claude.models.list({ limit: 1 })) claudeModels.push(m.id);
    const batches = [];
    for (let i = 0; i < 2; i++) {
      batches.push((await claude.messages.batches.create({ requests: [{ custom_id: 'x',
        params: { model: MODEL, max_tokens: 8, messages: HI } }] })).id);
    }
    const listedBatches = [];
    for await (const b of claude.messages.batches.list({ limit: 1 })) listedBatches.push(b.id);
    const openaiBatches = [];
    for (let i = 0; i < 2; i++) {
      openaiBatches.push((await oai.batches.create({ input_file_id: files[0], endpoint: '/v1/chat/completions',
        completion_window: '24h' })).id);
    }
    const listedOpenaiBatches = [];
    for await (const b of oai.batches.list({ limit: 1 })) listedOpenaiBatches.push(b.id);
    return { files, listedFiles, items, convItems, claudeModels, batches, listedBatches, openaiBatches,
      listedOpenaiBatches };
  },
  // --- every site's engine breaks after its first byte: no continuation can finish the answer -------------
  async broken() {
    const chatChunks = [];
    const chat = await refused(async () => {
      for await (const c of await oai.chat.completions.create({ model: MODEL, messages: ASK, stream: true })) {
        chatChunks.push(c);
      }
    });
    const events = [];
    const helper = oai.responses.stream({ model: MODEL, input: 'x' });
    helper.on('event', (e) => events.push(e));
    const responses = await refused(() => helper.finalResponse());
    const stream = claude.messages.stream({ model: MODEL, max_tokens: 32, messages: HI });
    const messages = await refused(() => stream.finalMessage());
    return {
      chat, chatChunks: chatChunks.length, responses,
      responsesEvents: events.map((e) => e.type),
      responsesFailed: events.filter((e) => e.type === 'response.failed').map((e) => [e.response.status,
        e.response.error?.code]),
      messages,
    };
  },
  // --- every site fails before its first byte (the test's engines fail a prompt that says FAIL) -----------
  async every_site_fails() {
    const FAIL = [{ role: 'user', content: 'FAIL' }];
    return {
      chat: await refused(() => oai.chat.completions.create({ model: MODEL, messages: FAIL })),
      messages: await refused(() => claude.messages.create({ model: MODEL, max_tokens: 8, messages: FAIL })),
    };
  },
  // --- no site is healthy -----------------------------------------------------------------------------------
  async no_site() {
    return {
      chat: await refused(() => oai.chat.completions.create({ model: MODEL, messages: ASK })),
      responses: await refused(() => oai.responses.create({ model: MODEL, input: 'x' })),
      messages: await refused(() => claude.messages.create({ model: MODEL, max_tokens: 8, messages: HI })),
      messagesStream: await refused(() => claude.messages.stream({ model: MODEL, max_tokens: 8, messages: HI })
        .finalMessage()),
    };
  },
};

const out = {};
for (const name of process.argv.slice(2)) {
  if (!(name in cases)) {
    out[name] = { threw: { sdk: null, class: 'UnknownCase', message: name } };
    continue;
  }
  try {
    out[name] = await cases[name]();
  } catch (e) {
    out[name] = e instanceof Unsupported ? { unsupported: e.message } : { threw: described(e) };
  }
}
out._versions = { openai: OPENAI_VERSION, anthropic: ANTHROPIC_VERSION };
process.stdout.write(JSON.stringify(out) + '\n');
