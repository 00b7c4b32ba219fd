//! `smelt serve` from Rust, without Python (tests/serve/ has the pytest suite with the
//! official `openai` client): a real server on loopback with SmolLM2-135M-Instruct,
//! spoken to in plain HTTP/1.0 (so every reply, streamed or not, ends when the
//! connection closes).

mod common;

use common::{expect_user_error, smelt};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const NAME: &str = "SmolLM2-135M-Instruct.Q4_1";

fn model() -> Option<String> {
    let make = "python3 scripts/llm-testdata.py";
    let dir = common::script_data("SMELT_LLM_TESTDATA", "llm-testdata", "STAMP", make)?;
    Some(dir.join(format!("{NAME}.gguf")).display().to_string())
}

/// A running server; stopped with SIGTERM (and waited for) when dropped.
struct Server {
    child: Child,
    address: String,
}

impl Server {
    fn start(model: &str, flags: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_smelt"))
            .args(["serve", model, "--port", "0", "--exit-after", "300"])
            .args(flags)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut log = BufReader::new(child.stderr.take().unwrap());
        let deadline = Instant::now() + Duration::from_secs(180);
        let mut line = String::new();
        while Instant::now() < deadline {
            line.clear();
            if log.read_line(&mut line).unwrap() == 0 {
                panic!("smelt serve exited: {:?}", child.wait());
            }
            if let Some(at) = line
                .trim()
                .strip_prefix("smelt serve: listening on http://")
            {
                let address = at.to_string();
                // Keep draining the log so the server never blocks on a full pipe.
                std::thread::spawn(move || std::io::copy(&mut log, &mut std::io::sink()));
                return Server { child, address };
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("smelt serve did not start");
    }

    /// `(status, body)` of one request.
    fn request(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        self.request_with(method, path, "", body)
    }

    /// As [`Server::request`], with `headers` (lines ending in `\r\n`) added.
    fn request_with(&self, method: &str, path: &str, headers: &str, body: &str) -> (u16, String) {
        let mut s = TcpStream::connect(&self.address).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.0\r\nContent-Type: application/json\r\n{headers}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        let (head, body) = reply.split_once("\r\n\r\n").unwrap();
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        (status, body.to_string())
    }

    fn json(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let (status, text) = self.request("POST", path, &body.to_string());
        (status, serde_json::from_str(&text).unwrap())
    }

    /// SIGTERM, then the exit status.
    fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        self.child.wait().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn completions_whole_and_streamed_agree() {
    let Some(model) = model() else { return };
    let server = Server::start(&model, &["--parallel", "2"]);
    let ask = |stream: bool| {
        serde_json::json!({"model": NAME, "prompt": "The capital of France is",
            "temperature": 0, "max_tokens": 6, "stream": stream,
            "stream_options": {"include_usage": true}})
    };
    let (status, whole) = server.json("/v1/completions", ask(false));
    assert_eq!(status, 200, "{whole}");
    let text = whole["choices"][0]["text"].as_str().unwrap().to_string();
    assert!(text.starts_with(" Paris"), "{text}");
    assert_eq!(whole["usage"]["completion_tokens"], 6);
    assert_eq!(whole["choices"][0]["finish_reason"], "length");

    let (status, events) = server.request("POST", "/v1/completions", &ask(true).to_string());
    assert_eq!(status, 200);
    let data: Vec<&str> = events
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(data.last(), Some(&"[DONE]"));
    let chunks: Vec<serde_json::Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let ids: std::collections::HashSet<_> = chunks.iter().map(|c| c["id"].clone()).collect();
    assert_eq!(ids.len(), 1);
    let streamed: String = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0)?["text"].as_str().map(String::from))
        .collect();
    assert_eq!(streamed, text);
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["completion_tokens"], 6);
    assert!(server.stop().success());
}

#[test]
fn bad_requests_get_openai_errors() {
    let Some(model) = model() else { return };
    let server = Server::start(&model, &["--api-key", "k", "--max-body", "4096"]);
    let (status, body) = server.request("POST", "/v1/chat/completions", "{");
    assert_eq!(status, 401, "the key is checked first: {body}");
    let with_key = |body: &str| {
        let (status, reply) = server.request_with(
            "POST",
            "/v1/chat/completions",
            "Authorization: Bearer k\r\n",
            body,
        );
        let json: serde_json::Value = serde_json::from_str(&reply).unwrap();
        (status, json)
    };
    for (body, status) in [
        ("{", 400),
        (
            r#"{"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]}"#,
            404,
        ),
        (&format!(r#"{{"model": "{NAME}", "messages": []}}"#), 400),
        (
            &format!(
                r#"{{"model": "{NAME}", "messages": [{{"role": "user", "content": "hi"}}], "temperature": "hot"}}"#
            ),
            400,
        ),
        (
            &format!(
                r#"{{"model": "{NAME}", "messages": [{{"role": "user", "content": "hi"}}], "max_tokens": 99999}}"#
            ),
            400,
        ),
        (&format!(r#"{{"pad": "{}"}}"#, "x".repeat(5000)), 413),
    ] {
        let (got, reply) = with_key(body);
        assert_eq!(got, status, "{body:.80}: {reply}");
        assert!(
            reply["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{reply}"
        );
    }
    let (status, reply) = server.request("GET", "/nowhere", "");
    assert_eq!(status, 404, "{reply}");
    let (status, metrics) = server.request("GET", "/metrics", "");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("smelt_requests_failed_total 7"),
        "{metrics}"
    );
    assert!(server.stop().success());
}

#[test]
fn serve_refuses_what_it_cannot_serve() {
    let Some(model) = model() else { return };
    for args in [
        vec!["serve", "examples/gpt.smelt"],
        vec!["serve", &model, "--device", "cuda"],
        vec!["serve", &model, "--parallel", "0"],
        vec!["serve", &model, "--grace", "-1"],
        vec!["serve", "no/such/model.gguf"],
    ] {
        let message = expect_user_error(&smelt(&args));
        assert!(!message.is_empty(), "{args:?}");
    }
}
