// ternd driven by the official JavaScript clients: `openai` (OpenAI's SDK) and `ollama`
// (Ollama's), pinned in package.json. Each request goes out exactly as those libraries build it
// and each answer is read by their parsers, so a field ternd names differently, a stream shape
// they do not expect or an error body they cannot read fails here.
//
// usage: node test_clients.mjs PATH/TO/ternd PICTURE [REPO_ROOT]
// Exit 77 (skipped) when node_modules is not installed: npm ci --prefix tests/server/clients
// With REPO_ROOT and the shipped demo model, JSON-schema answers are also checked for validity.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
if (!fs.existsSync(path.join(here, 'node_modules', 'openai')) ||
    !fs.existsSync(path.join(here, 'node_modules', 'ollama'))) {
    console.log('SKIP: node_modules missing (npm ci --prefix tests/server/clients)');
    process.exit(77);
}
const { default: OpenAI } = await import('openai');
const { Ollama } = await import('ollama');

const [ternd, picture, root] = process.argv.slice(2);
let failures = 0, passed = 0;

function check(cond, what) {
    if (!cond) throw new Error('check failed: ' + what);
}

async function test(name, fn) {
    try {
        await fn();
        passed++;
        console.log('ok   ' + name);
    } catch (e) {
        failures++;
        console.log('FAIL ' + name + ': ' + (e.stack || e));
    }
}

// The error a call is expected to end with: its HTTP status and message as the client saw them.
async function failure(promise) {
    try {
        await promise;
    } catch (e) {
        return { status: e.status ?? e.status_code, message: String(e.error?.message ?? e.error ?? e.message) };
    }
    throw new Error('expected the request to fail');
}

function freePort() {
    return new Promise((resolve, reject) => {
        const s = net.createServer();
        s.listen(0, '127.0.0.1', () => {
            const { port } = s.address();
            s.close(() => resolve(port));
        });
        s.on('error', reject);
    });
}

