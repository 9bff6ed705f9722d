//! Stateless routing of an edge proxy, without I/O: for each message, what to send where.
//!
//! The edge stands between phones (the public side) and one upstream PBX or proxy (the
//! inner side) and keeps no transaction or dialog state (RFC 3261 §16.11), so any node
//! holding the same key can handle any message, and a restart loses no call. What it
//! must remember travels inside the messages:
//!
//! - **Via**: a request gets the edge's Via on top, with a branch derived from the
//!   request (a retransmission or a CANCEL gets the same one) and, toward the upstream, a
//!   flow token saying where the response goes back to. The sender's Via gets
//!   `received`/`rport` (RFC 3581).
//! - **Contact masking**: a Contact from the public side is replaced by
//!   `sip:user@<inner address>;swc=<token>`, the token holding the phone's flow and its
//!   original Contact. Registrations and dialog targets then point at the edge, and the
//!   upstream's requests to a phone behind NAT come back through it. REGISTER responses
//!   show the phone its own Contacts again.
//! - **Record-Route**: dialog-creating requests get two Record-Route entries, one per
//!   side (RFC 5658), so in-dialog requests from either side pass the edge.
//! - **Topology hiding** ([`hide`](TopologyConfig)): toward phones, the inside's Via
//!   stack, Record-Route entries, Contacts, Call-IDs and addresses are masked, and
//!   restored from what phones send back; only the upstream may speak on the inner side.
//!
//! Every message from the public side also passes the security pipeline
//! ([`sipwall_policy::Engine`], shared by the workers): banned sources are refused
//! before their bytes are parsed, requests get the pipeline's verdict, and the
//! upstream's answers teach it who authenticates and who fails (the facts of the
//! request it needs travel in the edge's Via token, so this stays stateless).
//!
//! The runtime (`sipwall-net`) calls [`Edge::handle`] with the bytes, the side, the
//! peer's [`Flow`] and the time, and carries out the returned [`Action`].

mod hide;
mod reply;
mod siv;
mod token;

use std::hash::Hasher;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};

use siphasher::sip::SipHasher13;
use sipwall_policy::{Answer, AnswerVerdict, Engine, Millis, Rule, Verdict};
use sipwall_sip::{
    Checked, Contact, Editor, Framing, HeaderName, Limits, Message, Method, ParseError, Position,
    Rport, Sanity, SanityError, Uri, Via,
};

pub use hide::TopologyConfig;
pub use token::{BadToken, Flow, KEY_LEN, KeyId, Purpose, TokenCodec, Transport};

/// URI parameter of a masked Contact that holds its token.
const CONTACT_PARAM: &[u8] = b"swc";
/// Via parameter of the edge's own Via that holds the flow token.
const VIA_PARAM: &[u8] = b"swf";
/// Prefix of the branches the edge generates: the RFC 3261 magic cookie, then "sw".
const BRANCH_PREFIX: &[u8] = b"z9hG4bKsw";
/// Length of the edge's branches: the prefix, then 16 hexadecimal digits of the
/// transaction part and 16 of the loop part.
const BRANCH_LEN: usize = BRANCH_PREFIX.len() + 32;
/// A branch of the edge.
type Branch = [u8; BRANCH_LEN];
/// Flag in the Via token: the request carried credentials (its digest user name follows).
const HAD_CREDENTIALS: u8 = 1;
/// Flag in the Via token: the request was outside a dialog (no To tag).
const INITIAL: u8 = 2;
/// Flag in the Via token: the phone knows the Call-ID by a mask, which the response must
/// carry again (the identifier of its key follows the flags).
const CALL_ID_MASKED: u8 = 4;
/// Longest user name carried in a Via token (longer ones are cut: they are only
/// counted).
const MAX_TOKEN_USER: usize = 64;
/// Max-Forwards given to requests that have none (RFC 3261 §8.1.1.6).
const DEFAULT_MAX_FORWARDS: u8 = 70;

/// Which side of the edge a message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// From phones and the internet.
    Public,
    /// From the upstream PBX or proxy.
    Inner,
}

/// What the edge needs to know about its place in the network.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// The public listeners: phones send here, and public-side Via and Record-Route
    /// entries name them.
    pub public: Vec<(Transport, SocketAddr)>,
    /// The edge's address toward the upstream (UDP): masked Contacts and inner
    /// Record-Route entries point here.
    pub inner: SocketAddr,
    /// The upstream PBX or proxy (UDP).
    pub upstream: SocketAddr,
    /// The key of flow tokens, shared by every edge of a cluster.
    pub key: [u8; KEY_LEN],
    /// The previous key, still accepted during a rotation.
    pub previous_key: Option<[u8; KEY_LEN]>,
    /// Parser limits.
    pub limits: Limits,
    /// What is hidden from the public side.
    pub topology: TopologyConfig,
}

/// One message received.
#[derive(Debug, Clone, Copy)]
pub struct Inbound<'a> {
    /// The message (one datagram, or one message framed out of a stream).
    pub bytes: &'a [u8],
    /// Where it came from.
    pub side: Side,
    /// The peer it came from.
    pub flow: Flow,
    /// When it arrived, in milliseconds of the runtime's monotonic clock.
    pub now: Millis,
}

/// The security pipeline, shared by every worker of a process.
pub type SharedPolicy = Arc<Mutex<Engine>>;

/// Where a forwarded message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The upstream, from the inner socket.
    Upstream,
    /// A peer on the public side, by its flow (a UDP address, or a TCP/TLS connection).
    Peer(Flow),
}

/// Why a message was not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DropReason {
    /// The message could not be parsed.
    Malformed(ParseError),
    /// A message failed a sanity check and could not be answered (a response or ACK).
    Insane(SanityError),
    /// A response whose top Via is not the edge's.
    NotOurs,
    /// A flow token that does not open: forged, truncated, stale or foreign.
    BadToken,
    /// A message the edge cannot rewrite (an edit would be invalid).
    Unroutable,
    /// The source is banned.
    Banned,
    /// The security pipeline dropped it.
    Policy,
    /// A message on the inner side from an address other than the upstream's: the inner
    /// side trusts what it receives, so only the upstream may speak there.
    NotUpstream,
}

