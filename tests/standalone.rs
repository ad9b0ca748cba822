//! Part F's acceptance: the engine composed with the `fs-store` and `no-compute` adapters
//! (scripts/build-standalone) runs with nothing but WASI.
//!
//! Each test instantiates a composed component in a wasmtime embedding that links only
//! `wasmtime-wasi` (no chord host imports), with the model's directory preopened at `/models`:
//! - `chord-engine-wasi.wasm` (exports `chord:llm/inference`): greedy tokens against llama.cpp's
//!   fixture and against the `chord` host running the same engine;
//! - `chord-standalone.wasm` (a `wasi:cli/run` command): its stdout is that text;
//! - missing files and paths outside the preopen are clear errors, never traps.
//!
//! The components are (re)built by running scripts/build-standalone once per test binary (a no-op
//! but for `wac compose` when nothing changed; it installs wac-cli on first use).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::p2::bindings::sync::Command as WasiCommand;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxView, WasiView};

mod llm {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "chord:llm/llm",
    });
}
use llm::exports::chord::llm::inference as wit;

const PROMPT: &str = "The capital of France is";
const N: u32 = 16;
/// Where the tests preopen the model's directory.
const GUEST_DIR: &str = "/models";

/// The workspace root.
fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// Runs scripts/build-standalone once; its last line of output is the directory it wrote.
fn standalone_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let out = Command::new(root().join("scripts/build-standalone"))
            .current_dir(root())
            .output()
            .expect("cannot run scripts/build-standalone");
        assert!(
            out.status.success(),
            "scripts/build-standalone failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        PathBuf::from(stdout.lines().last().expect("no output").trim())
    })
}

fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut config = Config::new();
        config.wasm_component_model(true);
        Engine::new(&config).unwrap()
    })
}

/// A composed component, compiled once per test binary.
fn component(file: &str) -> Component {
    static CACHE: std::sync::Mutex<Vec<(String, Component)>> = std::sync::Mutex::new(Vec::new());
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, c)) = cache.iter().find(|(f, _)| f == file) {
        return c.clone();
    }
    let path = standalone_dir().join(file);
    let c = Component::from_file(engine(), &path)
        .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
    cache.push((file.to_owned(), c.clone()));
    c
}

struct Ctx {
    table: ResourceTable,
    wasi: WasiCtx,
}

impl WasiView for Ctx {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// A store whose WASI context has `models` preopened read-only at `/models`, the given
/// arguments, and stdout/stderr captured.
fn store(models: &Path, args: &[&str]) -> (Store<Ctx>, MemoryOutputPipe, MemoryOutputPipe) {
    let stdout = MemoryOutputPipe::new(1 << 20);
    let stderr = MemoryOutputPipe::new(1 << 20);
    let mut b = WasiCtx::builder();
    b.preopened_dir(models, GUEST_DIR, FsPerms::ReadOnly)
        .unwrap()
        .args(args)
        .stdout(stdout.clone())
        .stderr(stderr.clone());
    let ctx = Ctx {
        table: ResourceTable::new(),
        wasi: b.build(),
    };
    (Store::new(engine(), ctx), stdout, stderr)
}

/// Only WASI: if the composition still imported a chord interface, instantiation would fail.
fn wasi_linker() -> Linker<Ctx> {
    let mut linker = Linker::new(engine());
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).unwrap();
    linker
}

fn smollm2() -> (PathBuf, String) {
    let path = chord_tests::model("smollm2-135m-instruct");
    let guest = format!(
        "{GUEST_DIR}/{}",
        path.file_name().unwrap().to_str().unwrap()
    );
    (path, guest)
}

fn load_options() -> wit::LoadOptions {
    wit::LoadOptions {
        context_length: Some(4096),
        cache_budget_bytes: None,
        context_shift: false,
        prefetch_layers: 1,
    }
}

