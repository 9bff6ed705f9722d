//! Every rule and every action, driven with a simulated clock.

use super::*;
use sipwall_sip::{Framing, Limits, Sanity};

const SEED: [u8; 16] = *b"0123456789abcdef";
const PHONE: &str = "203.0.113.10";

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn engine(toml_text: &str) -> Engine {
    let config: PolicyConfig = toml::from_str(toml_text).unwrap();
    Engine::new(&config, &[ip("10.0.0.5")], SEED)
}

/// A request with the given extra headers and From tag.
fn request(method: &str, user: &str, extra: &str) -> String {
    let ruri = if method == "REGISTER" {
        "sip:example.com".to_string()
    } else {
        format!("sip:{user}@example.com")
    };
    format!(
        "{method} {ruri} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 203.0.113.10:5060;branch=z9hG4bK-{user}-{method}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{user}@example.com>;tag=as8f3c\r\n\
         To: <sip:{user}@example.com>\r\n\
         Call-ID: call-{user}-{method}\r\n\
         CSeq: 1 {method}\r\n\
         {extra}\
         Content-Length: 0\r\n\r\n"
    )
}

/// Runs the pipeline on `text` from `source` at `now`.
fn check(engine: &mut Engine, text: &str, source: &str, now: Millis) -> Verdict {
    let msg = Message::parse(text.as_bytes(), Framing::Datagram, &Limits::default()).unwrap();
    let checked = Sanity::new().check(&msg).unwrap();
    match engine.admit(ip(source), now) {
        Verdict::Pass => engine.check_request(&msg, &checked, ip(source), now),
        other => other,
    }
}

fn answer<'a>(
    source: &str,
    method: Method<'a>,
    status: u16,
    credentials: Option<&'a [u8]>,
    call_id: &'a [u8],
) -> Answer<'a> {
    Answer {
        source: ip(source),
        method,
        status,
        reason: b"",
        call_id,
        credentials,
        initial: true,
        challenge: None,
    }
}

fn events(engine: &mut Engine) -> Vec<Event> {
    let mut out = Vec::new();
    engine.drain_events(&mut out);
    out
}

fn counters(engine: &Engine, rule: Rule) -> RuleCounters {
    engine.counters().rules[rule.index()]
}

#[test]
fn an_ordinary_register_passes() {
    let mut e = engine("");
    let r = request("REGISTER", "1001", "User-Agent: Yealink SIP-T46S\r\n");
    assert_eq!(check(&mut e, &r, PHONE, 0), Verdict::Pass);
    assert_eq!(e.counters().passed, 1);
    assert!(events(&mut e).is_empty());
}

#[test]
fn scanner_user_agents_ban_the_source_and_later_packets_are_dropped_unparsed() {
    let mut e = engine("");
    let r = request("OPTIONS", "100", "User-Agent: friendly-scanner\r\n");
    assert_eq!(check(&mut e, &r, PHONE, 1000), Verdict::Drop);
    let ev = events(&mut e);
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].rule, Rule::ScannerAgent);
    assert!(
        ev[0].reason.contains("friendly-scanner"),
        "{}",
        ev[0].reason
    );
    assert_eq!(
        ev[0].taken,
        Taken::Banned {
            until: 1000 + 1_800_000,
            offences: 1
        }
    );
    // The next packet is refused before parsing, and counted on the ban.
    assert_eq!(e.admit(ip(PHONE), 2000), Verdict::Drop);
    assert_eq!(e.ban_of(e.key(ip(PHONE))).unwrap().hits, 1);
    assert_eq!(e.counters().banned_packets, 1);
    // An ordinary phone elsewhere is untouched.
    assert_eq!(e.admit(ip("203.0.113.11"), 2000), Verdict::Pass);
}

