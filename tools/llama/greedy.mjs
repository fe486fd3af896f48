// Greedy generation in llama.cpp (node-llama-cpp's prebuilt binary), for export checks.
// usage: node greedy.mjs MODEL.gguf PROMPTS.json MAX_NEW_TOKENS
// PROMPTS.json: a list of prompt texts (chat template already applied; special tokens parsed).
// Prints JSON: {"results": [{"prompt_tokens": [...], "tokens": [...], "text": "..."}],
//               "tokens_per_second": generated tokens over generation time}
import {readFileSync} from "node:fs";
import {getLlama, LlamaLogLevel} from "node-llama-cpp";

const [modelPath, promptsPath, maxNew] = process.argv.slice(2);
const prompts = JSON.parse(readFileSync(promptsPath, "utf8"));
const llama = await getLlama({build: "never", gpu: false, logLevel: process.env.LLAMA_LOG ? LlamaLogLevel.debug : LlamaLogLevel.error});
const model = await llama.loadModel({modelPath});
const results = [];
let generated = 0;
let seconds = 0;
for (const prompt of prompts) {
    const context = await model.createContext({contextSize: 1024, batchSize: 512, threads: Number(process.env.LLAMA_THREADS || 1)});
    const sequence = context.getSequence();
    const promptTokens = model.tokenize(prompt, true);
    const tokens = [];
    const start = process.hrtime.bigint();
    for await (const token of sequence.evaluate(promptTokens, {temperature: 0})) {
        if (model.isEogToken(token)) break;
        tokens.push(token);
        if (tokens.length >= Number(maxNew)) break;
    }
    seconds += Number(process.hrtime.bigint() - start) / 1e9;
    generated += tokens.length;
    results.push({prompt_tokens: promptTokens, tokens, text: model.detokenize(tokens)});
    await context.dispose();
}
console.log(JSON.stringify({results, tokens_per_second: generated / seconds}));
await model.dispose();
