//! The embedded engine component under the real host: model loading through the memory64 store,
//! model info against the native GGUF reader, errors for bad files (never traps), the compiled-code
//! cache, and interruption.
//!
//! `cargo test --release -p chord-host --test engine_component -- --nocapture` prints start times.

use std::path::{Path, PathBuf};
use std::time::Instant;

use chord_engine::gguf::{Gguf, Value};
use chord_host::runtime::{CodeSource, MetadataValue, ModelInfo};
use chord_host::{Error, LoadOptions, Runtime, RuntimeOptions};

const SMOLLM2: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const GEMMA3: &str = "gemma-3-270m-q4_k_m.gguf";

/// The test models, fetched through `chord pull`'s code on first use and cached.
fn model_path(file: &str) -> PathBuf {
    let name = match file {
        SMOLLM2 => "smollm2-135m-instruct",
        GEMMA3 => "gemma3-270m",
        other => panic!("no known model for {other}"),
    };
    chord_host::pull::resolve_model(name).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// A fresh directory under the system temp dir.
fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "chord-host-test-{tag}-{}-{:?}",
        std::process::id(),
        Instant::now()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A runtime whose compiled code is cached in one directory shared by every run of these tests
/// (files are named by content hash and replaced atomically, so runs never disturb each other).
fn runtime() -> Runtime {
    Runtime::new(RuntimeOptions {
        cache_dir: Some(std::env::temp_dir().join("chord-host-test-cache")),
        ..RuntimeOptions::default()
    })
    .unwrap()
}

fn native(path: &Path) -> Gguf {
    let file = std::fs::File::open(path).unwrap();
    Gguf::read(&file).unwrap()
}

/// What the WIT conversion must make of a GGUF value.
fn expected_value(v: &Value) -> MetadataValue {
    match v {
        Value::U8(x) => MetadataValue::Uint((*x).into()),
        Value::U16(x) => MetadataValue::Uint((*x).into()),
        Value::U32(x) => MetadataValue::Uint((*x).into()),
        Value::U64(x) => MetadataValue::Uint(*x),
        Value::I8(x) => MetadataValue::Int((*x).into()),
        Value::I16(x) => MetadataValue::Int((*x).into()),
        Value::I32(x) => MetadataValue::Int((*x).into()),
        Value::I64(x) => MetadataValue::Int(*x),
        Value::F32(x) => MetadataValue::Float((*x).into()),
        Value::F64(x) => MetadataValue::Float(*x),
        Value::Bool(b) => MetadataValue::Boolean(*b),
        Value::String(s) => MetadataValue::Text(s.clone()),
        Value::Array(a) => MetadataValue::Array(chord_host::runtime::ArraySummary {
            element_type: a.elem_name().into(),
            len: a.len() as u64,
        }),
    }
}

fn same_value(a: &MetadataValue, b: &MetadataValue) -> bool {
    use MetadataValue as M;
    match (a, b) {
        (M::Uint(x), M::Uint(y)) => x == y,
        (M::Int(x), M::Int(y)) => x == y,
        (M::Float(x), M::Float(y)) => x.to_bits() == y.to_bits(),
        (M::Boolean(x), M::Boolean(y)) => x == y,
        (M::Text(x), M::Text(y)) => x == y,
        (M::Array(x), M::Array(y)) => x.element_type == y.element_type && x.len == y.len,
        _ => false,
    }
}

fn u32_key(g: &Gguf, key: &str) -> u32 {
    g.metadata
        .get_u32(key)
        .unwrap()
        .unwrap_or_else(|| panic!("{key}"))
}

/// The info the component returns agrees with the native reader on every field it shares with it.
fn check_info(info: &ModelInfo, g: &Gguf, path: &Path) {
    assert_eq!(info.architecture, g.architecture().unwrap());
    assert_eq!(info.gguf_version, g.version);
    assert_eq!(info.file_size, std::fs::metadata(path).unwrap().len());
    assert_eq!(info.file_size, g.file_size);
    assert_eq!(info.tensor_count, g.tensors.len() as u64);
    assert_eq!(
        info.parameter_count,
        g.tensors.iter().map(|t| t.n_elements()).sum::<u64>()
    );
    let counted: u32 = info.tensor_types.iter().map(|t| t.count).sum();
    assert_eq!(counted as usize, g.tensors.len());
    let bytes: u64 = info.tensor_types.iter().map(|t| t.bytes).sum();
    assert_eq!(bytes, g.tensors.iter().map(|t| t.size).sum::<u64>());

    assert_eq!(info.metadata.len(), g.metadata.len());
    for (entry, (key, value)) in info.metadata.iter().zip(g.metadata.iter()) {
        assert_eq!(entry.key, key);
        assert_eq!(entry.gguf_type, value.value_type().name());
        assert!(
            same_value(&entry.value, &expected_value(value)),
            "metadata {key}: {:?}",
            entry.value
        );
    }

    let arch = info.architecture.as_str();
    let h = &info.hyperparameters;
    assert_eq!(
        h.context_length,
        u32_key(g, &format!("{arch}.context_length"))
    );
    assert_eq!(
        h.embedding_length,
        u32_key(g, &format!("{arch}.embedding_length"))
    );
    assert_eq!(h.block_count, u32_key(g, &format!("{arch}.block_count")));
    assert_eq!(
        h.head_count,
        u32_key(g, &format!("{arch}.attention.head_count"))
    );
    assert_eq!(
        h.head_count_kv,
        u32_key(g, &format!("{arch}.attention.head_count_kv"))
    );
    let tokens = match g.metadata.get("tokenizer.ggml.tokens") {
        Some(Value::Array(a)) => a.len(),
        _ => panic!("no tokenizer.ggml.tokens"),
    };
    assert_eq!(h.vocab_size as usize, tokens);
    assert_eq!(
        info.has_chat_template,
        g.metadata.get("tokenizer.chat_template").is_some()
    );
    assert_eq!(info.context_length, h.context_length);
}

#[test]
fn smollm2_info_matches_the_native_reader() {
    let path = model_path(SMOLLM2);
    let mut rt = runtime();
    let t = Instant::now();
    let model = rt.load_model(&path, &LoadOptions::default()).unwrap();
    let load = t.elapsed();
    let info = rt.model_info(&model).unwrap();
    let g = native(&path);
    check_info(&info, &g, &path);

    // Facts from the reference fixtures' README.
    assert_eq!(info.architecture, "llama");
    let types: Vec<(&str, u32)> = info
        .tensor_types
        .iter()
        .map(|t| (t.type_name.as_str(), t.count))
        .collect();
    assert_eq!(types, [("Q4_1", 210), ("F32", 61), ("Q8_0", 1)]);
    assert_eq!(info.tokenizer_model.as_deref(), Some("gpt2"));
    assert!(info.has_chat_template);
    let h = &info.hyperparameters;
    assert_eq!(
        (
            h.embedding_length,
            h.block_count,
            h.head_count,
            h.head_count_kv
        ),
        (576, 30, 9, 3)
    );
    assert_eq!((h.key_length, h.value_length), (64, 64));

    // The header came through the store, in coarse reads.
    let stats = rt.store_stats();
    assert_eq!(stats.opens, 1);
    assert!(stats.reads >= 1 && stats.reads <= 8, "{stats:?}");
    assert!(stats.bytes_served >= g.data_offset, "{stats:?}");
    println!("SmolLM2 load (header through the store): {load:?}, {stats:?}");

    rt.unload_model(model).unwrap();
}

#[test]
fn gemma3_info_matches_the_native_reader() {
    let path = model_path(GEMMA3);
    let mut rt = runtime();
    let opts = LoadOptions {
        context_length: Some(1024),
        ..LoadOptions::default()
    };
    let t = Instant::now();
    let model = rt.load_model(&path, &opts).unwrap();
    println!("Gemma 3 load (header through the store): {:?}", t.elapsed());
    let mut info = rt.model_info(&model).unwrap();
    assert_eq!(info.context_length, 1024);
    info.context_length = info.hyperparameters.context_length;
    check_info(&info, &native(&path), &path);
    assert_eq!(info.architecture, "gemma3");
    assert_eq!(info.hyperparameters.vocab_size, 262_144);
    assert_eq!(info.hyperparameters.sliding_window, Some(512));
    let types: Vec<(&str, u32)> = info
        .tensor_types
        .iter()
        .map(|t| (t.type_name.as_str(), t.count))
        .collect();
    assert_eq!(
        types,
        [
            ("F32", 109),
            ("Q5_0", 81),
            ("Q4_K", 27),
            ("Q8_0", 10),
            ("Q6_K", 9)
        ]
    );
}

#[test]
fn bad_files_are_errors_not_traps() {
    let dir = temp_dir("bad");
    let good = model_path(SMOLLM2);
    let bytes = std::fs::read(&good).unwrap();
    let data_offset = native(&good).data_offset as usize;

    let not_gguf = dir.join("not.gguf");
    std::fs::write(&not_gguf, b"PK\x03\x04 this is a zip file, not a model").unwrap();
    let empty = dir.join("empty.gguf");
    std::fs::write(&empty, b"").unwrap();
    let cut_header = dir.join("cut-header.gguf");
    std::fs::write(&cut_header, &bytes[..data_offset / 2]).unwrap();
    let cut_data = dir.join("cut-data.gguf");
    std::fs::write(&cut_data, &bytes[..bytes.len() - 1000]).unwrap();
    let missing = dir.join("missing.gguf");

    let mut rt = runtime();
    let opts = LoadOptions::default();
    let err = |rt: &mut Runtime, p: &Path| rt.load_model(p, &opts).unwrap_err();

    let e = err(&mut rt, &not_gguf);
    assert!(
        matches!(&e, Error::InvalidModel(m) if m.contains("not a GGUF")),
        "{e}"
    );
    let e = err(&mut rt, &empty);
    assert!(
        matches!(&e, Error::InvalidModel(m) if m.contains("truncated")),
        "{e}"
    );
    let e = err(&mut rt, &cut_header);
    assert!(matches!(&e, Error::InvalidModel(_)), "{e}");
    println!("header cut in half: {e}");
    let e = err(&mut rt, &cut_data);
    assert!(
        matches!(&e, Error::InvalidModel(m) if m.contains("past the end")),
        "{e}"
    );
    let e = err(&mut rt, &missing);
    assert!(
        matches!(&e, Error::Store(m) if m.contains("not found")),
        "{e}"
    );
    let e = err(&mut rt, &dir);
    assert!(matches!(&e, Error::Store(_)), "{e}");
    let e = rt
        .load_model(
            &good,
            &LoadOptions {
                context_length: Some(0),
                ..LoadOptions::default()
            },
        )
        .unwrap_err();
    assert!(matches!(&e, Error::InvalidArgument(_)), "{e}");
    // One line each, fit for `chord: error: …`.
    assert!(!e.to_string().contains('\n'));

    // None of that hurt the instance: a good model still loads in the same runtime.
    let model = rt.load_model(&good, &opts).unwrap();
    assert_eq!(rt.model_info(&model).unwrap().architecture, "llama");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn tokenizer_and_chat_template_match_the_native_engine() {
    // The component's tokenizer and template are the engine's, built at load inside the guest:
    // the same text must give the same tokens, pieces, text and prompt as the native library.
    let mut rt = runtime();
    for file in [SMOLLM2, GEMMA3] {
        let path = model_path(file);
        let model = rt.load_model(&path, &LoadOptions::default()).unwrap();
        let g = native(&path);
        let tok = chord_engine::tokenizer::Tokenizer::from_gguf(&g).unwrap();
        let text = "Hello, world! <|im_start|> 123 héllo\n\tthere";
        for (add, parse) in [(true, false), (false, true), (true, true)] {
            let ids = rt.tokenize(&model, text, add, parse).unwrap();
            assert_eq!(ids, tok.tokenize(text, add, parse).unwrap(), "{file}");
            for (rs, us) in [(false, false), (true, true)] {
                let back = rt.detokenize(&model, &ids, rs, us).unwrap();
                let native = tok.detokenize_bytes(&ids, rs, us).unwrap();
                assert_eq!(back.as_bytes(), &native[..], "{file}");
            }
            for &id in &ids {
                assert_eq!(
                    rt.token_to_piece(&model, id, true).unwrap(),
                    tok.token_to_piece(id, true).unwrap(),
                    "{file}"
                );
            }
        }
        // Bad token ids are errors, not traps.
        let e = rt.token_to_piece(&model, u32::MAX, true).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
        assert!(rt.detokenize(&model, &[u32::MAX], false, false).is_err());

        let msgs = [
            ("system".to_owned(), "Be brief.".to_owned()),
            ("user".to_owned(), "Hi!".to_owned()),
        ];
        let prompt = rt.apply_chat_template(&model, &msgs, true, None).unwrap();
        let native_msgs: Vec<_> = msgs
            .iter()
            .map(|(r, c)| chord_engine::chat::Message::new(r, c))
            .collect();
        let bos = tok.bos().map(|b| tok.token_text(b).unwrap()).unwrap_or("");
        let eos = tok.eos().map(|b| tok.token_text(b).unwrap()).unwrap_or("");
        let native = chord_engine::chat::ChatTemplate::from_gguf(&g)
            .unwrap()
            .render(&native_msgs, true, bos, eos)
            .unwrap();
        assert_eq!(prompt, native, "{file}");
        let chatml = rt
            .apply_chat_template(&model, &msgs, false, Some("chatml"))
            .unwrap();
        assert!(
            chatml.contains("<|im_start|>user\nHi!<|im_end|>"),
            "{chatml}"
        );
        let e = rt
            .apply_chat_template(&model, &msgs, false, Some("{% if %}"))
            .unwrap_err();
        assert!(matches!(e, Error::InvalidModel(_)), "{e}");
    }
}

#[test]
fn compiled_code_is_cached() {
    let cache = temp_dir("cache");
    let opts = RuntimeOptions {
        cache_dir: Some(cache.clone()),
        ..RuntimeOptions::default()
    };
    let t = Instant::now();
    let first = Runtime::new(opts.clone()).unwrap();
    let first_total = t.elapsed();
    let s1 = first.start_info().clone();
    assert_eq!(s1.code, CodeSource::Compiled);
    assert_eq!(s1.cache_error, None);
    let file = s1.cache_file.clone().unwrap();
    assert!(file.starts_with(cache.join("compiled")) && file.exists());

    let t = Instant::now();
    let second = Runtime::new(opts.clone()).unwrap();
    let second_total = t.elapsed();
    let s2 = second.start_info().clone();
    assert_eq!(s2.code, CodeSource::Cache);
    assert_eq!(s2.cache_file.as_deref(), Some(file.as_path()));
    println!(
        "first start (compile): {first_total:?} (compile {:?}, instantiate {:?}); \
         second start (cache): {second_total:?} (load {:?}, instantiate {:?})",
        s1.prepare, s1.instantiate, s2.prepare, s2.instantiate
    );
    assert!(s2.prepare < s1.prepare);

    // A damaged cache file is ignored and replaced, not trusted. (Replaced by a rename, as chord
    // itself writes it: the runtimes above execute code mapped from the old file.)
    drop((first, second));
    let tmp = file.with_extension("damaged");
    std::fs::write(&tmp, b"garbage").unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    let third = Runtime::new(opts.clone()).unwrap();
    assert_eq!(third.start_info().code, CodeSource::Compiled);
    assert!(third.start_info().cache_error.is_some());
    let fourth = Runtime::new(opts).unwrap();
    assert_eq!(fourth.start_info().code, CodeSource::Cache);

    // No cache directory: compile every time.
    let uncached = Runtime::new(RuntimeOptions {
        cache_dir: None,
        ..RuntimeOptions::default()
    })
    .unwrap();
    assert_eq!(uncached.start_info().code, CodeSource::Compiled);
    assert_eq!(uncached.start_info().cache_file, None);
    std::fs::remove_dir_all(&cache).unwrap();
}

#[test]
fn interrupt_stops_calls() {
    let path = model_path(GEMMA3);

    // Interrupted before a call: the call is refused, the instance is untouched.
    let mut rt = runtime();
    let handle = rt.interrupt_handle();
    handle.interrupt();
    let e = rt.load_model(&path, &LoadOptions::default()).unwrap_err();
    assert!(matches!(e, Error::Cancelled));
    assert_eq!(e.exit_code(), 130);
    handle.clear();
    let t = Instant::now();
    rt.load_model(&path, &LoadOptions::default()).unwrap();
    let load = t.elapsed();

    // Interrupted during a call (Gemma's header, 262144 tokens, takes a while to parse): the call
    // stops with `Cancelled` and the runtime refuses further calls.
    let mut stopped = false;
    for attempt in 0..5 {
        let mut rt = runtime();
        let handle = rt.interrupt_handle();
        let delay = load / 4 / (attempt + 1);
        let interrupter = std::thread::spawn(move || {
            std::thread::sleep(delay);
            handle.interrupt();
        });
        let r = rt.load_model(&path, &LoadOptions::default());
        interrupter.join().unwrap();
        match r {
            Err(Error::Cancelled) => {
                let again = rt.load_model(&path, &LoadOptions::default()).unwrap_err();
                assert!(matches!(again, Error::EngineStopped), "{again}");
                stopped = true;
                break;
            }
            // The load won the race (a loaded machine can delay the interrupter): try again.
            Ok(_) => continue,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert!(
        stopped,
        "no load was interrupted (a load takes {load:?}); is epoch interruption on?"
    );
}

#[test]
fn guest_memory_is_capped() {
    let path = model_path(GEMMA3);
    let mut rt = runtime();
    rt.load_model(&path, &LoadOptions::default()).unwrap();
    let peak = rt.guest_memory_peak();
    assert!(
        peak > 8 << 20,
        "Gemma 3's vocabulary needs more than {peak} bytes?"
    );

    // Under a cap below what the load needs (Gemma's 262k-token vocabulary alone takes over 4 MiB
    // of strings, scores and types), the load fails inside the guest instead of growing.
    let mut rt = Runtime::new(RuntimeOptions {
        memory_limit: 4 << 20,
        ..RuntimeOptions::default()
    })
    .unwrap();
    let e = rt.load_model(&path, &LoadOptions::default()).unwrap_err();
    println!("Gemma 3 load: guest memory peak {peak} bytes; under a cap of half that: {e}");
    assert!(
        matches!(e, Error::OutOfMemory(_) | Error::Trap { .. }),
        "{e}"
    );
    assert!(rt.guest_memory_peak() <= peak / 2);
}

/// A forward step run whole on the host's CPU device (`cpu`, 2 threads: one `program.run` per
/// step, the KV cache there too) and in the guest (`guest`) give the native engine's logits bit
/// for bit through context shifts and a reset: SmolLM2 in a 40-token window, fed 100 tokens in
/// chunks (prefill batches and single tokens), plain and flash attention.
#[test]
fn forward_steps_on_the_device_match_the_engine_through_context_shifts() {
    device_matches_engine(SMOLLM2, &[(Some(2), true), (None, true)], 2);
}

/// As above with the host's programs off: the guest runs each step and calls the device per
/// product and per layer's attention (the path of a device without programs).
#[test]
fn steps_calling_the_device_per_operation_match_the_engine() {
    device_matches_engine(SMOLLM2, &[(Some(2), false)], 1);
}

/// As above for Gemma 3 (two RoPEs, QK-norm, sandwich norms, GeGLU, sliding-window layers),
/// on the CPU device only and one round (the guest's own path is checked against llama.cpp
/// elsewhere).
#[test]
fn gemma3_forward_steps_on_the_device_match_the_engine() {
    device_matches_engine(GEMMA3, &[(Some(2), true)], 1);
}

/// `backends`: the CPU backend's threads (`None`: the guest's kernels) and whether it takes
/// programs.
fn device_matches_engine(file: &str, backends: &[(Option<usize>, bool)], rounds: usize) {
    use chord_engine::model::{LogitsMode, Model, SessionOptions as NativeOptions};
    use chord_host::runtime::SessionOptions;

    let path = model_path(file);
    let src: chord_engine::model::SharedSource =
        std::sync::Arc::new(std::fs::File::open(&path).unwrap());
    let gguf = Gguf::read(&*src).unwrap();
    let native = std::sync::Arc::new(Model::load(src, gguf).unwrap());
    let n_vocab = native.hparams().n_vocab as u32;
    let tokens: Vec<u32> = (0..100u32).map(|i| (i * 7919 + 13) % n_vocab).collect();
    let chunks = [17usize, 1, 1, 30, 1, 25, 1, 1, 23];
    assert_eq!(chunks.iter().sum::<usize>(), tokens.len());
    let (n_ctx, keep) = (40u32, 4u32);

    for flash in [false, true] {
        // What the engine computes natively, its cache in its own memory.
        let mut s = native
            .new_session(NativeOptions {
                n_ctx: n_ctx as usize,
                context_shift: true,
                n_keep: keep as usize,
                flash_attn: flash,
                ..Default::default()
            })
            .unwrap();
        let mut want = Vec::new();
        let mut at = 0;
        for &c in &chunks {
            let l = s.eval(&tokens[at..at + c], LogitsMode::All).unwrap();
            want.extend((0..c).map(|i| l.row(i).to_vec()));
            at += c;
        }

        for &(threads, programs) in backends {
            let mut rt = Runtime::new(RuntimeOptions {
                cache_dir: Some(std::env::temp_dir().join("chord-host-test-cache")),
                cpu_threads: threads,
                cpu_programs: programs,
                ..RuntimeOptions::default()
            })
            .unwrap();
            let n_layer = native.hparams().n_layer as u64;
            let opts = LoadOptions {
                context_length: Some(n_ctx),
                context_shift: true,
                ..LoadOptions::default()
            };
            let m = rt.load_model(&path, &opts).unwrap();
            let sess = rt
                .new_session(
                    &m,
                    &SessionOptions {
                        context_length: None,
                        keep_tokens: keep,
                        batch_size: None,
                        flash_attention: flash,
                    },
                )
                .unwrap();
            for round in 0..rounds {
                let mut at = 0;
                for &c in &chunks {
                    let before = rt.compute_calls();
                    let rows = rt.logits(&sess, &tokens[at..at + c], 4).unwrap();
                    let after = rt.compute_calls();
                    // On the device a step is one call, whatever its size, or (programs off) a
                    // call per layer's attention and per product; in the guest, none.
                    let (runs, attends) = match (threads, programs) {
                        (None, _) => (0, 0),
                        (Some(_), true) => (1, 0),
                        (Some(_), false) => (0, n_layer),
                    };
                    assert_eq!(
                        (after.program_run, after.attend),
                        (before.program_run + runs, before.attend + attends),
                        "{file}: calls of a {c}-token step"
                    );
                    assert_eq!(
                        after.matmul > before.matmul,
                        threads.is_some() && !programs,
                        "{file}: products of a {c}-token step"
                    );
                    assert_eq!(rows.len(), c);
                    for (i, r) in rows.iter().enumerate() {
                        let row = &want[at + i];
                        for t in &r.top {
                            assert!(
                                t.logit.to_bits() == row[t.id as usize].to_bits(),
                                "{file}: flash {flash}, cpu threads {threads:?}, round {round}: \
                                 position {} token {}: {} vs {}",
                                at + i,
                                t.id,
                                t.logit,
                                row[t.id as usize]
                            );
                        }
                    }
                    at += c;
                }
                assert!(rt.session_len(&sess).unwrap() <= n_ctx);
                rt.reset(&sess).unwrap();
            }
        }
    }
}

/// A KV cache on the host counts against the guest's memory limit: a session whose cache would
/// pass it is an `out-of-memory` error, a smaller one then opens, and ending sessions gives
/// their memory back.
#[test]
fn kv_caches_on_the_host_count_against_the_memory_limit() {
    use chord_host::runtime::SessionOptions;

    let path = model_path(SMOLLM2);
    let mut rt = Runtime::new(RuntimeOptions {
        cache_dir: Some(std::env::temp_dir().join("chord-host-test-cache")),
        memory_limit: 256 << 20,
        ..RuntimeOptions::default()
    })
    .unwrap();
    let m = rt.load_model(&path, &LoadOptions::default()).unwrap();
    let opts = |n: u32| SessionOptions {
        context_length: Some(n),
        keep_tokens: 0,
        batch_size: None,
        flash_attention: false,
    };
    // SmolLM2 keeps 30 layers × 3 heads × (64 + 64) f32 per position: 45 KiB; 8192 positions
    // take 360 MiB.
    let e = rt.new_session(&m, &opts(8192)).unwrap_err();
    println!("a 8192-token session under a 256 MiB limit: {e}");
    assert!(matches!(e, Error::OutOfMemory(_)), "{e}");
    // Three sessions of 2048 positions (90 MiB each) do not fit together; ending one makes room.
    let a = rt.new_session(&m, &opts(2048)).unwrap();
    let b = rt.new_session(&m, &opts(2048)).unwrap();
    let e = rt.new_session(&m, &opts(2048)).unwrap_err();
    assert!(matches!(e, Error::OutOfMemory(_)), "{e}");
    rt.end_session(a).unwrap();
    let c = rt.new_session(&m, &opts(2048)).unwrap();
    rt.feed(&c, &[1, 2, 3]).unwrap();
    rt.end_session(b).unwrap();
    rt.end_session(c).unwrap();
}
