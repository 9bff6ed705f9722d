//! Fuzz target `edit`: the editor's contract on any message.
//!
//! The first five bytes of the input choose edits (push or pop a Via, set or remove a
//! Via parameter, replace the Request-URI, insert, remove or replace a header, set a
//! From tag and a Request-URI parameter, replace the body); the rest is the message. New
//! text comes from fixed valid values. When the message parses and `finish` succeeds,
//! the output must be exactly one message that parses again as a datagram, with a
//! Content-Length equal to its body length; with no edit it must be the input itself
//! (bar a Content-Length made canonical or added).
//!
//! The output is parsed with limits large enough that the edits' own growth (more
//! headers, a longer URI) is never what refuses it.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sipwall_sip::{EditError, Editor, Framing, HeaderName, Limits, Message, Position};

const VIA: &[u8] = b"SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-sipwall;rport";
const VIA_PARAMS: [(&[u8], Option<&[u8]>); 5] = [
    (b"received", Some(b"192.0.2.7")),
    (b"rport", Some(b"5060")),
    (b"rport", None),
    (b"x-sipwall", Some(b"1")),
    (b"maddr", Some(b"[2001:db8::9]")),
];
const REMOVED_PARAMS: [&[u8]; 4] = [b"received", b"rport", b"branch", b"x-sipwall"];
const URIS: [&[u8]; 2] = [
    b"sip:alice@example.com;transport=tcp",
    b"sips:[2001:db8::1]:5061",
];
const HEADERS: [(&[u8], &[u8]); 3] = [
    (b"X-Sipwall", b"edited"),
    (b"Record-Route", b"<sip:edge.example.com;lr>"),
    (b"Subject", b""),
];
const VALUES: [&[u8]; 3] = [b"replaced", b"", b"<sip:x@example.com>;tag=1"];
const BODIES: [&[u8]; 3] = [b"", b"v=0\r\n", b"\r\n\r\n"];

/// Large enough that edits never push the output over a limit.
const RELAXED: Limits = Limits {
    max_message_size: 1 << 20,
    max_headers: 1 << 12,
    max_line_length: 1 << 20,
    max_uri_length: 1 << 20,
};

/// An edit may be refused (no such header, not a request, overlapping), but never for
/// its text, which is valid, nor because a slice from an accessor is not in the message.
fn allowed(result: Result<(), EditError>) {
    assert_ne!(
        result,
        Err(EditError::NotInMessage),
        "accessor slice outside the message"
    );
    assert_ne!(result, Err(EditError::BadText), "valid text refused");
    assert_ne!(
        result,
        Err(EditError::BadHeaderName),
        "valid header name refused"
    );
}

fn edit(msg: &Message<'_>, ctl: [u8; 5], editor: &mut Editor) {
    let n = msg.header_count();
    // Edits must not touch Content-Length (the editor's rule): skip it.
    let editable = |i: usize| {
        msg.header_at(i)
            .is_some_and(|header| header.name != HeaderName::ContentLength)
    };
    if ctl[0] & 0x01 != 0 {
        allowed(editor.push_via(msg, VIA));
    }
    if ctl[0] & 0x02 != 0 {
        allowed(editor.pop_via(msg));
    }
    if let Some(Ok(via)) = msg.top_via() {
        if ctl[0] & 0x04 != 0 {
            let (name, value) = VIA_PARAMS[usize::from(ctl[1] & 7) % VIA_PARAMS.len()];
            allowed(editor.set_param(msg, via.params, name, value));
        }
        if ctl[0] & 0x08 != 0 {
            let name = REMOVED_PARAMS[usize::from(ctl[1] >> 3) % REMOVED_PARAMS.len()];
            allowed(editor.remove_param(msg, via.params, name));
        }
    }
    if ctl[0] & 0x10 != 0 {
        let result = editor.replace_request_uri(msg, URIS[usize::from(ctl[4] & 1)]);
        assert_eq!(result.is_ok(), msg.is_request());
    }
    if ctl[0] & 0x20 != 0 {
        let index = usize::from(ctl[2]) % (n + 1);
        let position = match (ctl[4] >> 1) & 3 {
            0 => Position::First,
            1 => Position::Last,
            2 => Position::Before(index),
            _ => Position::After(index),
        };
        let (name, value) = HEADERS[usize::from(ctl[4] >> 3) % HEADERS.len()];
        let result = editor.insert_header(msg, position, name, value);
        allowed(result);
        if index < n {
            assert!(result.is_ok(), "{result:?}");
        }
    }
    if ctl[0] & 0x40 != 0 && n > 0 && editable(usize::from(ctl[2]) % n) {
        allowed(editor.remove_header(msg, usize::from(ctl[2]) % n));
    }
    if ctl[0] & 0x80 != 0 && n > 0 && editable(usize::from(ctl[3]) % n) {
        let value = VALUES[usize::from(ctl[4] >> 5) % VALUES.len()];
        allowed(editor.replace_header_value(msg, usize::from(ctl[3]) % n, value));
    }
    if ctl[1] & 0x40 != 0 {
        if let Some(Ok(from)) = msg.from() {
            allowed(editor.set_param(msg, from.params, b"tag", Some(b"sipwall")));
        }
        if let Some(Ok(uri)) = msg.request_uri() {
            allowed(editor.set_param(msg, uri.params, b"lr", None));
        }
    }
    if ctl[1] & 0x80 != 0 {
        editor.set_body(BODIES[usize::from(ctl[3] >> 6) % BODIES.len()]);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((ctl, input)) = data.split_first_chunk::<5>() else {
        return;
    };
    let Ok(msg) = Message::parse(input, Framing::Datagram, &Limits::default()) else {
        return;
    };
    let mut editor = Editor::new();
    edit(&msg, *ctl, &mut editor);
    let no_edits = editor.is_empty();
    let mut out = Vec::new();
    if editor.finish(&msg, &mut out).is_err() {
        return;
    }
    let edited = match Message::parse(&out, Framing::Datagram, &RELAXED) {
        Ok(edited) => edited,
        Err(error) => panic!(
            "edited message does not parse ({error}):\n{:?}\nedited from:\n{:?}",
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(msg.as_bytes())
        ),
    };
    assert_eq!(
        edited.as_bytes().len(),
        out.len(),
        "output is not exactly one message"
    );
    assert_eq!(edited.content_length(), Some(edited.body().len()));
    let canonical_length = msg
        .header(HeaderName::ContentLength)
        .is_some_and(|header| header.value == msg.body().len().to_string().as_bytes());
    if no_edits && canonical_length {
        assert_eq!(
            out,
            msg.as_bytes(),
            "an editor without edits changed the message"
        );
    }
});