#[test]
fn scanner_names_are_found_in_every_place_tools_put_them() {
    let cases = ["User-Agent: sipcli/v1.8\r\n", "Server: sipsak 0.9.6\r\n"];
    for extra in cases {
        let mut e = engine("");
        assert_eq!(
            check(&mut e, &request("OPTIONS", "100", extra), PHONE, 0),
            Verdict::Drop,
            "{extra}"
        );
    }
    // svmap's From display name, whatever its User-Agent says.
    let mut e = engine("");
    let r = request("OPTIONS", "100", "User-Agent: Yealink\r\n").replace(
        "From: <sip:100@example.com>",
        "From: \"sipvicious\"<sip:100@example.com>",
    );
    assert_eq!(check(&mut e, &r, PHONE, 0), Verdict::Drop);
}

#[test]
fn the_sipvicious_tag_gives_the_tool_away_with_any_user_agent() {
    let mut e = engine("");
    let tag: String = b"1001\x011234567"
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let r = request("REGISTER", "1001", "User-Agent: Yealink SIP-T46S\r\n")
        .replace("tag=as8f3c", &format!("tag={tag}"));
    assert_eq!(check(&mut e, &r, PHONE, 0), Verdict::Drop);
    assert_eq!(events(&mut e)[0].rule, Rule::ToolFingerprint);
}

#[test]
fn sql_injection_is_judged_per_grammar() {
    let mut e = engine("");
    let honest = request("INVITE", "1001", "").replace(
        "From: <sip:1001@example.com>",
        "From: \"O'Reilly\" <sip:1001@example.com>",
    );
    assert_eq!(check(&mut e, &honest, PHONE, 0), Verdict::Pass);
    let attack = request(
        "REGISTER",
        "1001",
        "Authorization: Digest username=\"1001' or '1'='1\", realm=\"example.com\", nonce=\"n\", uri=\"sip:example.com\", response=\"0123456789abcdef0123456789abcdef\"\r\n",
    );
    assert_eq!(check(&mut e, &attack, PHONE, 10), Verdict::Drop);
    let ev = events(&mut e);
    assert_eq!(ev[0].rule, Rule::SqlInjection);
    assert!(ev[0].reason.contains("digest user name"));
}

#[test]
fn a_record_route_that_does_not_name_the_sender_is_spoofed() {
    let mut e = engine("");
    let own = request("INVITE", "1001", "Record-Route: <sip:203.0.113.10;lr>\r\n");
    assert_eq!(check(&mut e, &own, PHONE, 0), Verdict::Pass);
    let spoofed = request("INVITE", "1001", "Record-Route: <sip:198.51.100.66;lr>\r\n");
    assert_eq!(check(&mut e, &spoofed, PHONE, 0), Verdict::Drop);
    assert_eq!(events(&mut e)[0].rule, Rule::RouteSpoof);
    // Dropped, not banned: the phone may be misconfigured.
    assert_eq!(e.admit(ip(PHONE), 1), Verdict::Pass);
}

#[test]
fn acls_allow_and_deny_networks() {
    let mut e = engine("[acl]\nallow = [\"203.0.113.0/24\"]\ndeny = [\"203.0.113.66/32\"]\n");
    let r = request("OPTIONS", "1001", "");
    assert_eq!(check(&mut e, &r, PHONE, 0), Verdict::Pass);
    assert_eq!(check(&mut e, &r, "203.0.113.66", 0), Verdict::Drop);
    assert_eq!(check(&mut e, &r, "198.51.100.1", 0), Verdict::Drop);
    assert_eq!(counters(&e, Rule::Acl).enforced, 2);
}

#[test]
fn method_acls_answer_405() {
    let mut e = engine("[[acl.method]]\nmethod = \"MESSAGE\"\ndeny = [\"0.0.0.0/0\"]\n");
    assert_eq!(
        check(&mut e, &request("MESSAGE", "1001", ""), PHONE, 0),
        Verdict::Reply(405)
    );
    assert_eq!(
        check(&mut e, &request("INVITE", "1001", ""), PHONE, 0),
        Verdict::Pass
    );
}