async function startTernd(args) {
    const port = await freePort();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ternd-clients-'));
    const proc = spawn(ternd, ['--config', '/dev/null', '--port', String(port), '--db',
        path.join(dir, 'stats.db'), ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
    let log = '';
    proc.stderr.on('data', (d) => { log += d; });
    const base = `http://127.0.0.1:${port}`;
    for (let i = 0; i < 400; i++) {
        if (proc.exitCode !== null) throw new Error('ternd exited: ' + log);
        try {
            if ((await fetch(base + '/health')).ok) return { proc, base };
        } catch { /* not listening yet */ }
        await new Promise((r) => setTimeout(r, 50));
    }
    proc.kill();
    throw new Error('ternd did not come up: ' + log);
}

async function stopTernd(t) {
    const done = new Promise((r) => t.proc.on('exit', r));
    t.proc.kill('SIGTERM');
    await done;
}

// ---- An independent JSON Schema checker for the subset (docs/api.md) ----
function resolveRef(rootSchema, ref) {
    check(ref.startsWith('#/'), 'local $ref ' + ref);
    return ref.slice(2).split('/').reduce((s, k) => s[k], rootSchema);
}

function validate(v, s, rootSchema = s, at = '$') {
    if (s.$ref) return validate(v, resolveRef(rootSchema, s.$ref), rootSchema, at);
    if (s.anyOf) {
        const errs = s.anyOf.map((alt) => validate(v, alt, rootSchema, at));
        return errs.some((e) => e.length === 0) ? [] : [at + ': matches no anyOf branch'];
    }
    const err = [];
    if ('const' in s && JSON.stringify(v) !== JSON.stringify(s.const)) err.push(at + ': not const');
    if (s.enum && !s.enum.some((x) => JSON.stringify(x) === JSON.stringify(v))) err.push(at + ': not in enum');
    const t = s.type;
    const isInt = typeof v === 'number' && Number.isInteger(v);
    const types = { object: v !== null && typeof v === 'object' && !Array.isArray(v), array: Array.isArray(v),
        string: typeof v === 'string', integer: isInt, number: typeof v === 'number', boolean: typeof v === 'boolean',
        null: v === null };
    if (t && !(Array.isArray(t) ? t : [t]).some((x) => types[x])) return [at + ': not ' + t];
    if (types.object && (t === 'object' || s.properties)) {
        for (const k of s.required || []) if (!(k in v)) err.push(at + ': missing ' + k);
        for (const [k, val] of Object.entries(v)) {
            if (s.properties && k in s.properties) err.push(...validate(val, s.properties[k], rootSchema, at + '.' + k));
            else if (s.additionalProperties === false) err.push(at + ': extra property ' + k);
        }
    }
    if (types.array && s.items) v.forEach((x, i) => err.push(...validate(x, s.items, rootSchema, `${at}[${i}]`)));
    if (types.array && s.minItems !== undefined && v.length < s.minItems) err.push(at + ': too few items');
    if (types.array && s.maxItems !== undefined && v.length > s.maxItems) err.push(at + ': too many items');
    if (types.string && s.maxLength !== undefined && [...v].length > s.maxLength) err.push(at + ': too long');
    if (typeof v === 'number' && s.minimum !== undefined && v < s.minimum) err.push(at + ': below minimum');
    if (typeof v === 'number' && s.maximum !== undefined && v > s.maximum) err.push(at + ': above maximum');
    return err;
}

// What an app asks about a door-camera picture: a fixed shape it can parse every time.
const SHAPES_SCHEMA = {
    type: 'object',
    properties: {
        count: { type: 'integer', minimum: 0, maximum: 9 },
        colour: { type: 'string', enum: ['red', 'green', 'blue', 'yellow', 'black', 'white'] },
        shapes: { type: 'array', items: { type: 'string', maxLength: 12 }, minItems: 1, maxItems: 3 },
        visible: { type: 'boolean' },
    },
    required: ['count', 'colour', 'shapes', 'visible'],
    additionalProperties: false,
};
const BAD_SCHEMA = { type: 'object', properties: { name: { type: 'string', pattern: '^[a-z]+$' } } };

const image = fs.readFileSync(picture);
const dataUri = 'data:image/jpeg;base64,' + image.toString('base64');

// ---- Echo test double: every request and response shape, deterministic answers ----
const echo = await startTernd(['--engine', 'echo']);
const openai = new OpenAI({ baseURL: echo.base + '/v1', apiKey: 'unused', maxRetries: 0 });
const ollama = new Ollama({ host: echo.base });
try {
    await test('openai: chat with an image, not streamed', async () => {
        const r = await openai.chat.completions.create({
            model: 'tern', seed: 7, stop: ['zzz'], user: 'door-camera-1', max_completion_tokens: 50,
            messages: [{ role: 'user', content: [
                { type: 'image_url', image_url: { url: dataUri } },
                { type: 'text', text: 'is there a person' }] }],
        });
        check(r.object === 'chat.completion' && r.id.startsWith('chatcmpl-'), 'object and id');
        check(r.choices.length === 1 && r.choices[0].message.role === 'assistant', 'one assistant choice');
        check(/^\[image \d+x\d+\] is there a person$/.test(r.choices[0].message.content), r.choices[0].message.content);
        check(r.choices[0].finish_reason === 'stop', 'finish_reason');
        const u = r.usage;
        check(u.prompt_tokens > 0 && u.completion_tokens === 5 && u.total_tokens === u.prompt_tokens + u.completion_tokens, JSON.stringify(u));
    });

    await test('openai: streamed with include_usage, same text', async () => {
        const stream = await openai.chat.completions.create({
            model: 'tern', stream: true, stream_options: { include_usage: true },
            messages: [{ role: 'system', content: 'You answer briefly.' },
                { role: 'user', content: [{ type: 'text', text: 'the red circle' },
                    { type: 'image_url', image_url: { url: dataUri } }] }],
        });
        let text = '', finish = null, usage = null, chunks = 0;
        for await (const c of stream) {
            chunks++;
            check(c.object === 'chat.completion.chunk', 'chunk object');
            if (c.usage) usage = c.usage;
            for (const ch of c.choices) {
                text += ch.delta.content ?? '';
                if (ch.finish_reason) finish = ch.finish_reason;
            }
        }
        check(/^\[image \d+x\d+\] the red circle$/.test(text), text);
        check(finish === 'stop' && chunks >= 5, 'finish ' + finish);
        check(usage && usage.completion_tokens === 4 && usage.total_tokens === usage.prompt_tokens + 4, JSON.stringify(usage));
    });

    await test('openai: max_tokens cut is finish_reason length', async () => {
        const r = await openai.chat.completions.create({ model: 'tern', max_tokens: 2,
            messages: [{ role: 'user', content: 'one two three four' }] });
        check(r.choices[0].finish_reason === 'length' && r.usage.completion_tokens === 2, JSON.stringify(r));
    });

    for (const rf of [{ type: 'text' }, { type: 'json_object' },
        { type: 'json_schema', json_schema: { name: 'shapes', description: 'what is seen', strict: true, schema: SHAPES_SCHEMA } }]) {
        await test('openai: response_format ' + rf.type + ' accepted, streamed and not', async () => {
            const body = { model: 'tern', response_format: rf, messages: [{ role: 'user', content: 'a b' }] };
            const r = await openai.chat.completions.create(body);
            check(r.choices[0].message.content === 'a b', 'echo ignores the format');
            let text = '';
            for await (const c of await openai.chat.completions.create({ ...body, stream: true }))
                for (const ch of c.choices) text += ch.delta.content ?? '';
            check(text === 'a b', text);
        });
    }

    await test('openai: errors reach the client as 400 with their reason', async () => {
        const msgs = [{ role: 'user', content: 'hi' }];
        let e = await failure(openai.chat.completions.create({ model: 'tern', n: 2, messages: msgs }));
        check(e.status === 400 && e.message.includes('n:'), JSON.stringify(e));
        e = await failure(openai.chat.completions.create({ model: 'tern', messages: msgs,
            response_format: { type: 'json_schema', json_schema: { name: 'x', schema: BAD_SCHEMA } } }));
        check(e.status === 400 && e.message.includes('pattern'), JSON.stringify(e));
        e = await failure(openai.chat.completions.create({ model: 'tern', messages: msgs, response_format: { type: 'yaml' } }));
        check(e.status === 400 && e.message.includes('yaml'), JSON.stringify(e));
        e = await failure(openai.chat.completions.create({ model: 'tern', messages: msgs, presence_penalty: 0.5 }));
        check(e.status === 400 && e.message.includes('presence_penalty'), JSON.stringify(e));
    });

    await test('openai: models.list', async () => {
        const page = await openai.models.list();
        check(page.data.length === 1 && page.data[0].object === 'model', JSON.stringify(page.data));
    });

    await test('ollama: chat with an image (bytes), not streamed', async () => {
        const r = await ollama.chat({ model: 'tern', keep_alive: '10m',
            messages: [{ role: 'user', content: 'where is it', images: [new Uint8Array(image)] }],
            options: { seed: 3, temperature: 0, top_k: 40, top_p: 0.9, min_p: 0.05, repeat_penalty: 1.1,
                num_predict: 20, num_ctx: 4096, stop: ['zzz'], num_thread: 4, mirostat: 0 } });
        check(r.message.role === 'assistant' && /^\[image \d+x\d+\] where is it$/.test(r.message.content), r.message.content);
        check(r.done === true && r.done_reason === 'stop', 'done');
        check(r.eval_count === 4 && r.prompt_eval_count > 0, 'counts');
        for (const k of ['total_duration', 'prompt_eval_duration', 'eval_duration', 'load_duration'])
            check(Number.isInteger(r[k]) && r[k] >= 0, k);
    });

    await test('ollama: chat streamed', async () => {
        let text = '', last = null;
        for await (const part of await ollama.chat({ model: 'tern', stream: true,
            messages: [{ role: 'user', content: 'red blue green', images: [image.toString('base64')] }] })) {
            text += part.message.content;
            last = part;
        }
        check(/^\[image \d+x\d+\] red blue green$/.test(text), text);
        check(last.done && last.done_reason === 'stop' && last.eval_count === 4, JSON.stringify(last));
    });

    for (const format of ['json', SHAPES_SCHEMA]) {
        await test('ollama: generate with format ' + (typeof format === 'string' ? format : 'schema'), async () => {
            const r = await ollama.generate({ model: 'tern', prompt: 'one two', format, keep_alive: 300 });
            check(r.response === 'one two' && r.done, 'echo ignores the format');
            let text = '';
            for await (const part of await ollama.generate({ model: 'tern', prompt: 'one two', format, stream: true }))
                text += part.response;
            check(text === 'one two', text);
        });
    }

    await test('ollama: errors reach the client with their reason', async () => {
        let e = await failure(ollama.generate({ model: 'tern', prompt: 'x', format: BAD_SCHEMA }));
        check(e.status === 400 && e.message.includes('pattern'), JSON.stringify(e));
        e = await failure(ollama.chat({ model: 'tern', messages: [{ role: 'user', content: 'x' }], options: { mirostat: 2 } }));
        check(e.status === 400 && e.message.includes('mirostat'), JSON.stringify(e));
        e = await failure(ollama.generate({ model: 'tern', prompt: 'x', options: { temprature: 1 } }));
        check(e.status === 400 && e.message.includes('temprature'), JSON.stringify(e));
    });

    await test('ollama: list, show, ps, version', async () => {
        const l = await ollama.list();
        check(l.models.length === 1 && l.models[0].details.format === 'gguf', JSON.stringify(l));
        const s = await ollama.show({ model: l.models[0].name });
        check(s.capabilities.includes('completion') && s.capabilities.includes('vision'), JSON.stringify(s.capabilities));
        check(s.details.family && s.details.quantization_level && s.details.parameter_size, JSON.stringify(s.details));
        check(s.model_info['general.architecture'] === s.details.family, JSON.stringify(s.model_info));
        check(Number.isInteger(s.model_info[s.details.family + '.context_length']), 'context_length');
        const p = await ollama.ps();
        check(p.models.length === 1 && p.models[0].size_vram === 0, JSON.stringify(p));
        check(new Date(p.models[0].expires_at) > new Date(Date.now() + 100 * 365 * 86400e3), 'kept loaded');
        check((await ollama.version()).version, 'version');
    });
} finally {
    await stopTernd(echo);
}

// ---- The demo model: schema-constrained answers parse and validate ----
const model = root && path.join(root, 'models', 'tern-demo-tq2_0.gguf');
const engineSrc = root && path.join(root, 'src', 'server', 'backend_engine.c');
if (!model || !fs.existsSync(model)) {
    console.log('skip demo-model checks: no models/tern-demo-tq2_0.gguf');
} else if (!fs.readFileSync(engineSrc, 'utf8').includes('json_schema')) {
    console.log('skip demo-model checks: backend_engine.c does not apply job_params.json_schema yet');
} else {
    const demo = await startTernd(['--engine', 'model', '--model', model, '--mmproj',
        path.join(root, 'models', 'tern-demo-mmproj-tq2_0.gguf'), '--threads', '1']);
    const oa = new OpenAI({ baseURL: demo.base + '/v1', apiKey: 'unused', maxRetries: 0, timeout: 120000 });
    const ol = new Ollama({ host: demo.base });
    const pictures = ['00000.jpg', '00001.jpg', '00002.png'].map((n) =>
        fs.readFileSync(path.join(root, 'tests', 'data', 'shapes', 'test', n)));
    try {
        await test('demo model: openai json_schema answers validate (temperature 1)', async () => {
            for (const [i, pic] of pictures.entries()) {
                const r = await oa.chat.completions.create({ model: 'tern', temperature: 1, seed: i + 1, max_tokens: 200,
                    response_format: { type: 'json_schema', json_schema: { name: 'shapes', strict: true, schema: SHAPES_SCHEMA } },
                    messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'data:image/jpeg;base64,' + pic.toString('base64') } },
                        { type: 'text', text: 'Describe the shapes as JSON.' }] }] });
                const text = r.choices[0].message.content;
                const errs = validate(JSON.parse(text), SHAPES_SCHEMA);
                check(errs.length === 0, text + ' ' + errs.join('; '));
                check(r.choices[0].finish_reason === 'stop', 'complete value ends the answer');
            }
        });
        await test('demo model: ollama format schema, streamed, validates', async () => {
            for (const [i, pic] of pictures.entries()) {
                let text = '';
                for await (const part of await ol.chat({ model: 'tern', stream: true, format: SHAPES_SCHEMA,
                    options: { temperature: 1, seed: i + 10, num_predict: 200 },
                    messages: [{ role: 'user', content: 'How many shapes are there?', images: [pic] }] }))
                    text += part.message.content;
                const errs = validate(JSON.parse(text), SHAPES_SCHEMA);
                check(errs.length === 0, text + ' ' + errs.join('; '));
            }
        });
    } finally {
        await stopTernd(demo);
    }
}

console.log(`${passed} passed, ${failures} failed`);
process.exit(failures ? 1 : 0);
