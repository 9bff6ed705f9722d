//! End-to-end tests of the `sipwall inspect` command: the real binary on real messages.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::process::{Command, Stdio};

fn vector(name: &str) -> String {
    format!(
        "{}/../sip/tests/data/rfc4475/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn inspect(args: &[&str]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_sipwall"))
        .arg("inspect")
        .args(args)
        .output()
        .unwrap();
    (
        output.status.code().unwrap(),
        String::from_utf8(output.stdout).unwrap(),
    )
}

#[test]
fn valid_message_is_forwarded() {
    let (code, out) = inspect(&[&vector("wsinv.dat")]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("request: INVITE sip:vivekg@chair-dnrc.example.com;unknownparam"));
    assert!(out.contains("top via: UDP 192.0.2.2 branch=390skdjuw"));
    assert!(out.ends_with("verdict: forward\n"));
}

#[test]
fn parser_rejection_names_the_rule() {
    let (code, out) = inspect(&[&vector("mcl01.dat")]);
    assert_eq!(code, 1);
    assert!(
        out.contains("verdict: refuse (parser: more than one Content-Length"),
        "{out}"
    );
}

#[test]
fn sanity_rejection_gives_the_status() {
    let (code, out) = inspect(&[&vector("zeromf.dat")]);
    assert_eq!(code, 1);
    assert!(out.contains("verdict: refuse (sanity MaxForwards"), "{out}");
    assert!(out.contains("answer: 483"), "{out}");
    let (code, out) = inspect(&[&vector("bcast.dat")]);
    assert_eq!(code, 1);
    assert!(out.contains("answer: drop"), "{out}");
}

#[test]
fn reads_standard_input_and_stream_framing() {
    let message = b"OPTIONS sip:a@example.com SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\n\
From: <sip:b@example.com>;tag=1\r\nTo: <sip:a@example.com>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n\r\n";
    let run = |args: &[&str]| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sipwall"))
            .arg("inspect")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(message).unwrap();
        let output = child.wait_with_output().unwrap();
        (
            output.status.code().unwrap(),
            String::from_utf8(output.stdout).unwrap(),
        )
    };
    assert_eq!(run(&[]).0, 0);
    let (code, out) = run(&["--stream"]);
    assert_eq!(code, 1);
    assert!(out.contains("missing Content-Length"), "{out}");
}

#[test]
fn missing_file_is_a_usage_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_sipwall"))
        .args(["inspect", "/nonexistent/message.sip"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("reading /nonexistent/message.sip"));
}
