//! The admin endpoint and `sipwall bans list|add|del` against a running sipwall: a ban
//! made by hand takes effect at once (the banned address gets no answer, its neighbour
//! does), protected addresses cannot be banned, and a wrong token is refused.

mod common;

use std::net::UdpSocket;
use std::process::{Command, Output};
use std::time::Duration;

use common::{UPSTREAM_IP, config, free_port, start_sipwall, work_dir};

const TOKEN: &str = "test-admin-token-0123456789";

fn bans(config_path: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sipwall"))
        .arg("bans")
        .arg("--config")
        .arg(config_path)
        .args(args)
        .output()
        .expect("run sipwall bans")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Sends an OPTIONS ping to the edge from `source`; true if it is answered.
fn answered(source: &str, public: u16) -> bool {
    let socket = UdpSocket::bind((source, 0)).expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_millis(700)))
        .expect("timeout");
    let me = socket.local_addr().expect("address");
    let ping = format!(
        "OPTIONS sip:127.0.0.1:{public} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:ops@example.com>;tag=1\r\nTo: <sip:127.0.0.1>\r\n\
         Call-ID: {}@admin\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        free_port(),
        free_port()
    );
    socket
        .send_to(ping.as_bytes(), ("127.0.0.1", public))
        .expect("send");
    let mut buf = [0u8; 4096];
    socket.recv_from(&mut buf).is_ok()
}

#[test]
fn bans_made_by_hand_take_effect_and_protected_addresses_cannot_be_banned() {
    let public = free_port();
    let admin = free_port();
    let upstream = free_port();
    let extra = format!(
        "[admin]\nlisten = \"127.0.0.1:{admin}\"\ntoken = \"{TOKEN}\"\n\
         [policy]\nadmin_networks = [\"127.0.0.200/32\"]\n"
    );
    let text_config = config(public, free_port(), upstream, &extra);
    let edge = start_sipwall(&work_dir("admin"), &text_config, public);
    let path = &edge.config_path;

    assert!(
        answered("127.0.0.5", public),
        "the edge answers pings before any ban"
    );
    let added = bans(
        path,
        &[
            "add",
            "127.0.0.5",
            "--ttl",
            "600",
            "--reason",
            "seen in the PBX log",
        ],
    );
    assert!(added.status.success(), "{}", text(&added));
    assert!(
        text(&added).contains("banned 127.0.0.5 for 600 s"),
        "{}",
        text(&added)
    );

    let listed = bans(path, &["list"]);
    let listing = text(&listed);
    assert!(listed.status.success(), "{listing}");
    assert!(
        listing.contains("127.0.0.5") && listing.contains("manual"),
        "{listing}"
    );
    assert!(
        listing.contains("seen in the PBX log") && listing.contains("1 active ban(s)"),
        "{listing}"
    );

    assert!(
        !answered("127.0.0.5", public),
        "a banned source gets nothing"
    );
    assert!(answered("127.0.0.6", public), "its neighbour is not banned");

    // IPv6 bans cover the source's /64.
    let v6 = bans(path, &["add", "2001:db8:1:2::99"]);
    assert!(v6.status.success(), "{}", text(&v6));
    assert!(text(&bans(path, &["list"])).contains("2001:db8:1:2::/64"));

    // Admin networks and the upstream are protected on every path.
    for protected in ["127.0.0.200", UPSTREAM_IP] {
        let refused = bans(path, &["add", protected]);
        assert_eq!(
            refused.status.code(),
            Some(1),
            "{protected}: {}",
            text(&refused)
        );
        assert!(text(&refused).contains("protected"), "{}", text(&refused));
    }
    let bad = bans(path, &["add", "not-an-address"]);
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));

    let lifted = bans(path, &["del", "127.0.0.5"]);
    assert!(lifted.status.success(), "{}", text(&lifted));
    assert!(answered("127.0.0.5", public), "the ban is lifted");
    let again = bans(path, &["del", "127.0.0.5"]);
    assert_eq!(again.status.code(), Some(1), "{}", text(&again));

    // A wrong token is refused.
    let wrong = edge.dir.join("wrong.toml");
    std::fs::write(
        &wrong,
        text_config.replace(TOKEN, "another-token-0123456789"),
    )
    .expect("write");
    let refused = bans(&wrong, &["list"]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(text(&refused).contains("401"), "{}", text(&refused));
}

#[test]
fn without_a_token_the_endpoint_is_off_and_the_cli_says_so() {
    let dir = work_dir("admin-off");
    let path = dir.join("sipwall.toml");
    std::fs::write(&path, config(free_port(), free_port(), free_port(), "")).expect("write");
    let output = bans(&path, &["list"]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(text(&output).contains("no token"), "{}", text(&output));
}