#[test]
fn extension_acls_follow_asterisk_permit_and_deny() {
    let mut e = engine(
        "[[acl.extension]]\nuser = \"1001\"\ndeny = [\"0.0.0.0/0\"]\npermit = [\"203.0.113.0/24\"]\n",
    );
    assert_eq!(
        check(&mut e, &request("REGISTER", "1001", ""), PHONE, 0),
        Verdict::Pass
    );
    assert_eq!(
        check(&mut e, &request("REGISTER", "1001", ""), "198.51.100.7", 0),
        Verdict::Drop
    );
    assert_eq!(
        check(&mut e, &request("REGISTER", "1002", ""), "198.51.100.7", 0),
        Verdict::Pass
    );
}

#[test]
fn domains_and_ip_literals() {
    let mut e = engine("[acl]\ndomains = [\"example.com\"]\nreject_ip_literal = true\n");
    e.set_own_addresses(&[ip("192.0.2.1")]);
    assert_eq!(
        check(&mut e, &request("INVITE", "1001", ""), PHONE, 0),
        Verdict::Pass
    );
    let other = request("INVITE", "1001", "")
        .replace("INVITE sip:1001@example.com", "INVITE sip:1001@example.org");
    assert_eq!(check(&mut e, &other, PHONE, 0), Verdict::Drop);
    let literal = request("INVITE", "1001", "").replace(
        "INVITE sip:1001@example.com",
        "INVITE sip:1001@198.51.100.1",
    );
    assert_eq!(check(&mut e, &literal, PHONE, 0), Verdict::Drop);
    let ours = request("INVITE", "1001", "")
        .replace("INVITE sip:1001@example.com", "INVITE sip:1001@192.0.2.1");
    assert_eq!(check(&mut e, &ours, PHONE, 0), Verdict::Pass);
    assert_eq!(counters(&e, Rule::Domain).enforced, 2);
}

#[test]
fn a_flood_is_banned_at_the_density_limit() {
    let mut e = engine("[flood]\nrequests = 30\nwindow_seconds = 2\n");
    let r = request("OPTIONS", "1001", "");
    for i in 0..30 {
        assert_eq!(
            check(&mut e, &r, PHONE, i * 10),
            Verdict::Pass,
            "request {i}"
        );
    }
    assert_eq!(check(&mut e, &r, PHONE, 300), Verdict::Drop);
    assert_eq!(events(&mut e)[0].rule, Rule::Flood);
    // A quiet source is not affected.
    assert_eq!(check(&mut e, &r, "203.0.113.11", 300), Verdict::Pass);
}

#[test]
fn a_steady_rate_under_the_limit_is_never_banned() {
    let mut e = engine("[flood]\nrequests = 30\nwindow_seconds = 2\n");
    let r = request("OPTIONS", "1001", "");
    // 12 per second for a minute: 24 per window.
    for i in 0..720u64 {
        assert_eq!(
            check(&mut e, &r, PHONE, i * 83),
            Verdict::Pass,
            "request {i}"
        );
    }
}

#[test]
fn register_and_invite_windows_drop_the_excess_without_banning() {
    let mut e = engine("");
    for i in 0..6 {
        let r = request("REGISTER", &format!("10{i}"), "");
        assert_eq!(check(&mut e, &r, PHONE, i * 1000), Verdict::Pass);
    }
    let r = request("REGISTER", "107", "");
    assert_eq!(check(&mut e, &r, PHONE, 7000), Verdict::Drop);
    assert_eq!(events(&mut e)[0].rule, Rule::RegisterRate);
    assert_eq!(e.admit(ip(PHONE), 7001), Verdict::Pass, "not banned");
    // A minute later the window has moved on.
    assert_eq!(check(&mut e, &r, PHONE, 130_000), Verdict::Pass);
    // In-dialog requests do not count.
    let mut e = engine("");
    let in_dialog = request("INVITE", "1001", "").replace(
        "To: <sip:1001@example.com>",
        "To: <sip:1001@example.com>;tag=x",
    );
    for i in 0..20 {
        assert_eq!(check(&mut e, &in_dialog, PHONE, i), Verdict::Pass);
    }
}