/// What to do with a message.
#[derive(Debug, PartialEq, Eq)]
pub enum Action<'e> {
    /// Send `bytes` to `to`.
    Forward {
        /// The destination.
        to: Target,
        /// The rewritten message.
        bytes: &'e [u8],
    },
    /// Send `bytes` back to the flow the message came from (a local answer).
    Reply {
        /// The response.
        bytes: &'e [u8],
    },
    /// Send `bytes` back to the flow the message came from, after `delay`
    /// milliseconds (a tarpit: the scanner waits for every answer).
    Tarpit {
        /// The response.
        bytes: &'e [u8],
        /// The delay.
        delay: Millis,
    },
    /// Send nothing.
    Drop(DropReason),
}

/// The routing state of one worker: configuration, keys and reused buffers.
pub struct Edge {
    config: EdgeConfig,
    codec: TokenCodec,
    branch_key: [u8; 16],
    /// The security pipeline.
    policy: SharedPolicy,
    sanity: Sanity,
    editor: Editor,
    /// The message being written.
    out: Vec<u8>,
    /// Text of one header value or URI being composed.
    text: Vec<u8>,
    /// Plaintext of a token being sealed.
    plain: Vec<u8>,
    /// A list of entries being composed (Record-Route, Route), or a masked URI.
    list: Vec<u8>,
    /// The Call-ID of the current message as the phone sees it (masked tokens are bound
    /// to it).
    call_id: Vec<u8>,
    /// The context a token is bound to.
    context: Vec<u8>,
    /// Finds the edge's branch prefix: built once, as building it costs more than a
    /// search through a Via.
    branch_finder: memchr::memmem::Finder<'static>,
    /// `SIP/2.0/UDP <inner address>;branch=`, the start of every Via the edge puts on a
    /// request toward the upstream, written once.
    inner_via_prefix: Vec<u8>,
}

impl std::fmt::Debug for Edge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Edge")
            .field("config", &self.config.public)
            .finish_non_exhaustive()
    }
}