fn greedy_options() -> wit::SamplerOptions {
    wit::SamplerOptions {
        temperature: 0.0,
        top_k: 40,
        top_p: 0.95,
        min_p: 0.05,
        repeat_penalty: 1.0,
        repeat_last_n: 64,
        frequency_penalty: 0.0,
        presence_penalty: 0.0,
        logit_bias: Vec::new(),
        seed: None,
        max_tokens: Some(N),
        stop: Vec::new(),
        ignore_eos: false,
    }
}

/// The capital case of llama.cpp's SmolLM2 fixture: prompt tokens, greedy tokens, and how many
/// leading greedy tokens have a top-1 margin of at least 0.5 (where roundings cannot flip them).
fn fixture() -> (Vec<u32>, Vec<u32>, usize) {
    let text = std::fs::read_to_string(chord_tests::fixture("reference/smollm2_dev.json")).unwrap();
    let fx: Value = serde_json::from_str(&text).unwrap();
    let case = fx["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["prompt"] == PROMPT)
        .expect("the fixture has the capital case")
        .clone();
    let ids = |v: &Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| u32::try_from(x.as_u64().unwrap()).unwrap())
            .collect()
    };
    let prompt = ids(&case["prompt_tokens"]);
    let greedy = ids(&case["greedy_tokens"]);
    let positions = case["positions"].as_array().unwrap();
    let clear = (0..greedy.len())
        .take_while(|&k| {
            let top = positions[prompt.len() - 1 + k]["top"].as_array().unwrap();
            top[0][1].as_f64().unwrap() - top[1][1].as_f64().unwrap() >= 0.5
        })
        .count();
    (prompt, greedy, clear)
}

/// Greedy generation through `chord-engine-wasi.wasm`: (prompt ids, generated (id, text)).
fn standalone_greedy() -> (Vec<u32>, Vec<(u32, String)>) {
    let (path, guest) = smollm2();
    let (mut store, _, stderr) = store(path.parent().unwrap(), &[]);
    let inst = llm::Llm::instantiate(
        &mut store,
        &component("chord-engine-wasi.wasm"),
        &wasi_linker(),
    )
    .unwrap();
    let api = inst.chord_llm_inference();
    let model = api
        .model()
        .call_load(&mut store, &guest, load_options())
        .unwrap()
        .unwrap_or_else(|e| {
            panic!(
                "load: {e:?}; stderr: {}",
                String::from_utf8_lossy(&stderr.contents())
            )
        });
    let session = api
        .model()
        .call_new_session(
            &mut store,
            model,
            wit::SessionOptions {
                context_length: None,
                keep_tokens: 0,
                batch_size: None,
                flash_attention: false,
            },
        )
        .unwrap()
        .unwrap();
    let prompt = api
        .model()
        .call_tokenize(&mut store, model, PROMPT, true, true)
        .unwrap()
        .unwrap();
    let g = api
        .session()
        .call_generate(&mut store, session, &prompt, &greedy_options())
        .unwrap()
        .unwrap();
    let mut out = Vec::new();
    while let Some(t) = api.generation().call_next(&mut store, g).unwrap().unwrap() {
        out.push((t.id, t.text));
    }
    (prompt, out)
}

/// The same generation by the `chord` host (native store and compute) running the engine.
fn host_greedy(path: &Path, prompt: &[u32]) -> Vec<u32> {
    use chord_host::runtime::{LoadOptions, Runtime, RuntimeOptions, SamplerOptions};
    let mut rt = Runtime::new(RuntimeOptions::default()).unwrap();
    let model = rt
        .load_model(
            path,
            &LoadOptions {
                context_length: Some(4096),
                ..LoadOptions::default()
            },
        )
        .unwrap();
    let session = rt.new_session(&model, &Default::default()).unwrap();
    let g = rt
        .generate(
            &session,
            prompt,
            &SamplerOptions {
                temperature: 0.0,
                max_tokens: Some(N),
                ..SamplerOptions::default()
            },
        )
        .unwrap();
    let mut ids = Vec::new();
    while let Some(t) = rt.next_token(&g).unwrap() {
        ids.push(t.id);
    }
    ids
}