#[test]
fn authenticated_sources_get_an_allowance_per_agent() {
    let mut e = engine("");
    // Forty phones behind one address have registered.
    for n in 0..40 {
        let user = format!("{}", 2000 + n);
        let a = answer(PHONE, Method::Register, 200, Some(user.as_bytes()), b"c");
        e.observe_response(&a, 0);
    }
    assert_eq!(e.tier(ip(PHONE), 1), Tier::Authenticated(40));
    // They all re-register at once, challenge and answer: 80 REGISTERs in a second.
    let mut now = 1000;
    for n in 0..40 {
        let user = format!("{}", 2000 + n);
        let plain = request("REGISTER", &user, "");
        assert_eq!(check(&mut e, &plain, PHONE, now), Verdict::Pass);
        let auth = request(
            "REGISTER",
            &user,
            &format!(
                "Authorization: Digest username=\"{user}\", realm=\"example.com\", nonce=\"n\", uri=\"sip:example.com\", response=\"0123456789abcdef0123456789abcdef\"\r\n"
            ),
        );
        assert_eq!(check(&mut e, &auth, PHONE, now + 5), Verdict::Pass);
        now += 10;
    }
    assert!(events(&mut e).is_empty());
    // Trust ends after its time.
    assert_eq!(e.tier(ip(PHONE), 86_400_001), Tier::Unknown);
}

#[test]
fn admin_networks_and_trusted_peers_pass_everything_and_are_never_banned() {
    let mut e =
        engine("admin_networks = [\"192.0.2.0/24\"]\ntrusted_peers = [\"198.51.100.9/32\"]\n");
    let scanner = request("OPTIONS", "100", "User-Agent: friendly-scanner\r\n");
    assert_eq!(check(&mut e, &scanner, "192.0.2.4", 0), Verdict::Pass);
    assert_eq!(check(&mut e, &scanner, "198.51.100.9", 0), Verdict::Pass);
    for source in ["192.0.2.4", "198.51.100.9", "10.0.0.5"] {
        let key = e.key(ip(source));
        assert_eq!(
            e.ban(key, "by hand", None, 0),
            Err(BanRefused::Protected),
            "{source}"
        );
        for i in 0..10 {
            let a = answer(source, Method::Register, 401, Some(b"1001"), b"x");
            e.observe_response(&a, i);
        }
        assert_eq!(e.admit(ip(source), 20), Verdict::Pass, "{source}");
    }
}

#[test]
fn three_failed_authentications_ban_the_source() {
    let mut e = engine("");
    for i in 0..2 {
        let a = answer(PHONE, Method::Register, 401, Some(b"1001"), b"c1");
        assert_eq!(e.observe_response(&a, i * 1000), AnswerVerdict::Forward);
        assert_eq!(e.admit(ip(PHONE), i * 1000 + 1), Verdict::Pass);
    }
    let a = answer(PHONE, Method::Register, 403, Some(b"1001"), b"c1");
    e.observe_response(&a, 2000);
    assert_eq!(e.admit(ip(PHONE), 2001), Verdict::Drop);
    let ev = events(&mut e);
    assert_eq!(ev[0].rule, Rule::AuthFailures);
    assert!(ev[0].reason.contains("3 failed"));
}

#[test]
fn failures_outside_the_window_do_not_add_up() {
    let mut e = engine("");
    for i in 0..10u64 {
        let a = answer(PHONE, Method::Register, 401, Some(b"1001"), b"c");
        e.observe_response(&a, i * 500_000);
        e.tick(i * 500_000);
    }
    assert_eq!(e.admit(ip(PHONE), 5_000_001), Verdict::Pass);
}

