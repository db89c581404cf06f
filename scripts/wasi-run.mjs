// Runs a wasm32-wasip1 test binary under Node's WASI (V8, the engine Envoy embeds), so `cargo test
// --target wasm32-wasip1` checks the code as it is compiled for the filter: 32-bit limbs in the bignum
// arithmetic, for instance. Used as CARGO_TARGET_WASM32_WASIP1_RUNNER by `make unit`.
import { readFile } from 'node:fs/promises';
import { WASI } from 'node:wasi';
import process from 'node:process';

const [wasmPath, ...args] = process.argv.slice(2);
const wasi = new WASI({
  version: 'preview1',
  args: [wasmPath, ...args],
  env: { RUST_BACKTRACE: '1' },
  // Test data lives beside the repository (../shared) and is read by absolute path.
  preopens: { '/': '/' },
  returnOnExit: true,
});
const module = await WebAssembly.compile(await readFile(wasmPath));
// The library links proxy-wasm's host imports (module "env"); unit tests never reach Envoy, so each
// import is a stub that fails loudly if called.
const imports = wasi.getImportObject();
imports.env = {};
for (const { module: from, name, kind } of WebAssembly.Module.imports(module)) {
  if (from === 'env' && kind === 'function') {
    imports.env[name] = () => { throw new Error(`host function ${name} called in a unit test`); };
  }
}
const instance = await WebAssembly.instantiate(module, imports);
// proxy-wasm's `main!` exports `_initialize` (the filter is a reactor); a test binary is a command, and
// Node's WASI refuses a module exporting both, so `_start` runs without it.
const { _initialize, ...exports } = instance.exports;
process.exitCode = wasi.start({ exports });