impl Edge {
    /// A worker's edge for `config`, enforcing `policy`.
    pub fn new(config: EdgeConfig, policy: SharedPolicy) -> Self {
        let mut codec = TokenCodec::new(&config.key, config.previous_key.as_ref());
        let branch_key = codec.derive_branch_key();
        let mut inner_via_prefix = Vec::with_capacity(64);
        push_via_prefix(&mut inner_via_prefix, Transport::Udp, config.inner, b"");
        Edge {
            config,
            codec,
            branch_key,
            policy,
            sanity: Sanity::new(),
            editor: Editor::new(),
            out: Vec::with_capacity(4096),
            text: Vec::with_capacity(512),
            plain: Vec::with_capacity(512),
            list: Vec::with_capacity(512),
            call_id: Vec::with_capacity(128),
            context: Vec::with_capacity(128),
            branch_finder: memchr::memmem::Finder::new(BRANCH_PREFIX),
            inner_via_prefix,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &EdgeConfig {
        &self.config
    }

    /// Exchanges the buffer holding the bytes of the last [`Action`] (or of
    /// [`Edge::flow_failed`]) for `buffer`, which the edge clears and writes its next
    /// message into. A runtime that sends a batch of messages at once keeps them this
    /// way without copying them, and without allocating once its buffers have grown.
    pub fn swap_output(&mut self, buffer: &mut Vec<u8>) {
        std::mem::swap(&mut self.out, buffer);
        self.out.clear();
    }

    /// Decides what to do with one message.
    pub fn handle<'e>(&'e mut self, inbound: &Inbound<'_>) -> Action<'e> {
        let public = inbound.side == Side::Public;
        let source = inbound.flow.remote.ip();
        if !public && source != self.config.upstream.ip() {
            return Action::Drop(DropReason::NotUpstream);
        }
        // Banned sources cost one lookup, not a parse.
        let admitted = if public {
            lock(&self.policy).admit(source, inbound.now)
        } else {
            Verdict::Pass
        };
        if admitted == Verdict::Drop {
            return Action::Drop(DropReason::Banned);
        }
        let framing = if inbound.flow.transport.is_stream() {
            Framing::Stream
        } else {
            Framing::Datagram
        };
        // The parsed message (some 900 bytes) and what sanity hands over are read where
        // they were returned: moving them out of their `Result` would copy them.
        let parsed = Message::parse(inbound.bytes, framing, &self.config.limits);
        let msg = match &parsed {
            Ok(msg) => msg,
            Err(error) => {
                let error = *error;
                if public && self.offence(Rule::Malformed, source, &error.to_string(), inbound) {
                    return Action::Drop(DropReason::Policy);
                }
                return self.malformed(inbound.bytes, error);
            }
        };
        // Sanity hands over what it parsed: routing reads the top Via, From, To and
        // CSeq from there instead of parsing them again.
        let mut checked = Checked::default();
        let checked = match self.sanity.check_into(msg, &mut checked) {
            Ok(()) => &checked,
            Err(error) => {
                if public && self.offence(Rule::Malformed, source, &error.to_string(), inbound) {
                    return Action::Drop(DropReason::Policy);
                }
                return self.refuse(msg, error);
            }
        };
        if public && msg.is_request() {
            let verdict = if admitted == Verdict::Honeypot {
                Verdict::Honeypot
            } else {
                lock(&self.policy).check_request(msg, checked, source, inbound.now)
            };
            match verdict {
                Verdict::Pass => {}
                Verdict::Drop => return Action::Drop(DropReason::Policy),
                Verdict::Reply(code) => {
                    if msg.method() == Some(Method::Ack) {
                        return Action::Drop(DropReason::Policy);
                    }
                    self.write_reply(msg, code, b"");
                    return Action::Reply { bytes: &self.out };
                }
                Verdict::Tarpit { code, delay } => {
                    if msg.method() == Some(Method::Ack) {
                        return Action::Drop(DropReason::Policy);
                    }
                    self.write_reply(msg, code, b"");
                    return Action::Tarpit {
                        bytes: &self.out,
                        delay,
                    };
                }
                Verdict::Honeypot => return self.honeypot(msg),
            }
        }
        let routed = match (msg.is_request(), inbound.side) {
            (true, Side::Public) => self.request_from_public(msg, checked, inbound),
            (true, Side::Inner) => self.request_from_inner(msg, checked),
            (false, Side::Inner) => self.response_from_inner(msg, checked, inbound.now),
            (false, Side::Public) => self.response_from_public(msg, checked, inbound),
        };
        match routed {
            Ok(Routed::Forward(to)) => Action::Forward {
                to,
                bytes: &self.out,
            },
            Ok(Routed::Reply) => Action::Reply { bytes: &self.out },
            Err(reason) => Action::Drop(reason),
        }
    }

    /// Reports an offence to the pipeline; true if its verdict is to drop the message
    /// (otherwise it is answered or dropped the usual way).
    fn offence(&mut self, rule: Rule, source: IpAddr, reason: &str, inbound: &Inbound<'_>) -> bool {
        let verdict = lock(&self.policy).offence(rule, source, reason, inbound.now);
        matches!(verdict, Some(Verdict::Drop | Verdict::Honeypot))
    }

    /// A request from a phone carrying a masked value that does not open: an offence,
    /// then refused (481 for the Call-ID of a dialog the edge never masked, 403
    /// otherwise; nothing for an ACK).
    fn forged(
        &mut self,
        msg: &Message<'_>,
        checked: &Checked<'_>,
        forged: hide::Forged,
        inbound: &Inbound<'_>,
    ) -> Result<Routed, DropReason> {
        let reason = format!("forged masked {}", forged.what);
        if self.offence(Rule::BadToken, inbound.flow.remote.ip(), &reason, inbound) {
            return Err(DropReason::Policy);
        }
        if msg.method() == Some(Method::Ack) {
            return Err(DropReason::BadToken);
        }
        let in_dialog = checked.to.as_ref().is_some_and(|to| to.tag().is_some());
        let code = if forged.what == "Call-ID" && in_dialog {
            481
        } else {
            403
        };
        self.write_reply(msg, code, b"");
        Ok(Routed::Reply)
    }

    /// The honeypot's answer: a plausible success, so that a scanner believes what it
    /// found (a registration accepted, a call answered) and wastes its time on it.
    fn honeypot(&mut self, msg: &Message<'_>) -> Action<'_> {
        if msg.method() == Some(Method::Ack) {
            return Action::Drop(DropReason::Policy);
        }
        let mut extra = Vec::new();
        if let Some(contact) = msg.header(HeaderName::Contact) {
            extra.extend_from_slice(b"Contact: ");
            extra.extend_from_slice(contact.value);
            if msg.method() == Some(Method::Register) {
                extra.extend_from_slice(b";expires=3600");
            }
            extra.extend_from_slice(b"\r\n");
        }
        self.write_reply(msg, 200, &extra);
        Action::Reply { bytes: &self.out }
    }

    /// A 430 Flow Failed (RFC 5626) for a request the runtime could not deliver because
    /// the peer's connection is gone; `None` if the message was not a request.
    pub fn flow_failed(&mut self, request: &[u8], transport: Transport) -> Option<&[u8]> {
        let framing = if transport.is_stream() {
            Framing::Stream
        } else {
            Framing::Datagram
        };
        let msg = Message::parse(request, framing, &self.config.limits).ok()?;
        if !msg.is_request() || msg.method() == Some(Method::Ack) {
            return None;
        }
        self.write_reply(&msg, 430, b"");
        Some(&self.out)
    }

    /// A message that does not parse: answered 400 if its head parses and it is a
    /// request that gets answers (the body could not be framed), dropped otherwise.
    /// Never forwarded either way.
    fn malformed(&mut self, bytes: &[u8], error: ParseError) -> Action<'_> {
        let head = match Message::parse_head(bytes, &self.config.limits) {
            Ok(head) => head,
            Err(_) => return Action::Drop(DropReason::Malformed(error)),
        };
        let answerable = head.is_request()
            && head.method() != Some(Method::Ack)
            && head.top_via().is_some_and(|via| via.is_ok())
            && head.call_id().is_some()
            && head.cseq().is_some_and(|cseq| cseq.is_ok());
        if !answerable {
            return Action::Drop(DropReason::Malformed(error));
        }
        self.write_reply(&head, 400, b"");
        Action::Reply { bytes: &self.out }
    }

    /// Answers a request that failed sanity, or drops what cannot be answered.
    fn refuse(&mut self, msg: &Message<'_>, error: SanityError) -> Action<'_> {
        if !msg.is_request() || msg.method() == Some(Method::Ack) {
            return Action::Drop(DropReason::Insane(error));
        }
        let mut extra = Vec::new();
        if error == SanityError::BadExtension {
            extra.extend_from_slice(b"Unsupported: ");
            let tags: Vec<&[u8]> = self.sanity.unsupported_proxy_require(msg).collect();
            extra.extend_from_slice(&tags.join(&b", "[..]));
            extra.extend_from_slice(b"\r\n");
        }
        self.write_reply(msg, error.status_code(), &extra);
        Action::Reply { bytes: &self.out }
    }

    fn write_reply(&mut self, msg: &Message<'_>, code: u16, extra: &[u8]) {
        let tag = self.hash(&[msg.call_id().unwrap_or_default(), b"tag"]);
        let mut tag_text = [0u8; 16];
        let tag_text = hex(tag, &mut tag_text);
        reply::write_response(
            msg,
            code,
            reply::reason(code),
            tag_text,
            extra,
            &mut self.out,
        );
    }

    fn request_from_public(
        &mut self,
        msg: &Message<'_>,
        checked: &Checked<'_>,
        inbound: &Inbound<'_>,
    ) -> Result<Routed, DropReason> {
        let top = top_via(msg, checked)?;
        let branch = self.branch_for(msg, checked, &top);
        if self.is_loop(msg, self.config.inner, &branch) {
            self.write_reply(msg, 482, b"");
            return Ok(Routed::Reply);
        }
        if msg.method() == Some(Method::Options) && self.addressed_to_edge(msg, checked) {
            self.write_reply(msg, 200, b"Allow: OPTIONS\r\nAccept: application/sdp\r\n");
            return Ok(Routed::Reply);
        }
        self.editor.clear();
        // Masks the edge gave out come back in the phone's requests: open them first.
        let restored = self.restore_call_id(msg).and_then(|key| {
            self.restore_uris(msg, checked)?;
            if Self::has_masked_routes(msg, HeaderName::Route) {
                self.restore_routes(msg, HeaderName::Route, true)?;
                return Ok((key, true));
            }
            Ok((key, false))
        });
        let (call_id_key, routes_done) = match restored {
            Ok(restored) => restored,
            Err(forged) => return self.forged(msg, checked, forged, inbound),
        };
        self.stamp_sender_via(msg, &top, inbound.flow)?;
        if !routes_done {
            self.pop_own_routes(msg)?;
        }
        self.decrement_max_forwards(msg, checked)?;
        self.mask_contacts(msg, inbound.flow)?;
        if creates_dialog(msg, checked) {
            let public = self.public_address(inbound.flow.transport, inbound.flow.remote);
            // The entry that faces the upstream goes on top (RFC 5658 double
            // Record-Route): the upstream and the callee route through the inner one,
            // the caller (reading the list backwards) through the public one.
            self.record_route(msg, self.config.inner, Transport::Udp)?;
            self.record_route(msg, public, inbound.flow.transport)?;
        }
        // The edge's Via, with the phone's flow sealed in, so that the response finds
        // its way back without state.
        self.plain.clear();
        inbound.flow.encode(&mut self.plain);
        // What the pipeline must know when the answer comes back: did the request
        // carry credentials, and for which user name; was it outside a dialog.
        let user = checked.digest_username(msg);
        let mut flags = 0;
        if user.is_some() {
            flags |= HAD_CREDENTIALS;
        }
        if checked.to.as_ref().is_none_or(|to| to.tag().is_none()) {
            flags |= INITIAL;
        }
        if call_id_key.is_some() {
            flags |= CALL_ID_MASKED;
        }
        self.plain.push(flags);
        if let Some(key) = call_id_key {
            self.plain.extend_from_slice(&key);
        }
        if let Some(user) = user {
            self.plain
                .extend_from_slice(&user[..user.len().min(MAX_TOKEN_USER)]);
        }
        self.text.clear();
        self.text.extend_from_slice(&self.inner_via_prefix);
        self.text.extend_from_slice(&branch);
        self.text.push(b';');
        self.text.extend_from_slice(VIA_PARAM);
        self.text.push(b'=');
        self.codec.seal(Purpose::Via, &self.plain, &mut self.text);
        self.editor
            .push_via(msg, &self.text)
            .map_err(|_| DropReason::Unroutable)?;
        self.finish(msg)?;
        Ok(Routed::Forward(Target::Upstream))
    }

    fn request_from_inner(
        &mut self,
        msg: &Message<'_>,
        checked: &Checked<'_>,
    ) -> Result<Routed, DropReason> {
        let top = top_via(msg, checked)?;
        // Where the request goes: the flow sealed in the masked Request-URI.
        let Some(Ok(uri)) = msg.request_uri() else {
            return Err(DropReason::Unroutable);
        };
        let Some(Some(token)) = uri.params.get(CONTACT_PARAM) else {
            self.write_reply(msg, 404, b"");
            return Ok(Routed::Reply);
        };
        let Ok(plain) = self.codec.open(Purpose::Contact, token) else {
            self.write_reply(msg, 403, b"");
            return Ok(Routed::Reply);
        };
        let Some((flow, original)) = Flow::decode(plain) else {
            return Err(DropReason::BadToken);
        };
        let original = original.to_vec();
        let public = self.public_address(flow.transport, flow.remote);
        let branch = self.branch_for(msg, checked, &top);
        if self.is_loop(msg, public, &branch) {
            self.write_reply(msg, 482, b"");
            return Ok(Routed::Reply);
        }
        self.editor.clear();
        self.editor
            .replace_request_uri(msg, &original)
            .map_err(|_| DropReason::Unroutable)?;
        self.scrub_headers(msg)?;
        self.decrement_max_forwards(msg, checked)?;
        if self.config.topology.hide {
            self.hide_request_from_inner(msg, checked, flow, public, &branch)?;
        } else {
            self.pop_own_routes(msg)?;
            if creates_dialog(msg, checked) {
                // Facing the phone on top this time.
                self.record_route(msg, public, flow.transport)?;
                self.record_route(msg, self.config.inner, Transport::Udp)?;
            }
            self.text.clear();
            push_via_prefix(&mut self.text, flow.transport, public, &branch);
            self.editor
                .push_via(msg, &self.text)
                .map_err(|_| DropReason::Unroutable)?;
        }
        self.finish(msg)?;
        Ok(Routed::Forward(Target::Peer(flow)))
    }

    /// What topology hiding does to a request from the upstream toward a phone: its
    /// Call-ID, Via stack, Route and Record-Route sets, Contacts, From and To.
    fn hide_request_from_inner(
        &mut self,
        msg: &Message<'_>,
        checked: &Checked<'_>,
        flow: Flow,
        public: SocketAddr,
        branch: &[u8],
    ) -> Result<(), DropReason> {
        let call_id_key = self.hide_request_call_id(msg, checked)?;
        // The edge's own Route entries are consumed; any other entry is the inside's,
        // and the phone has no use for it.
        for route in msg.headers_named(HeaderName::Route) {
            self.editor
                .remove_header(msg, route.index)
                .map_err(|_| DropReason::Unroutable)?;
        }
        if creates_dialog(msg, checked) {
            // Facing the phone on top, then the inner entry: it tells the upstream's
            // in-dialog requests how the phone knows the dialog's Call-ID.
            let mut facing = Vec::with_capacity(64);
            push_route_entry(&mut facing, public, flow.transport, None);
            let mut inner = Vec::with_capacity(64);
            push_route_entry(&mut inner, self.config.inner, Transport::Udp, call_id_key);
            self.hide_record_routes(msg, &[&facing, &inner], flow, false)?;
        } else {
            self.hide_record_routes(msg, &[], flow, false)?;
        }
        self.hide_contacts(msg, flow, false)?;
        self.hide_from_to(msg, checked, flow)?;
        self.hide_via_stack(msg, checked, flow.transport, public, branch)
    }

    fn response_from_inner(
        &mut self,
        msg: &Message<'_>,
        checked: &Checked<'_>,
        now: Millis,
    ) -> Result<Routed, DropReason> {
        let top = top_via(msg, checked)?;
        if !self.is_inner_address(&top) {
            return Err(DropReason::NotOurs);
        }
        let token = top
            .params
            .get(VIA_PARAM)
            .flatten()
            .ok_or(DropReason::NotOurs)?;
        let plain = self
            .codec
            .open(Purpose::Via, token)
            .map_err(|_| DropReason::BadToken)?;
        let (flow, facts) = Flow::decode(plain).ok_or(DropReason::BadToken)?;
        let (flags, rest) = facts.split_first().map_or((0, &[][..]), |(f, u)| (*f, u));
        let (call_id_key, user) = match rest.split_first_chunk::<2>() {
            Some((key, user)) if flags & CALL_ID_MASKED != 0 => (Some(*key), user),
            _ => (None, rest),
        };
        // The pipeline learns from the answer, and hides what it would reveal.
        let verdict = match (checked.cseq, msg.status_code()) {
            (Some(cseq), Some(status)) if status >= 200 => {
                let challenge = match status {
                    401 => msg.header(HeaderName::WwwAuthenticate).map(|h| h.value),
                    407 => msg.header(HeaderName::ProxyAuthenticate).map(|h| h.value),
                    _ => None,
                };
                let answer = Answer {
                    source: flow.remote.ip(),
                    method: cseq.method,
                    status,
                    reason: status_reason(msg),
                    call_id: msg.call_id().unwrap_or_default(),
                    credentials: (flags & HAD_CREDENTIALS != 0).then_some(user),
                    initial: flags & INITIAL != 0,
                    challenge,
                };
                lock(&self.policy).observe_response(&answer, now)
            }
            _ => AnswerVerdict::Forward,
        };
        self.editor.clear();
        self.pop_own_via(msg, &top)?;
        self.scrub_headers(msg)?;
        let hide = self.config.topology.hide;
        // The phone sees the Call-ID it sent: masked again if it was a mask.
        match call_id_key {
            Some(key) => self.mask_call_id(msg, Some(key))?,
            // Masks below are bound to the Call-ID; without hiding there are none.
            None if !hide => {}
            None => {
                self.call_id.clear();
                self.call_id
                    .extend_from_slice(msg.call_id().unwrap_or_default());
            }
        }
        let register = checked
            .cseq
            .is_some_and(|cseq| cseq.method == Method::Register);
        if let AnswerVerdict::Disguise(code) = verdict {
            self.disguise(msg, checked, code)?;
            if hide {
                self.hide_contacts(msg, flow, false)?;
            }
        } else if register {
            self.unmask_contacts(msg, hide.then_some(flow))?;
        } else if hide {
            let redirect = matches!(msg.status_code(), Some(300..=399));
            self.hide_contacts(msg, flow, redirect)?;
        }
        if hide {
            self.hide_record_routes(msg, &[], flow, true)?;
            self.hide_from_to(msg, checked, flow)?;
        }
        self.finish(msg)?;
        Ok(Routed::Forward(Target::Peer(flow)))
    }

    fn response_from_public(
        &mut self,
        msg: &Message<'_>,
        checked: &Checked<'_>,
        inbound: &Inbound<'_>,
    ) -> Result<Routed, DropReason> {
        let top = top_via(msg, checked)?;
        let ours = top.branch().is_some_and(|b| b.starts_with(BRANCH_PREFIX))
            && self.is_public_address(&top);
        if !ours {
            return Err(DropReason::NotOurs);
        }
        self.editor.clear();
        let stack = top
            .params
            .get(hide::STACK_PARAM)
            .map(Option::unwrap_or_default);
        let restored = self.restore_call_id(msg).and_then(|_| {
            self.restore_uris(msg, checked)?;
            if Self::has_masked_routes(msg, HeaderName::RecordRoute) {
                self.restore_routes(msg, HeaderName::RecordRoute, false)?;
            }
            self.restore_via_stack(msg, checked, stack)
        });
        if let Err(forged) = restored {
            let reason = format!("forged masked {} in a response", forged.what);
            if self.offence(Rule::BadToken, inbound.flow.remote.ip(), &reason, inbound) {
                return Err(DropReason::Policy);
            }
            return Err(DropReason::BadToken);
        }
        // The callee's Contact must lead the upstream's in-dialog requests (ACK, BYE)
        // back through the edge. 3xx Contacts are redirect targets, not the callee.
        if matches!(msg.status_code(), Some(101..=299)) {
            self.mask_contacts(msg, inbound.flow)?;
        }
        self.finish(msg)?;
        Ok(Routed::Forward(Target::Upstream))
    }

    /// Removes the edge's Via, `top` (as sanity parsed it), from a response: the entry
    /// is known, so the list need not be split to find it.
    fn pop_own_via(&mut self, msg: &Message<'_>, top: &Via<'_>) -> Result<(), DropReason> {
        let via = msg.header(HeaderName::Via).ok_or(DropReason::Unroutable)?;
        self.editor
            .remove_list_entry(msg, via.index, top.raw)
            .map_err(|_| DropReason::Unroutable)
    }

    /// Turns an answer that would reveal whether an extension exists into the challenge
    /// every other request gets: status line, then the upstream's own challenge with a
    /// fresh nonce. Its other headers (To tag, Server) are the upstream's, as in a real
    /// challenge.
    fn disguise(
        &mut self,
        msg: &Message<'_>,
        checked: &Checked<'_>,
        code: u16,
    ) -> Result<(), DropReason> {
        let bytes = msg.as_bytes();
        let line_end = memchr::memchr(b'\n', bytes).ok_or(DropReason::Unroutable)?;
        let line_end = if line_end > 0 && bytes[line_end - 1] == b'\r' {
            line_end - 1
        } else {
            line_end
        };
        self.text.clear();
        self.text.extend_from_slice(b"SIP/2.0 ");
        reply::push_number(&mut self.text, u64::from(code));
        self.text.push(b' ');
        self.text.extend_from_slice(reply::reason(code).as_bytes());
        self.editor
            .replace(msg, &bytes[..line_end], &self.text)
            .map_err(|_| DropReason::Unroutable)?;
        let realm = checked
            .from
            .as_ref()
            .map_or(&b""[..], |from| from.uri.host_raw);
        self.text.clear();
        lock(&self.policy).write_challenge(realm, &mut self.text);
        let name: &[u8] = if code == 401 {
            b"WWW-Authenticate"
        } else {
            b"Proxy-Authenticate"
        };
        // A Warning or a body explaining the refusal would tell what the status line
        // no longer does, and so would the body's type once the body is gone.
        let has_body = !msg.body().is_empty();
        // (Warning is scrubbed from everything going out.)
        if has_body {
            self.remove_headers(msg, |name| name == HeaderName::ContentType)?;
        }
        // Where a real challenge has it: registrars write Content-Length last, after
        // the challenge; one after Content-Length would give the disguise away.
        let position = msg
            .header(HeaderName::ContentLength)
            .map_or(Position::Last, |length| Position::Before(length.index));
        self.editor
            .insert_header(msg, position, name, &self.text)
            .map_err(|_| DropReason::Unroutable)?;
        if has_body {
            self.editor.set_body(b"");
        }
        Ok(())
    }

    /// Removes every header whose name `remove` picks.
    fn remove_headers(
        &mut self,
        msg: &Message<'_>,
        remove: impl Fn(HeaderName) -> bool,
    ) -> Result<(), DropReason> {
        for header in msg.headers().filter(|header| remove(header.name)) {
            self.editor
                .remove_header(msg, header.index)
                .map_err(|_| DropReason::Unroutable)?;
        }
        Ok(())
    }

    /// Writes the edited message into `out`.
    fn finish(&mut self, msg: &Message<'_>) -> Result<(), DropReason> {
        self.editor
            .finish(msg, &mut self.out)
            .map_err(|_| DropReason::Unroutable)
    }

    /// Sets `received` and `rport` on the sender's Via (RFC 3261 §18.2.1, RFC 3581):
    /// each replaces the first parameter of its name, or is appended.
    fn stamp_sender_via(
        &mut self,
        msg: &Message<'_>,
        top: &Via<'_>,
        flow: Flow,
    ) -> Result<(), DropReason> {
        let source = flow.remote.ip();
        let stamp_received = top.host.ip() != Some(source);
        let stamp_rport = top.rport() != Rport::Absent;
        if !stamp_received && !stamp_rport {
            return Ok(());
        }
        // One pass over the parameters finds both (`Editor::set_param` takes one each).
        let (mut received, mut rport) = (None, None);
        for param in top.params.iter() {
            if received.is_none() && param.name.eq_ignore_ascii_case(b"received") {
                received = Some(param.raw);
            } else if rport.is_none() && param.name.eq_ignore_ascii_case(b"rport") {
                rport = Some(param.raw);
            }
        }
        if stamp_received {
            self.text.clear();
            self.text.extend_from_slice(b";received=");
            push_ip(&mut self.text, source);
            self.stamp_param(msg, top, received)?;
        }
        if stamp_rport {
            self.text.clear();
            self.text.extend_from_slice(b";rport=");
            reply::push_number(&mut self.text, u64::from(flow.remote.port()));
            self.stamp_param(msg, top, rport)?;
        }
        Ok(())
    }

    /// Writes `self.text` (`;name=value`) over the parameter `existing` of the Via
    /// `top` (without the `;`, which it already has), or appends it to the Via's
    /// parameters if there is none.
    fn stamp_param(
        &mut self,
        msg: &Message<'_>,
        top: &Via<'_>,
        existing: Option<&[u8]>,
    ) -> Result<(), DropReason> {
        let done = match existing {
            Some(raw) => self.editor.replace(msg, raw, &self.text[1..]),
            None => self
                .editor
                .insert_after(msg, top.params.as_bytes(), &self.text),
        };
        done.map_err(|_| DropReason::Unroutable)
    }

    /// Removes the Route entries at the top that name the edge (it record-routed them):
    /// whole Route fields while all their entries are the edge's, then the leading
    /// entries of the first field that also names another hop.
    fn pop_own_routes(&mut self, msg: &Message<'_>) -> Result<(), DropReason> {
        let bytes = msg.as_bytes();
        for header in msg.headers_named(HeaderName::Route) {
            let mut own_end = None;
            let mut next_start = None;
            for entry in sipwall_sip::split_list(header.value) {
                let own = sipwall_sip::NameAddr::parse(entry, usize::MAX)
                    .is_ok_and(|route| self.is_own_uri(&route.uri));
                let range = msg.range_of(entry).ok_or(DropReason::Unroutable)?;
                if !own {
                    next_start = Some(range.start);
                    break;
                }
                own_end = Some(range.end);
            }
            match (own_end, next_start) {
                // The field holds only the edge's entries.
                (Some(_), None) => self
                    .editor
                    .remove_header(msg, header.index)
                    .map_err(|_| DropReason::Unroutable)?,
                // Leading entries are the edge's: cut up to the first that is not.
                (Some(_), Some(next)) => {
                    let start = msg
                        .range_of(header.value)
                        .ok_or(DropReason::Unroutable)?
                        .start;
                    self.editor
                        .replace(msg, &bytes[start..next], b"")
                        .map_err(|_| DropReason::Unroutable)?;
                    return Ok(());
                }
                (None, _) => return Ok(()),
            }
        }
        Ok(())
    }

    fn decrement_max_forwards(
        &mut self,
        msg: &Message<'_>,
        checked: &Checked<'_>,
    ) -> Result<(), DropReason> {
        self.text.clear();
        match msg.header(HeaderName::MaxForwards) {
            Some(header) => {
                // Sanity has refused 0 and anything unparseable, and read the value
                // (unless that check is disabled).
                let hops = checked
                    .max_forwards
                    .or_else(|| msg.max_forwards().and_then(Result::ok))
                    .unwrap_or(1);
                reply::push_number(&mut self.text, u64::from(hops.saturating_sub(1)));
                self.editor
                    .replace_header_value(msg, header.index, &self.text)
                    .map_err(|_| DropReason::Unroutable)
            }
            None => {
                reply::push_number(&mut self.text, u64::from(DEFAULT_MAX_FORWARDS - 1));
                self.editor
                    .insert_header(msg, Position::Last, b"Max-Forwards", &self.text)
                    .map_err(|_| DropReason::Unroutable)
            }
        }
    }

    /// Replaces every Contact URI by a masked one pointing at the inner address.
    fn mask_contacts(&mut self, msg: &Message<'_>, flow: Flow) -> Result<(), DropReason> {
        for contact in msg.contacts() {
            let Ok(Contact::Address(addr)) = contact else {
                // '*' stays; sanity has refused unparseable Contacts.
                continue;
            };
            self.plain.clear();
            flow.encode(&mut self.plain);
            self.plain.extend_from_slice(addr.uri.raw);
            if self.plain.len() > token::MAX_PLAINTEXT {
                return Err(DropReason::Unroutable);
            }
            self.text.clear();
            if !addr.bracketed {
                self.text.push(b'<');
            }
            self.text.extend_from_slice(b"sip:");
            if let Some(user) = addr.uri.user.filter(|_| addr.uri.is_sip()) {
                self.text.extend_from_slice(user);
                self.text.push(b'@');
            }
            push_address(&mut self.text, self.config.inner);
            self.text.push(b';');
            self.text.extend_from_slice(CONTACT_PARAM);
            self.text.push(b'=');
            self.codec
                .seal(Purpose::Contact, &self.plain, &mut self.text);
            if !addr.bracketed {
                self.text.push(b'>');
            }
            self.editor
                .replace(msg, addr.uri.raw, &self.text)
                .map_err(|_| DropReason::Unroutable)?;
        }
        Ok(())
    }

    /// Restores the original Contacts in a REGISTER response. With `hide_others`, the
    /// bindings that are not the edge's masks (registered some other way) are masked.
    fn unmask_contacts(
        &mut self,
        msg: &Message<'_>,
        hide_others: Option<Flow>,
    ) -> Result<(), DropReason> {
        for contact in msg.contacts() {
            let Ok(Contact::Address(addr)) = contact else {
                continue;
            };
            let original = match addr.uri.params.get(CONTACT_PARAM) {
                Some(Some(token)) => self
                    .codec
                    .open(Purpose::Contact, token)
                    .ok()
                    .and_then(Flow::decode)
                    .map(|(_, original)| original),
                _ => None,
            };
            let Some(original) = original else {
                if let Some(facing) = hide_others {
                    self.mask_uri(msg, &addr, facing, false)?;
                }
                continue;
            };
            self.text.clear();
            self.text.extend_from_slice(original);
            self.editor
                .replace(msg, addr.uri.raw, &self.text)
                .map_err(|_| DropReason::Unroutable)?;
        }
        Ok(())
    }

    /// Adds a Record-Route entry naming `address` on top.
    fn record_route(
        &mut self,
        msg: &Message<'_>,
        address: SocketAddr,
        transport: Transport,
    ) -> Result<(), DropReason> {
        self.text.clear();
        push_route_entry(&mut self.text, address, transport, None);
        let position = match msg.header(HeaderName::RecordRoute) {
            Some(first) => Position::Before(first.index),
            None => Position::Last,
        };
        // Insertions at one point keep their call order: callers add the top entry first.
        self.editor
            .insert_header(msg, position, b"Record-Route", &self.text)
            .map_err(|_| DropReason::Unroutable)
    }

    /// A keyed hash of `parts`, the same on every node holding the key.
    fn hash(&self, parts: &[&[u8]]) -> u64 {
        let mut hasher = SipHasher13::new_with_key(&self.branch_key);
        for part in parts {
            hasher.write(part);
            hasher.write_u8(0xff);
        }
        hasher.finish()
    }

    /// The branch of the edge's Via, in two parts (RFC 3261 §16.6 step 8):
    ///
    /// - the transaction part, from the sender's branch, so that a retransmission, the
    ///   ACK of a non-2xx and a CANCEL get the same branch as the request they follow;
    /// - the loop part, from what a loop does not change (Request-URI, Call-ID, From
    ///   tag, CSeq number), so that a request coming back on the same leg is recognised
    ///   (RFC 3261 §16.3 step 4) while a spiral (a new Request-URI) is not. The To tag
    ///   is left out (unlike RFC 3261's suggestion): the ACK of a non-2xx carries the tag
    ///   of the response and must still get the INVITE's branch.
    fn branch_for(&self, msg: &Message<'_>, checked: &Checked<'_>, top: &Via<'_>) -> Branch {
        let cseq_number = checked
            .cseq
            .as_ref()
            .map_or(0, |cseq| cseq.number)
            .to_be_bytes();
        let from_tag = checked
            .from
            .as_ref()
            .and_then(|from| from.tag())
            .unwrap_or_default();
        let uri = msg.request_line().map_or(&b""[..], |line| line.uri);
        let call_id = msg.call_id().unwrap_or_default();
        let transaction = match top.branch() {
            Some(branch) if branch.starts_with(b"z9hG4bK") && branch.len() > 7 => {
                self.hash(&[branch, top.host_raw])
            }
            // RFC 2543 peers: derive it from what identifies the transaction.
            _ => self.hash(&[call_id, from_tag, &cseq_number, uri, top.raw]),
        };
        let looping = self.hash(&[uri, call_id, from_tag, &cseq_number]);
        let mut branch = [0u8; BRANCH_LEN];
        let prefix = BRANCH_PREFIX.len();
        branch[..prefix].copy_from_slice(BRANCH_PREFIX);
        let mut digits = [0u8; 16];
        branch[prefix..prefix + 16].copy_from_slice(hex(transaction, &mut digits));
        branch[prefix + 16..].copy_from_slice(hex(looping, &mut digits));
        branch
    }

    /// True if a Via of `msg` names `address` with the loop part of `branch`: the
    /// request has been through this edge on this leg before (RFC 3261 §16.3 step 4).
    fn is_loop(&self, msg: &Message<'_>, address: SocketAddr, branch: &[u8]) -> bool {
        // Nearly every request has no branch of this edge at all: look before parsing.
        let has_our_branch = msg
            .headers_named(HeaderName::Via)
            .any(|via| self.branch_finder.find(via.value).is_some());
        if !has_our_branch {
            return false;
        }
        let loop_part = &branch[BRANCH_PREFIX.len() + 16..];
        msg.vias().flatten().any(|via| {
            via_names(&via, address)
                && via
                    .branch()
                    .is_some_and(|b| b.len() == BRANCH_LEN && b.ends_with(loop_part))
        })
    }

    /// True for an OPTIONS whose Request-URI names the edge without a user.
    fn addressed_to_edge(&self, msg: &Message<'_>, checked: &Checked<'_>) -> bool {
        // As sanity parsed it, or parsed here if that check is disabled.
        let parsed;
        let uri = match &checked.request_uri {
            Some(uri) => uri,
            None => match msg.request_uri() {
                Some(Ok(uri)) => {
                    parsed = uri;
                    &parsed
                }
                _ => return false,
            },
        };
        uri.user.is_none() && self.is_own_uri(uri)
    }

    fn is_own_uri(&self, uri: &Uri<'_>) -> bool {
        hide::is_own(&self.config, uri)
    }

    fn is_inner_address(&self, via: &Via<'_>) -> bool {
        via_names(via, self.config.inner)
    }

    fn is_public_address(&self, via: &Via<'_>) -> bool {
        self.config.public.iter().any(|(_, a)| via_names(via, *a))
    }

    /// The public listener for `transport`, of the address family of `remote` if there
    /// is one.
    fn public_address(&self, transport: Transport, remote: SocketAddr) -> SocketAddr {
        let same_transport = || {
            self.config
                .public
                .iter()
                .filter(move |(t, _)| *t == transport)
        };
        same_transport()
            .find(|(_, a)| a.is_ipv4() == remote.is_ipv4())
            .or_else(|| same_transport().next())
            .or_else(|| self.config.public.first())
            .map_or(self.config.inner, |(_, a)| *a)
    }
}

/// The outcome of routing, before the buffer is lent out.
enum Routed {
    Forward(Target),
    Reply,
}

/// Locks the security pipeline (poisoning is ignored: the engine's state is consistent
/// between calls, and a worker must not stop because another panicked).
fn lock(policy: &SharedPolicy) -> MutexGuard<'_, Engine> {
    policy
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The reason phrase of a response.
fn status_reason<'a>(msg: &Message<'a>) -> &'a [u8] {
    match msg.start_line() {
        sipwall_sip::StartLine::Response(line) => line.reason,
        sipwall_sip::StartLine::Request(_) => b"",
    }
}

/// The top Via, as sanity parsed it (or parsed here if that check is disabled).
fn top_via<'a>(msg: &Message<'a>, checked: &Checked<'a>) -> Result<Via<'a>, DropReason> {
    if let Some(via) = checked.top_via {
        return Ok(via);
    }
    match msg.top_via() {
        Some(Ok(via)) => Ok(via),
        _ => Err(DropReason::Unroutable),
    }
}

/// True if the Via's sent-by is `address` (port 5060 when absent).
fn via_names(via: &Via<'_>, address: SocketAddr) -> bool {
    via.host.ip() == Some(address.ip()) && via.port.unwrap_or(5060) == address.port()
}

/// Requests that create a dialog and so need Record-Route (RFC 3261 §16.6 step 4).
fn creates_dialog(msg: &Message<'_>, checked: &Checked<'_>) -> bool {
    let initial = matches!(
        msg.method(),
        Some(Method::Invite | Method::Subscribe | Method::Refer | Method::Notify)
    );
    let in_dialog = match &checked.to {
        Some(to) => to.tag().is_some(),
        None => matches!(msg.to(), Some(Ok(to)) if to.tag().is_some()),
    };
    initial && !in_dialog
}

/// `<sip:address[;transport=…];lr[;swk=…]>`, a Record-Route entry naming the edge;
/// `call_id_key` marks a dialog whose Call-ID the phone knows by a mask.
fn push_route_entry(
    out: &mut Vec<u8>,
    address: SocketAddr,
    transport: Transport,
    call_id_key: Option<KeyId>,
) {
    out.extend_from_slice(b"<sip:");
    push_address(out, address);
    match transport {
        Transport::Udp => {}
        Transport::Tcp => out.extend_from_slice(b";transport=tcp"),
        Transport::Tls => out.extend_from_slice(b";transport=tls"),
    }
    out.extend_from_slice(b";lr");
    if let Some(key) = call_id_key {
        out.push(b';');
        out.extend_from_slice(hide::CALL_ID_KEY_PARAM);
        out.push(b'=');
        hide::push_key_id(out, key);
    }
    out.push(b'>');
}

/// `SIP/2.0/<transport> <address>;branch=<branch>`.
fn push_via_prefix(out: &mut Vec<u8>, transport: Transport, address: SocketAddr, branch: &[u8]) {
    out.extend_from_slice(b"SIP/2.0/");
    out.extend_from_slice(transport.as_via().as_bytes());
    out.push(b' ');
    push_address(out, address);
    out.extend_from_slice(b";branch=");
    out.extend_from_slice(branch);
}

/// `ip:port`, IPv6 in brackets. IPv4 is written by hand: the formatting machinery costs
/// more than the rest of a Via.
fn push_address(out: &mut Vec<u8>, address: SocketAddr) {
    match address {
        SocketAddr::V4(v4) => push_ipv4(out, *v4.ip()),
        SocketAddr::V6(v6) => {
            use std::io::Write;
            // Writing to a Vec cannot fail.
            let _ = write!(out, "[{}]", v6.ip());
        }
    }
    out.push(b':');
    reply::push_number(out, u64::from(address.port()));
}

/// An IP address as a Via `received` value (IPv6 without brackets, RFC 5118).
fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => push_ipv4(out, v4),
        IpAddr::V6(v6) => {
            use std::io::Write;
            let _ = write!(out, "{v6}");
        }
    }
}

fn push_ipv4(out: &mut Vec<u8>, ip: std::net::Ipv4Addr) {
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            out.push(b'.');
        }
        reply::push_number(out, u64::from(octet));
    }
}

/// Lower-case hexadecimal of `n`, into `buf`.
fn hex(n: u64, buf: &mut [u8; 16]) -> &[u8] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, slot) in buf.iter_mut().enumerate() {
        *slot = DIGITS[((n >> (60 - 4 * i)) & 0xf) as usize];
    }
    &buf[..]
}