#[test]
fn failures_against_one_user_from_many_sources_ban_each_new_source() {
    let mut e = engine("");
    for n in 1..=4 {
        let source = format!("198.51.100.{n}");
        let a = answer(&source, Method::Register, 401, Some(b"1001"), b"c");
        e.observe_response(&a, n);
    }
    // The third and fourth failures of the user banned their sources.
    assert_eq!(e.admit(ip("198.51.100.1"), 10), Verdict::Pass);
    assert_eq!(e.admit(ip("198.51.100.2"), 10), Verdict::Pass);
    assert_eq!(e.admit(ip("198.51.100.3"), 10), Verdict::Drop);
    assert_eq!(e.admit(ip("198.51.100.4"), 10), Verdict::Drop);
    assert_eq!(counters(&e, Rule::UserFailures).enforced, 2);
}

#[test]
fn a_success_raises_trust_and_resets_the_users_failures() {
    let mut e = engine("");
    e.observe_response(
        &answer(PHONE, Method::Register, 401, Some(b"1001"), b"c"),
        0,
    );
    e.observe_response(
        &answer(PHONE, Method::Register, 200, Some(b"1001"), b"c"),
        10,
    );
    assert_eq!(e.tier(ip(PHONE), 11), Tier::Authenticated(1));
    assert_eq!(e.counters().auth_successes, 1);
}

#[test]
fn challenges_never_answered_ban_an_enumerator_but_not_a_phone() {
    let mut e = engine("");
    // A phone: challenged, answers at once with credentials in the same Call-ID.
    let plain = request("REGISTER", "1001", "");
    assert_eq!(check(&mut e, &plain, PHONE, 0), Verdict::Pass);
    e.observe_response(
        &answer(PHONE, Method::Register, 401, None, b"call-1001-REGISTER"),
        5,
    );
    let auth = request(
        "REGISTER",
        "1001",
        "Authorization: Digest username=\"1001\", realm=\"example.com\", nonce=\"n\", uri=\"sip:example.com\", response=\"0123456789abcdef0123456789abcdef\"\r\n",
    );
    assert_eq!(check(&mut e, &auth, PHONE, 50), Verdict::Pass);
    e.tick(60_000);
    assert_eq!(counters(&e, Rule::UnansweredChallenges).matched, 0);
    // svwar: a new Call-ID per extension, never an answer.
    let scanner = "198.51.100.20";
    for n in 0..5u64 {
        let call = format!("svwar-{n}");
        e.observe_response(
            &answer(scanner, Method::Register, 401, None, call.as_bytes()),
            100 + n,
        );
    }
    e.tick(5_000);
    assert_eq!(e.admit(ip(scanner), 5_001), Verdict::Pass, "not yet late");
    e.tick(9_000);
    assert_eq!(e.admit(ip(scanner), 9_001), Verdict::Drop);
    assert_eq!(counters(&e, Rule::UnansweredChallenges).enforced, 1);
}

#[test]
fn replies_that_reveal_an_extension_are_disguised_for_unknown_sources_only() {
    let mut e = engine("");
    let mut a = answer(PHONE, Method::Register, 404, None, b"c");
    assert_eq!(e.observe_response(&a, 0), AnswerVerdict::Disguise(401));
    a.method = Method::Invite;
    assert_eq!(e.observe_response(&a, 0), AnswerVerdict::Disguise(407));
    a.status = 480;
    a.reason = b"User Not Found";
    assert_eq!(e.observe_response(&a, 0), AnswerVerdict::Disguise(407));
    a.status = 486;
    a.reason = b"Busy Here";
    assert_eq!(e.observe_response(&a, 0), AnswerVerdict::Forward);
    // In-dialog answers are left alone.
    let mut in_dialog = answer(PHONE, Method::Bye, 404, None, b"c");
    in_dialog.initial = false;
    assert_eq!(e.observe_response(&in_dialog, 0), AnswerVerdict::Forward);
    // An authenticated phone calling a missing number gets the truth.
    e.observe_response(
        &answer(PHONE, Method::Register, 200, Some(b"1001"), b"c"),
        1,
    );
    let a = answer(PHONE, Method::Invite, 404, None, b"c");
    assert_eq!(e.observe_response(&a, 2), AnswerVerdict::Forward);
    assert_eq!(e.counters().disguised, 3);
}

