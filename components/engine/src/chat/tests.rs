use super::*;

fn conv() -> Vec<Message> {
    vec![
        Message::new("system", "  Be brief.  "),
        Message::new("user", "Hi"),
        Message::new("assistant", "Hello!"),
        Message::new("user", "Bye"),
    ]
}

#[test]
fn builtin_gemma_folds_system_into_first_user_turn() {
    let t = ChatTemplate::builtin("gemma").unwrap();
    let got = t.render(&conv(), true, "<bos>", "<eos>").unwrap();
    assert_eq!(
        got,
        "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n\
         <start_of_turn>model\nHello!<end_of_turn>\n\
         <start_of_turn>user\nBye<end_of_turn>\n\
         <start_of_turn>model\n"
    );
    let got = t.render(&conv()[1..2], false, "", "").unwrap();
    assert_eq!(got, "<start_of_turn>user\nHi<end_of_turn>\n");
}

#[test]
fn builtin_chatml_llama3_phi3() {
    let m = &conv()[..2];
    assert_eq!(
        ChatTemplate::builtin("chatml")
            .unwrap()
            .render(m, true, "", "")
            .unwrap(),
        "<|im_start|>system\n  Be brief.  <|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
    assert_eq!(
        ChatTemplate::builtin("llama3")
            .unwrap()
            .render(m, true, "", "")
            .unwrap(),
        "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>\
         <|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>\
         <|start_header_id|>assistant<|end_header_id|>\n\n"
    );
    assert_eq!(
        ChatTemplate::builtin("phi3")
            .unwrap()
            .render(m, false, "", "")
            .unwrap(),
        "<|system|>\n  Be brief.  <|end|>\n<|user|>\nHi<|end|>\n"
    );
}

#[test]
fn builtin_llama2_and_mistral() {
    assert_eq!(
        ChatTemplate::builtin("llama2")
            .unwrap()
            .render(&conv(), true, "", "")
            .unwrap(),
        "[INST] <<SYS>>\n  Be brief.  \n<</SYS>>\n\nHi [/INST]Hello!</s>[INST] Bye [/INST]"
    );
    assert_eq!(
        ChatTemplate::builtin("mistral")
            .unwrap()
            .render(&conv(), true, "", "")
            .unwrap(),
        "[INST]   Be brief.  \n\nHi[/INST] Hello!</s>[INST] Bye[/INST]"
    );
}

#[test]
fn builtin_selection() {
    let none = |_: &str| false;
    assert_eq!(builtin_for("gemma", none), "gemma");
    assert_eq!(builtin_for("gemma2", none), "gemma");
    assert_eq!(builtin_for("gemma3", none), "gemma");
    assert_eq!(builtin_for("qwen2", none), "chatml");
    assert_eq!(builtin_for("phi3", none), "phi3");
    assert_eq!(builtin_for("llama", none), "llama2");
    assert_eq!(
        builtin_for("llama", |t| t == "<|start_header_id|>"),
        "llama3"
    );
    assert_eq!(builtin_for("llama", |t| t == "<|im_start|>"), "chatml");
    assert_eq!(builtin_for("llama", |t| t == "[INST]"), "mistral");
    assert_eq!(builtin_for("somethingelse", none), "chatml");
    assert_eq!(
        builtin_for("somethingelse", |t| t == "<start_of_turn>"),
        "gemma"
    );
    // A GGUF template wins; a blank one falls back; a built-in name is accepted.
    let t = ChatTemplate::for_model(Some("{{ 'x' }}"), "gemma3", none).unwrap();
    assert_eq!(t.builtin_name(), None);
    let t = ChatTemplate::for_model(Some("  "), "gemma3", none).unwrap();
    assert_eq!(t.builtin_name(), Some("gemma"));
    let t = ChatTemplate::for_model(Some("llama3"), "gemma3", none).unwrap();
    assert_eq!(t.builtin_name(), Some("llama3"));
    for name in ChatTemplate::BUILTINS {
        assert_eq!(
            ChatTemplate::builtin(name).unwrap().builtin_name(),
            Some(*name)
        );
    }
    assert!(matches!(
        ChatTemplate::builtin("nope"),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn errors_are_reported_not_panicked() {
    // Syntax errors: the model's template is broken.
    for src in [
        "{% for %}",
        "{{ unclosed",
        "{% if x %}",
        "{% endfor %}",
        "{{ a | }}",
    ] {
        match ChatTemplate::new(src) {
            Err(Error::InvalidModel(msg)) => assert!(msg.contains("syntax error"), "{msg}"),
            other => panic!("{src:?}: {other:?}"),
        }
    }
    // raise_exception: the conversation is rejected, with the template's message.
    let t = ChatTemplate::new("{{ raise_exception('Roles must alternate') }}").unwrap();
    match t.render(&conv(), true, "", "") {
        Err(Error::InvalidArgument(msg)) => assert!(msg.contains("Roles must alternate"), "{msg}"),
        other => panic!("{other:?}"),
    }
    // Runtime type errors.
    let t = ChatTemplate::new("{{ messages + 1 }}").unwrap();
    assert!(matches!(
        t.render(&conv(), true, "", ""),
        Err(Error::InvalidArgument(_))
    ));
    // Unknown methods and filters.
    let t = ChatTemplate::new("{{ messages[0].content.frobnicate() }}").unwrap();
    assert!(t.render(&conv(), true, "", "").is_err());
    assert!(
        ChatTemplate::new("{{ 1 | nosuchfilter }}")
            .and_then(|t| t.render(&[], false, "", ""))
            .is_err()
    );
    // Indexing past the end is undefined (lenient, like Jinja2), not a panic.
    let t = ChatTemplate::new("[{{ messages[99] }}]").unwrap();
    assert_eq!(t.render(&[], false, "", "").unwrap(), "[]");
}

#[test]
fn runaway_templates_stop() {
    // Fuel bounds the work a hostile template can do (lowered here to keep the test fast).
    let mut t = ChatTemplate::new(
        "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
    )
    .unwrap();
    t.set_fuel(Some(1_000_000));
    match t.render(&[], false, "", "") {
        Err(Error::InvalidArgument(msg)) => assert!(msg.contains("fuel"), "{msg}"),
        other => panic!("{other:?}"),
    }
    // Infinite recursion through a macro.
    let t = ChatTemplate::new("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}").unwrap();
    assert!(t.render(&[], false, "", "").is_err());
    // A huge string.
    let t = ChatTemplate::new("{{ 'x' * 1000000000000 }}").unwrap();
    assert!(t.render(&[], false, "", "").is_err());
}

#[test]
fn globals_and_variables() {
    let t = ChatTemplate::new(
        "{{ bos_token }}|{{ eos_token }}|{{ add_generation_prompt }}|{{ messages|length }}|\
         {{ strftime_now('%Y-%m-%d') }}|{{ tools }}|{{ documents is none }}",
    )
    .unwrap();
    let got = t
        .render_with(
            &conv(),
            &RenderOptions {
                add_generation_prompt: true,
                bos_token: "<s>",
                eos_token: "</s>",
                now_unix: Some(0),
            },
        )
        .unwrap();
    assert_eq!(got, "<s>|</s>|True|4|1970-01-01|None|True");
    // Without a pinned time, strftime_now uses the clock: a plausible year.
    let t = ChatTemplate::new("{{ strftime_now('%Y') }}").unwrap();
    let year: i32 = t.render(&[], false, "", "").unwrap().parse().unwrap();
    assert!(year >= 2024, "{year}");
}

#[test]
fn python_float_repr() {
    use pyjson::py_float_repr as r;
    let cases = [
        (0.0, "0.0"),
        (-0.0, "-0.0"),
        (1.0, "1.0"),
        (0.5, "0.5"),
        (100.0, "100.0"),
        (1234.5678, "1234.5678"),
        (0.0001, "0.0001"),
        (0.00001, "1e-05"),
        (1.5e-7, "1.5e-07"),
        (1e16, "1e+16"),
        (9999999999999998.0, "9999999999999998.0"),
        (1.2345e100, "1.2345e+100"),
        (-2.5e-300, "-2.5e-300"),
        (0.1 + 0.2, "0.30000000000000004"),
        (f64::INFINITY, "Infinity"),
        (f64::NEG_INFINITY, "-Infinity"),
        (f64::NAN, "NaN"),
    ];
    for (f, want) in cases {
        assert_eq!(r(f), want, "{f:e}");
    }
}

#[test]
fn tojson_matches_json_dumps() {
    let v = Value::from_iter([
        ("name", Value::from("a\"b\\c\n\u{1}é")),
        ("list", Value::from(vec![Value::from(1), Value::from(2.5)])),
        ("none", Value::from(())),
        ("t", Value::from(true)),
    ]);
    assert_eq!(
        pyjson::dumps(&v).unwrap(),
        r#"{"name": "a\"b\\c\n\u0001é", "list": [1, 2.5], "none": null, "t": true}"#
    );
}
