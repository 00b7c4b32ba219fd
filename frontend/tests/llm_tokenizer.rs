//! The tokenizer and chat template of SmolLM2-135M-Instruct, against the `tokenizers`
//! Python package: `scripts/llm-testdata.py` encodes real strings (prose, code,
//! whitespace runs, digits, unicode, ChatML) with a tokenizer it builds from the GGUF
//! metadata. smelt must give the same ids from the GGUF file and from the Hugging Face
//! `tokenizer.json`, and decode them back to the text. Data: `$SMELT_LLM_TESTDATA`
//! (default `target/llm-testdata`), made by `.ci/run`; required under `CI`.

mod common;

use smelt_frontend::gguf::GgufFile;
use smelt_frontend::llm::{Message, Pretrained, TextStream, Tokenizer};
use std::path::{Path, PathBuf};

fn data_dir() -> Option<PathBuf> {
    let make = "python3 scripts/llm-testdata.py";
    common::script_data("SMELT_LLM_TESTDATA", "llm-testdata", "STAMP", make)
}

fn cases(dir: &Path) -> Vec<(String, Vec<u32>)> {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("tokens.json")).unwrap()).unwrap();
    v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let ids = c["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect();
            (c["text"].as_str().unwrap().to_string(), ids)
        })
        .collect()
}

fn check(tokenizer: &Tokenizer, dir: &Path, source: &str) {
    for (text, want) in cases(dir) {
        assert_eq!(tokenizer.encode(&text).unwrap(), want, "{source}: {text:?}");
        assert_eq!(
            tokenizer.decode(&want).unwrap(),
            text,
            "{source}: decoding {text:?}"
        );
    }
}

#[test]
fn the_gguf_tokenizer_gives_the_reference_ids() {
    let Some(dir) = data_dir() else { return };
    let file = GgufFile::open(&dir.join("SmolLM2-135M-Instruct.Q4_1.gguf")).unwrap();
    let tokenizer = Tokenizer::from_gguf(&file).unwrap();
    assert_eq!(tokenizer.vocab_size(), 49152);
    check(&tokenizer, &dir, "GGUF");
}

#[test]
fn the_hugging_face_tokenizer_gives_the_reference_ids() {
    let Some(dir) = data_dir() else { return };
    check(
        &Tokenizer::from_file(&dir.join("hf/tokenizer.json")).unwrap(),
        &dir,
        "tokenizer.json",
    );
}

#[test]
fn the_embedded_chat_template_renders_chatml() {
    let Some(dir) = data_dir() else { return };
    let model = Pretrained::open(&dir.join("SmolLM2-135M-Instruct.Q4_1.gguf")).unwrap();
    let template = model
        .chat_template
        .as_ref()
        .expect("SmolLM2 ships a chat template");
    let user = Message {
        role: "user".into(),
        content: "What is 2+2?".into(),
    };
    assert_eq!(
        template.render(std::slice::from_ref(&user)).unwrap(),
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    );
    let system = Message {
        role: "system".into(),
        content: "Be brief.".into(),
    };
    assert_eq!(
        template.render(&[system, user]).unwrap(),
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    );
    assert_eq!(model.stop_tokens, [2], "<|im_end|> ends a reply");
}

#[test]
fn a_template_that_never_ends_is_an_error() {
    use smelt_frontend::llm::ChatTemplate;
    let looping =
        "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}";
    let template = ChatTemplate::new(looping, String::new(), String::new()).unwrap();
    let user = Message {
        role: "user".into(),
        content: "hi".into(),
    };
    let err = template.render(&[user]).expect_err("runs out of fuel");
    assert!(err.to_string().contains("fuel"), "{err}");
}

/// Streamed one token at a time, every case's text comes out whole and in order
/// (characters split across tokens included), as decoding all its ids at once gives.
#[test]
fn a_text_stream_gives_the_whole_text() {
    let Some(dir) = data_dir() else { return };
    let tokenizer = Tokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
    for (text, ids) in cases(&dir) {
        let mut stream = TextStream::new();
        let streamed: String = ids
            .iter()
            .map(|&id| stream.push(&tokenizer, id).unwrap())
            .collect();
        assert_eq!(streamed, tokenizer.decode(&ids).unwrap(), "{text:?}");
    }
}