#[test]
fn a_disguised_404_with_credentials_counts_as_a_failure() {
    let mut e = engine("");
    for i in 0..3 {
        let a = answer(PHONE, Method::Register, 404, Some(b"9999"), b"c");
        assert_eq!(e.observe_response(&a, i), AnswerVerdict::Disguise(401));
    }
    assert_eq!(e.admit(ip(PHONE), 10), Verdict::Drop);
}

#[test]
fn the_disguise_replays_the_upstreams_challenge_with_a_fresh_nonce() {
    let mut e = engine("");
    let mut out = Vec::new();
    e.write_challenge(b"example.com", &mut out);
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.starts_with("Digest realm=\"example.com\", nonce=\""),
        "{text}"
    );
    let challenge =
        b"Digest realm=\"example.com\", nonce=\"Z2hL5mC1n7Vq0bFi3xk8Wd4Eo6Ap9Rt2\", qop=\"auth\"";
    let mut a = answer(PHONE, Method::Register, 401, None, b"c");
    a.challenge = Some(challenge);
    e.observe_response(&a, 0);
    let (mut one, mut two) = (Vec::new(), Vec::new());
    e.write_challenge(b"ignored", &mut one);
    e.write_challenge(b"ignored", &mut two);
    assert_eq!(one.len(), challenge.len());
    assert_ne!(one, two, "each nonce is new");
    let one = String::from_utf8(one).unwrap();
    assert!(one.starts_with("Digest realm=\"example.com\", nonce=\""));
    assert!(one.ends_with("\", qop=\"auth\""));
    assert_ne!(one.as_bytes(), &challenge[..]);
    // Hexadecimal nonces stay hexadecimal; cnonce is not taken for the nonce.
    assert_eq!(
        nonce_range(b"Digest cnonce=\"x\", nonce=\"ab12\""),
        Some((26, 30))
    );
    let mut hex = Vec::new();
    fresh_nonce(b"0a1b2c3d4e5f", 7, &mut hex);
    assert!(hex.iter().all(u8::is_ascii_hexdigit) && hex.len() == 12);
}

#[test]
fn disguised_nonces_keep_what_the_upstreams_nonces_share() {
    let mut e = engine("");
    // Kamailio's nonces begin with a timestamp: consecutive ones share a prefix.
    for nonce in [
        "awIrv2mfQAAAAL9vXn1Z8k2bJYqT",
        "awIrv3BnQAAAAGfT0k9LpQ7sWxYe",
    ] {
        let challenge = format!("Digest realm=\"example.com\", nonce=\"{nonce}\"");
        let mut a = answer(PHONE, Method::Register, 401, None, b"c");
        a.challenge = Some(challenge.as_bytes());
        e.observe_response(&a, 0);
    }
    let mut out = Vec::new();
    e.write_challenge(b"", &mut out);
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.starts_with("Digest realm=\"example.com\", nonce=\"awIrv"),
        "{text}"
    );
    assert_eq!(
        text.len(),
        "Digest realm=\"example.com\", nonce=\"awIrv2mfQAAAAL9vXn1Z8k2bJYqT\"".len()
    );
    assert!(
        !text.contains("awIrv2mf") && !text.contains("awIrv3Bn"),
        "{text}"
    );
}

#[test]
fn shadow_mode_counts_and_reports_without_enforcing() {
    let mut e = engine("[rules.scanner_agent]\nshadow = true\n");
    let r = request("OPTIONS", "100", "User-Agent: friendly-scanner\r\n");
    assert_eq!(check(&mut e, &r, PHONE, 0), Verdict::Pass);
    let c = counters(&e, Rule::ScannerAgent);
    assert_eq!((c.matched, c.enforced, c.shadowed), (1, 0, 1));
    assert_eq!(events(&mut e)[0].taken, Taken::Shadowed);
    assert_eq!(e.admit(ip(PHONE), 1), Verdict::Pass);
}