/// The composition's greedy tokens: llama.cpp's wherever its margin is clear, and exactly the
/// `chord` host's (the same engine code behind native imports) everywhere.
#[test]
fn engine_wasi_generates_the_greedy_continuation() {
    let (want_prompt, want, clear) = fixture();
    let (prompt, got) = standalone_greedy();
    let ids: Vec<u32> = got.iter().map(|(id, _)| *id).collect();
    assert_eq!(prompt, want_prompt, "prompt tokens");
    assert_eq!(ids.len(), N as usize);
    let clear = clear.min(N as usize);
    assert_eq!(
        ids[..clear],
        want[..clear],
        "first {clear} greedy tokens vs llama.cpp"
    );
    let same = ids.iter().zip(&want).take_while(|(a, b)| a == b).count();
    println!("{same} of {N} tokens equal llama.cpp's ({clear} with a clear margin): {ids:?}");
    let (path, _) = smollm2();
    assert_eq!(ids, host_greedy(&path, &prompt), "vs the chord host");
}

/// `chord-standalone.wasm` under `wasi:cli/run`: exit status and captured output.
fn run_cli(models: &Path, args: &[&str]) -> (bool, String, String) {
    let mut argv = vec!["chord-standalone"];
    argv.extend_from_slice(args);
    let (mut store, stdout, stderr) = store(models, &argv);
    let cmd = WasiCommand::instantiate(
        &mut store,
        &component("chord-standalone.wasm"),
        &wasi_linker(),
    )
    .unwrap();
    // A trap is an `Err` here and fails the test: bad input must be an exit status.
    let ok = cmd
        .wasi_cli_run()
        .call_run(&mut store)
        .expect("the command trapped")
        .is_ok();
    let text = |p: &MemoryOutputPipe| String::from_utf8(p.contents().to_vec()).unwrap();
    (ok, text(&stdout), text(&stderr))
}

#[test]
fn command_prints_the_greedy_continuation() {
    let (path, guest) = smollm2();
    let (ok, stdout, stderr) = run_cli(
        path.parent().unwrap(),
        &[
            "--model",
            &guest,
            "--prompt",
            PROMPT,
            "-n",
            "16",
            "--temperature",
            "0",
        ],
    );
    assert!(ok, "stderr: {stderr}");
    let (_, tokens) = standalone_greedy();
    let text: String = tokens.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(stdout, format!("{text}\n"));
    assert!(stdout.starts_with(" Paris."), "{stdout:?}");
}

#[test]
fn missing_and_unreachable_models_are_errors_not_traps() {
    let (path, _) = smollm2();
    let models = path.parent().unwrap();
    for (model, why) in [
        ("/models/no-such-model.gguf", "not found"),
        ("/etc/passwd", "not found"),
        ("/models/../outside.gguf", "not found"),
        ("relative.gguf", "not found"),
        ("/models", "not a regular file"),
    ] {
        let (ok, stdout, stderr) = run_cli(models, &["--model", model, "--prompt", "x"]);
        assert!(!ok, "{model}: succeeded");
        assert_eq!(stdout, "", "{model}");
        assert!(
            stderr.starts_with("chord-cli: error: ") && stderr.contains(why),
            "{model}: {stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "{model}: {stderr}");
    }
    let (ok, _, stderr) = run_cli(models, &["--prompt", "x"]);
    assert!(!ok && stderr.contains("--model"), "{stderr}");

    // The same through the engine's export: a `store` error value.
    let (mut store, _, _) = store(models, &[]);
    let inst = llm::Llm::instantiate(
        &mut store,
        &component("chord-engine-wasi.wasm"),
        &wasi_linker(),
    )
    .unwrap();
    let e = inst
        .chord_llm_inference()
        .model()
        .call_load(&mut store, "/etc/passwd", load_options())
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(&e, wit::Error::Store(m) if m.contains("not found")),
        "{e:?}"
    );
}