#[test]
fn each_action_can_be_chosen_per_rule() {
    let r = request("OPTIONS", "100", "User-Agent: friendly-scanner\r\n");
    let mut e = engine("[rules.scanner_agent]\naction = \"drop\"\n");
    assert_eq!(check(&mut e, &r, PHONE, 0), Verdict::Drop);
    assert_eq!(e.admit(ip(PHONE), 1), Verdict::Pass, "drop does not ban");
    let mut e = engine("[rules.scanner_agent]\naction = \"reply\"\ncode = 404\n");
    assert_eq!(check(&mut e, &r, PHONE, 0), Verdict::Reply(404));
    let mut e = engine("[rules.scanner_agent]\naction = \"tarpit\"\ncode = 486\n");
    assert_eq!(
        check(&mut e, &r, PHONE, 0),
        Verdict::Tarpit {
            code: 486,
            delay: TARPIT_DELAY
        }
    );
    let mut e = engine("[rules.scanner_agent]\naction = \"honeypot\"\n");
    assert_eq!(check(&mut e, &r, PHONE, 0), Verdict::Honeypot);
    // Everything it sends afterwards goes to the honeypot, even an innocent request.
    assert_eq!(
        check(&mut e, &request("REGISTER", "1001", ""), PHONE, 10),
        Verdict::Honeypot
    );
    let mut e = engine("[rules.scanner_agent]\nenabled = false\n");
    assert_eq!(check(&mut e, &r, PHONE, 0), Verdict::Pass);
}

#[test]
fn bans_grow_for_repeat_offenders_and_end() {
    let mut e = engine("[ban]\nttl_seconds = 60\ngrowth = 4\nmax_ttl_seconds = 600\n");
    let r = request("OPTIONS", "100", "User-Agent: friendly-scanner\r\n");
    let mut now = 0;
    let mut ttls = Vec::new();
    for _ in 0..3 {
        assert_eq!(check(&mut e, &r, PHONE, now), Verdict::Drop);
        let ban = e.ban_of(e.key(ip(PHONE))).unwrap().clone();
        ttls.push((ban.until - now) / 1000);
        now = ban.until;
        e.tick(now);
        assert_eq!(e.admit(ip(PHONE), now), Verdict::Pass);
    }
    assert_eq!(ttls, [60, 240, 600]);
    let ended: Vec<Taken> = events(&mut e).into_iter().map(|ev| ev.taken).collect();
    assert_eq!(ended.iter().filter(|t| **t == Taken::Expired).count(), 3);
}

#[test]
fn manual_bans_and_unbans() {
    let mut e = engine("");
    let key = SourceKey::parse("2001:db8:5::/64", 64).unwrap();
    let ban = e.ban(key, "seen in the logs", Some(5000), 0).unwrap();
    assert_eq!(ban.until, 5000);
    // Any address of the /64 is banned.
    assert_eq!(e.admit(ip("2001:db8:5::77"), 1), Verdict::Drop);
    assert_eq!(e.bans(1).count(), 1);
    assert!(e.unban(key, 2));
    assert_eq!(e.admit(ip("2001:db8:5::77"), 3), Verdict::Pass);
    assert!(!e.unban(key, 4));
    let taken: Vec<Taken> = events(&mut e).into_iter().map(|ev| ev.taken).collect();
    assert_eq!(
        taken,
        [
            Taken::Banned {
                until: 5000,
                offences: 1
            },
            Taken::Unbanned
        ]
    );
}

#[test]
fn restored_bans_hold_as_they_were_and_protected_sources_are_refused() {
    let mut e = engine("admin_networks = [\"198.51.100.0/24\"]\n");
    let key = SourceKey::parse("192.0.2.9", 64).unwrap();
    let ban = Ban {
        source: key,
        rule: Rule::AuthFailures,
        reason: "3 failures".into(),
        since: 0,
        until: 9_000,
        hits: 0,
        offences: 2,
        kind: BanKind::Drop,
    };
    e.restore(ban.clone()).unwrap();
    assert_eq!(e.admit(ip("192.0.2.9"), 8_999), Verdict::Drop);
    assert_eq!(e.admit(ip("192.0.2.9"), 9_000), Verdict::Pass);
    // Restoring makes no event: the ban is on disk and in the kernel already.
    assert!(events(&mut e).iter().all(|ev| ev.taken == Taken::Expired));
    // The next ban of the source grows from the restored offences.
    let next = e.ban(key, "again", None, 10_000).unwrap();
    assert_eq!(next.offences, 3);
    let admin = SourceKey::parse("198.51.100.7", 64).unwrap();
    assert_eq!(
        e.restore(Ban {
            source: admin,
            ..ban
        }),
        Err(BanRefused::Protected)
    );
}

#[test]
fn a_reload_that_protects_a_banned_source_lifts_its_ban_with_an_event() {
    let mut e = engine("");
    let key = SourceKey::parse("192.0.2.9", 64).unwrap();
    e.ban(key, "manual", None, 0).unwrap();
    let recorded = e.events_recorded();
    let config: PolicyConfig = toml::from_str("admin_networks = [\"192.0.2.0/24\"]\n").unwrap();
    e.reconfigure(&config, &[ip("10.0.0.5")], &[]);
    assert_eq!(e.admit(ip("192.0.2.9"), 1), Verdict::Pass);
    let taken: Vec<Taken> = events(&mut e).into_iter().map(|ev| ev.taken).collect();
    assert_eq!(taken.last(), Some(&Taken::Unbanned));
    assert_eq!(e.events_recorded(), recorded + 1);
}

#[test]
fn offences_found_by_the_edge_use_their_rules() {
    let mut e = engine("");
    // Default: the edge answers as usual, the offence is counted.
    assert_eq!(e.offence(Rule::Malformed, ip(PHONE), "no CSeq", 0), None);
    assert_eq!(counters(&e, Rule::Malformed).matched, 1);
    let mut e = engine("[rules.bad_token]\naction = \"ban\"\n");
    assert_eq!(
        e.offence(Rule::BadToken, ip(PHONE), "forged token", 0),
        Some(Verdict::Drop)
    );
    assert_eq!(e.admit(ip(PHONE), 1), Verdict::Drop);
}

#[test]
fn memory_stays_bounded_under_many_sources() {
    let mut e = engine("");
    let r = request("REGISTER", "1001", "");
    let msg = Message::parse(r.as_bytes(), Framing::Datagram, &Limits::default()).unwrap();
    let checked = Sanity::new().check(&msg).unwrap();
    let sketch = e.sketch_memory();
    // Three times the capacity of the exact tables (the million-source figure is
    // measured by `bench/examples/million.rs`).
    for n in 0..200_000u32 {
        let source = IpAddr::from(std::net::Ipv4Addr::from(0x0A00_0000 | n));
        e.check_request(&msg, &checked, source, Millis::from(n / 200));
        // Each also fails to authenticate once.
        let call = n.to_le_bytes();
        e.observe_response(
            &Answer {
                source,
                method: Method::Register,
                status: 401,
                reason: b"",
                call_id: &call,
                credentials: None,
                initial: true,
                challenge: None,
            },
            Millis::from(n / 200),
        );
    }
    assert_eq!(e.sketch_memory(), sketch);
    assert!(
        e.table_entries() <= 6 * TABLE_CAPACITY,
        "{}",
        e.table_entries()
    );
    // None of them sent more than one request: nobody was banned.
    assert_eq!(e.bans(1000).count(), 0);
}

#[test]
fn rule_names_round_trip() {
    for rule in Rule::ALL {
        assert_eq!(Rule::from_name(rule.name()), Some(rule));
        assert_eq!(
            rule.index(),
            Rule::ALL.iter().position(|r| *r == rule).unwrap()
        );
    }
}
