//! Topology hiding: nothing of the inside reaches the public side, and what the edge
//! masked on the way out it restores on the way in, without state.
//!
//! Toward phones the edge replaces:
//!
//! - the Via stack of a request from the upstream by its own single Via, the stack
//!   sealed in its `swv` parameter (bound to the transaction: the Call-ID and CSeq the
//!   phone sees), restored when the phone's responses come back;
//! - each run of internal Record-Route entries (the upstream's, the edge's inner ones) by
//!   one entry naming the edge's public address, the run sealed in its `swr` parameter
//!   (bound to the dialog's Call-ID), expanded again wherever the phone sends it back
//!   (Route of its requests, Record-Route of its responses);
//! - the upstream's Contacts, and From and To URIs naming the inside, by
//!   `sip:user@<public address>;swu=<token>` (bound to the dialog); 3xx Contacts by
//!   `swd` tokens bound to nothing, since a phone may follow a redirect with a new
//!   Call-ID;
//! - the Call-ID of dialogs the inside starts, by `swcid-<token>`. Which dialogs those
//!   are is written, when the dialog starts, in the edge's inner Record-Route entry
//!   (`swk`, the identifier of the key that masked it): the upstream's in-dialog requests
//!   carry it back in their Route, so the mask stays the same for the whole dialog, even
//!   across a key rotation. Dialogs a phone starts keep the phone's own Call-ID.
//!
//! Every token is sealed with the cluster key (AES-SIV), so any edge holding it restores
//! what another masked. A value that claims to be a mask and does not open (forged,
//! truncated, or cut from another dialog or transaction) is refused and counted as an
//! offence; nothing of it is decoded into an address.
//!
//! Header hygiene (Server and User-Agent rewritten or removed, Warning and configured
//! internal headers removed) applies whether masking is on or not.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use sipwall_sip::{
    Checked, Contact, HeaderName, Message, NameAddr, Position, Scheme, Uri, split_list,
};

use crate::token::{KeyId, Purpose};
use crate::{DropReason, Edge, Flow, Transport, push_address};

/// Parameter of the edge's Via toward a phone that holds the hidden Via stack.
pub(crate) const STACK_PARAM: &[u8] = b"swv";
/// URI parameter of a masked run of Record-Route entries.
pub(crate) const ROUTE_PARAM: &[u8] = b"swr";
/// URI parameter of a masked URI (Contact, From, To).
pub(crate) const URI_PARAM: &[u8] = b"swu";
/// URI parameter of a masked redirect target (3xx Contact).
pub(crate) const REDIRECT_PARAM: &[u8] = b"swd";
/// Parameter of the edge's inner Record-Route entry: the dialog's Call-ID is masked
/// toward the phone, with the key of this identifier.
pub(crate) const CALL_ID_KEY_PARAM: &[u8] = b"swk";
/// Prefix of a masked Call-ID.
pub(crate) const CALL_ID_PREFIX: &[u8] = b"swcid-";
/// Flag in a masked Record-Route run: it was given to a UAC (in a response), whose
/// route set is the Record-Route list reversed.
const REVERSED: u8 = 1;

/// What the edge hides from the public side.
#[derive(Debug, Clone)]
pub struct TopologyConfig {
    /// Mask the inside's Via stack, Record-Route entries, Contacts, Call-IDs and
    /// addresses in From and To.
    pub hide: bool,
    /// Networks of the inside, besides the upstream's and the edge's inner address:
    /// From and To URIs naming them are masked.
    pub inside_networks: Vec<IpNet>,
    /// Host names of the inside (compared without case), masked like its addresses.
    pub inside_names: Vec<String>,
    /// The value that replaces Server and User-Agent toward the public side; `None`
    /// removes them.
    pub server: Option<String>,
    /// Header fields removed toward the public side (besides Warning), by name.
    pub remove_headers: Vec<String>,
}

impl Default for TopologyConfig {
    fn default() -> Self {
        TopologyConfig {
            hide: true,
            inside_networks: Vec::new(),
            inside_names: Vec::new(),
            server: None,
            remove_headers: Vec::new(),
        }
    }
}

/// A masked value from the public side that does not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Forged {
    /// What was forged, for the log.
    pub what: &'static str,
}

/// How the Call-ID of a request from the upstream appears to the phone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallIdMode {
    /// The phone's own Call-ID: unchanged.
    Plain,
    /// Masked, with the key of this identifier.
    Masked(KeyId),
}

impl Edge {
    // ---- Toward the public side ----

    /// Removes or rewrites what fingerprints the inside: Server and User-Agent, Warning,
    /// and the configured internal headers.
    pub(crate) fn scrub_headers(&mut self, msg: &Message<'_>) -> Result<(), DropReason> {
        let topology = &self.config.topology;
        for header in msg.headers() {
            let remove = match header.name {
                HeaderName::Server | HeaderName::UserAgent | HeaderName::Warning => true,
                // The registrar's echo of Path and its Service-Route name the inside;
                // the phone needs neither (everything it sends goes through the edge).
                HeaderName::Path => topology.hide,
                _ if topology.hide && header.raw_name.eq_ignore_ascii_case(b"Service-Route") => {
                    true
                }
                _ => topology
                    .remove_headers
                    .iter()
                    .any(|name| name.as_bytes().eq_ignore_ascii_case(header.raw_name)),
            };
            if remove {
                self.editor
                    .remove_header(msg, header.index)
                    .map_err(|_| DropReason::Unroutable)?;
            }
        }
        if let Some(server) = &self.config.topology.server {
            let name: &[u8] = if msg.is_request() {
                b"User-Agent"
            } else {
                b"Server"
            };
            self.editor
                .insert_header(msg, Position::Last, name, server.as_bytes())
                .map_err(|_| DropReason::Unroutable)?;
        }
        Ok(())
    }

    /// Decides and writes the Call-ID of a request from the upstream toward a phone;
    /// leaves the Call-ID the phone sees in `self.call_id`.
    pub(crate) fn hide_request_call_id(
        &mut self,
        msg: &Message<'_>,
        checked: &Checked<'_>,
    ) -> Result<Option<KeyId>, DropReason> {
        let mode = self.call_id_mode(msg, checked);
        let call_id = msg.call_id().unwrap_or_default();
        match mode {
            CallIdMode::Plain => {
                self.call_id.clear();
                self.call_id.extend_from_slice(call_id);
                Ok(None)
            }
            CallIdMode::Masked(key) => {
                self.mask_call_id(msg, Some(key))?;
                Ok(Some(key))
            }
        }
    }

    /// Masks the Call-ID of `msg` with the key named `key` (the current key if `None`
    /// or no longer held), leaving the mask in `self.call_id`.
    pub(crate) fn mask_call_id(
        &mut self,
        msg: &Message<'_>,
        key: Option<KeyId>,
    ) -> Result<(), DropReason> {
        let header = msg
            .header(HeaderName::CallId)
            .ok_or(DropReason::Unroutable)?;
        if header.value.len() > crate::token::MAX_PLAINTEXT {
            return Err(DropReason::Unroutable);
        }
        self.call_id.clear();
        self.call_id.extend_from_slice(CALL_ID_PREFIX);
        self.codec
            .seal_bound(Purpose::CallId, b"", key, header.value, &mut self.call_id);
        self.editor
            .replace(msg, header.value, &self.call_id)
            .map_err(|_| DropReason::Unroutable)
    }

    /// Whether the phone knows the dialog of this request from the upstream by a mask:
    /// yes for requests outside a dialog (the upstream starts it) and for dialogs whose
    /// inner Record-Route entry says so; no for dialogs the phone started. A request in
    /// a dialog with no Route through the edge is masked: a leak is worse than a 481.
    fn call_id_mode(&self, msg: &Message<'_>, checked: &Checked<'_>) -> CallIdMode {
        let current = self.codec.current_id();
        let in_dialog = checked.to.as_ref().is_some_and(|to| to.tag().is_some());
        if !in_dialog {
            return CallIdMode::Masked(current);
        }
        for route in msg.routes().flatten() {
            if !self.is_inner_uri(&route.uri) {
                continue;
            }
            return match route.uri.params.get(CALL_ID_KEY_PARAM) {
                Some(Some(id)) => CallIdMode::Masked(parse_key_id(id).unwrap_or(current)),
                _ => CallIdMode::Plain,
            };
        }
        CallIdMode::Masked(current)
    }

    /// Replaces the Via stack of a request from the upstream by the edge's own Via
    /// (toward the phone on `transport` through `public`, with `branch`), the stack
    /// sealed into it.
    pub(crate) fn hide_via_stack(
        &mut self,
        msg: &Message<'_>,
        checked: &Checked<'_>,
        transport: Transport,
        public: SocketAddr,
        branch: &[u8],
    ) -> Result<(), DropReason> {
        self.plain.clear();
        for header in msg.headers_named(HeaderName::Via) {
            push_item(&mut self.plain, header.value)?;
            self.editor
                .remove_header(msg, header.index)
                .map_err(|_| DropReason::Unroutable)?;
        }
        if self.plain.len() > crate::token::MAX_PLAINTEXT {
            return Err(DropReason::Unroutable);
        }
        transaction_context(&mut self.context, &self.call_id, checked);
        self.text.clear();
        crate::push_via_prefix(&mut self.text, transport, public, branch);
        self.text.push(b';');
        self.text.extend_from_slice(STACK_PARAM);
        self.text.push(b'=');
        self.codec.seal_bound(
            Purpose::Stack,
            &self.context,
            None,
            &self.plain,
            &mut self.text,
        );
        let position = match msg.header(HeaderName::Via) {
            Some(first) => Position::Before(first.index),
            None => Position::First,
        };
        self.editor
            .insert_header(msg, position, b"Via", &self.text)
            .map_err(|_| DropReason::Unroutable)
    }

    /// Rewrites the Record-Route set of a message toward a phone reached by `facing`:
    /// `own` entries first (the edge's, for a request it record-routes), then the
    /// message's; every run of entries that are not the edge's public address becomes
    /// one masked entry. `reversed` when the phone is the UAC (a response).
    pub(crate) fn hide_record_routes(
        &mut self,
        msg: &Message<'_>,
        own: &[&[u8]],
        facing: Flow,
        reversed: bool,
    ) -> Result<(), DropReason> {
        let first = msg.header(HeaderName::RecordRoute);
        if first.is_none() && own.is_empty() {
            return Ok(());
        }
        self.list.clear();
        self.plain.clear();
        self.plain.push(if reversed { REVERSED } else { 0 });
        let mut run = false;
        let existing = msg
            .headers_named(HeaderName::RecordRoute)
            .flat_map(|header| split_list(header.value));
        for entry in own.iter().copied().chain(existing) {
            let public = NameAddr::parse(entry, usize::MAX)
                .is_ok_and(|route| self.is_public_uri(&route.uri));
            if !public {
                push_item(&mut self.plain, entry)?;
                run = true;
                continue;
            }
            if run {
                self.push_masked_route(facing)?;
                self.plain.truncate(1);
                run = false;
            }
            if !self.list.is_empty() {
                self.list.extend_from_slice(b", ");
            }
            push_unfolded(&mut self.list, entry);
        }
        if run {
            self.push_masked_route(facing)?;
        }
        for header in msg.headers_named(HeaderName::RecordRoute) {
            self.editor
                .remove_header(msg, header.index)
                .map_err(|_| DropReason::Unroutable)?;
        }
        let position = first.map_or(Position::Last, |first| Position::Before(first.index));
        self.editor
            .insert_header(msg, position, b"Record-Route", &self.list)
            .map_err(|_| DropReason::Unroutable)
    }

    /// Appends to `self.list` one entry naming the public address, the run of internal
    /// entries in `self.plain` sealed into it.
    fn push_masked_route(&mut self, facing: Flow) -> Result<(), DropReason> {
        if self.plain.len() > crate::token::MAX_PLAINTEXT {
            return Err(DropReason::Unroutable);
        }
        if !self.list.is_empty() {
            self.list.extend_from_slice(b", ");
        }
        self.list.push(b'<');
        self.push_public_uri(None, facing);
        self.list.extend_from_slice(b";lr;");
        self.list.extend_from_slice(ROUTE_PARAM);
        self.list.push(b'=');
        self.codec.seal_bound(
            Purpose::Route,
            &self.call_id,
            None,
            &self.plain,
            &mut self.list,
        );
        self.list.push(b'>');
        Ok(())
    }

    /// `sip:[user@]<public address>[;transport=…]` for the phone reached by `facing`,
    /// appended to `self.list`.
    fn push_public_uri(&mut self, user: Option<&[u8]>, facing: Flow) {
        let address = self.public_address(facing.transport, facing.remote);
        self.list.extend_from_slice(b"sip:");
        if let Some(user) = user {
            self.list.extend_from_slice(user);
            self.list.push(b'@');
        }
        push_address(&mut self.list, address);
        match facing.transport {
            Transport::Udp => {}
            Transport::Tcp => self.list.extend_from_slice(b";transport=tcp"),
            Transport::Tls => self.list.extend_from_slice(b";transport=tls"),
        }
    }

    /// Masks the Contact URIs of a message toward a phone (`redirect` for 3xx targets).
    pub(crate) fn hide_contacts(
        &mut self,
        msg: &Message<'_>,
        facing: Flow,
        redirect: bool,
    ) -> Result<(), DropReason> {
        for contact in msg.contacts() {
            let Ok(Contact::Address(addr)) = contact else {
                continue;
            };
            self.mask_uri(msg, &addr, facing, redirect)?;
        }
        Ok(())
    }

    /// Masks the From and To URIs of a request toward a phone when they name the inside.
    pub(crate) fn hide_from_to(
        &mut self,
        msg: &Message<'_>,
        checked: &Checked<'_>,
        facing: Flow,
    ) -> Result<(), DropReason> {
        for addr in [&checked.from, &checked.to].into_iter().flatten() {
            if self.is_inside(&addr.uri) {
                self.mask_uri(msg, addr, facing, false)?;
            }
        }
        Ok(())
    }

    /// Replaces the URI of `addr` by `<sip:user@<public address>;swu=…>` (or `swd`).
    pub(crate) fn mask_uri(
        &mut self,
        msg: &Message<'_>,
        addr: &NameAddr<'_>,
        facing: Flow,
        redirect: bool,
    ) -> Result<(), DropReason> {
        if addr.uri.raw.len() > crate::token::MAX_PLAINTEXT {
            return Err(DropReason::Unroutable);
        }
        let user = addr.uri.user.filter(|_| addr.uri.is_sip());
        self.list.clear();
        if !addr.bracketed {
            self.list.push(b'<');
        }
        self.push_public_uri(user, facing);
        self.list.push(b';');
        let (param, purpose, context): (&[u8], Purpose, &[u8]) = if redirect {
            (REDIRECT_PARAM, Purpose::Redirect, b"")
        } else {
            (URI_PARAM, Purpose::Uri, &self.call_id)
        };
        self.list.extend_from_slice(param);
        self.list.push(b'=');
        self.codec
            .seal_bound(purpose, context, None, addr.uri.raw, &mut self.list);
        if !addr.bracketed {
            self.list.push(b'>');
        }
        self.editor
            .replace(msg, addr.uri.raw, &self.list)
            .map_err(|_| DropReason::Unroutable)
    }

    // ---- From the public side ----

    /// Opens a masked Call-ID of a message from a phone and writes the original back;
    /// returns the key that masked it, `None` if the Call-ID is the phone's own. Leaves
    /// the Call-ID as the phone sent it in `self.call_id`.
    pub(crate) fn restore_call_id(&mut self, msg: &Message<'_>) -> Result<Option<KeyId>, Forged> {
        let header = msg
            .header(HeaderName::CallId)
            .ok_or(Forged { what: "Call-ID" })?;
        self.call_id.clear();
        self.call_id.extend_from_slice(header.value);
        let Some(token) = header.value.strip_prefix(CALL_ID_PREFIX) else {
            return Ok(None);
        };
        let forged = Forged { what: "Call-ID" };
        let original = self
            .codec
            .open_bound(Purpose::CallId, b"", token)
            .map_err(|_| forged)?;
        self.editor
            .replace(msg, header.value, original)
            .map_err(|_| forged)?;
        Ok(Some(self.codec.last_opened_id()))
    }

    /// Restores a masked URI (`swu` or `swd` naming the edge's public address) in place.
    pub(crate) fn restore_uri(&mut self, msg: &Message<'_>, uri: &Uri<'_>) -> Result<(), Forged> {
        if !self.is_public_uri(uri) {
            return Ok(());
        }
        let (purpose, token, context): (Purpose, &[u8], &[u8]) =
            if let Some(token) = uri.params.get(URI_PARAM) {
                (Purpose::Uri, token.unwrap_or_default(), &self.call_id)
            } else if let Some(token) = uri.params.get(REDIRECT_PARAM) {
                (Purpose::Redirect, token.unwrap_or_default(), b"")
            } else {
                return Ok(());
            };
        let forged = Forged { what: "URI" };
        let original = self
            .codec
            .open_bound(purpose, context, token)
            .map_err(|_| forged)?;
        // What was sealed was a URI the inside wrote; check it is one before it goes in.
        if Uri::parse(original).is_err() || has_line_break(original) {
            return Err(forged);
        }
        self.editor
            .replace(msg, uri.raw, original)
            .map_err(|_| forged)
    }

    /// Restores masked URIs in the Request-URI, From and To of a message from a phone.
    pub(crate) fn restore_uris(
        &mut self,
        msg: &Message<'_>,
        checked: &Checked<'_>,
    ) -> Result<(), Forged> {
        // Read in place: a URI is some 170 bytes to copy.
        let parsed;
        let uri = match &checked.request_uri {
            Some(uri) => Some(uri),
            None => {
                parsed = msg.request_uri().and_then(Result::ok);
                parsed.as_ref()
            }
        };
        if let Some(uri) = uri {
            self.restore_uri(msg, uri)?;
        }
        for addr in [&checked.from, &checked.to].into_iter().flatten() {
            self.restore_uri(msg, &addr.uri)?;
        }
        Ok(())
    }

    /// True if a header of `name` holds a masked Record-Route run.
    pub(crate) fn has_masked_routes(msg: &Message<'_>, name: HeaderName) -> bool {
        msg.headers_named(name)
            .any(|header| memchr::memmem::find(header.value, b";swr=").is_some())
    }

    /// Rewrites the Route or Record-Route set of a message from a phone with every masked
    /// run expanded. For Route (`pop_own`), the leading entries naming the edge are
    /// consumed, as they are without masks.
    pub(crate) fn restore_routes(
        &mut self,
        msg: &Message<'_>,
        name: HeaderName,
        pop_own: bool,
    ) -> Result<(), Forged> {
        let forged = Forged { what: "route" };
        self.list.clear();
        let mut leading = pop_own;
        let mut first = None;
        for header in msg.headers_named(name) {
            first.get_or_insert(header.index);
            self.editor
                .remove_header(msg, header.index)
                .map_err(|_| forged)?;
            for entry in split_list(header.value) {
                let parsed = NameAddr::parse(entry, usize::MAX).ok();
                let masked = parsed
                    .filter(|route| self.is_public_uri(&route.uri))
                    .and_then(|route| route.uri.params.get(ROUTE_PARAM));
                let Some(token) = masked else {
                    let own = parsed.is_some_and(|route| self.is_own_uri(&route.uri));
                    keep_route(&mut self.list, &mut leading, own, entry);
                    continue;
                };
                let plain = self
                    .codec
                    .open_bound(Purpose::Route, &self.call_id, token.unwrap_or_default())
                    .map_err(|_| forged)?;
                let (&flags, items_bytes) = plain.split_first().ok_or(forged)?;
                let mut entries = items(items_bytes).ok_or(forged)?;
                // A UAC's route set is the Record-Route list backwards, run included.
                let route_order = name == HeaderName::Route && flags & REVERSED != 0;
                if route_order {
                    entries.reverse();
                }
                for entry in entries {
                    let own = NameAddr::parse(entry, usize::MAX)
                        .is_ok_and(|route| is_own(&self.config, &route.uri));
                    keep_route(&mut self.list, &mut leading, own, entry);
                }
            }
        }
        if let (Some(first), false) = (first, self.list.is_empty()) {
            let header_name: &[u8] = if name == HeaderName::Route {
                b"Route"
            } else {
                b"Record-Route"
            };
            self.editor
                .insert_header(msg, Position::Before(first), header_name, &self.list)
                .map_err(|_| forged)?;
        }
        Ok(())
    }

    /// Restores the Via stack hidden in the edge's Via of a response from a phone, or
    /// just pops the edge's Via if it hides none.
    pub(crate) fn restore_via_stack(
        &mut self,
        msg: &Message<'_>,
        checked: &Checked<'_>,
        token: Option<&[u8]>,
    ) -> Result<(), Forged> {
        let forged = Forged { what: "Via" };
        self.editor.pop_via(msg).map_err(|_| forged)?;
        let Some(token) = token else {
            return Ok(());
        };
        transaction_context(&mut self.context, &self.call_id, checked);
        let plain = self
            .codec
            .open_bound(Purpose::Stack, &self.context, token)
            .map_err(|_| forged)?;
        let first = msg.header(HeaderName::Via).ok_or(forged)?;
        for value in items(plain).ok_or(forged)? {
            self.editor
                .insert_header(msg, Position::Before(first.index), b"Via", value)
                .map_err(|_| forged)?;
        }
        Ok(())
    }

    // ---- Addresses ----

    /// True if `uri` names one of the edge's public listeners.
    pub(crate) fn is_public_uri(&self, uri: &Uri<'_>) -> bool {
        uri_names(uri, |address| {
            self.config.public.iter().any(|(_, a)| *a == address)
        })
    }

    /// True if `uri` names the edge's inner address.
    fn is_inner_uri(&self, uri: &Uri<'_>) -> bool {
        uri_names(uri, |address| address == self.config.inner)
    }

    /// True if `uri`'s host is of the inside: the upstream's or the inner address, a
    /// configured inside network or host name.
    fn is_inside(&self, uri: &Uri<'_>) -> bool {
        if !matches!(uri.scheme, Scheme::Sip | Scheme::Sips) {
            return false;
        }
        let topology = &self.config.topology;
        match uri.host.ip() {
            Some(ip) => is_inside_ip(&self.config, ip, topology.inside_networks.as_slice()),
            None => {
                let name = uri.host_raw.strip_suffix(b".").unwrap_or(uri.host_raw);
                topology
                    .inside_names
                    .iter()
                    .any(|inside| inside.as_bytes().eq_ignore_ascii_case(name))
            }
        }
    }
}

fn is_inside_ip(config: &crate::EdgeConfig, ip: IpAddr, networks: &[IpNet]) -> bool {
    ip == config.upstream.ip()
        || ip == config.inner.ip()
        || networks.iter().any(|network| network.contains(&ip))
}

/// True if `uri` is a SIP URI with an IP host whose address (port 5060 when absent)
/// `matches`.
fn uri_names(uri: &Uri<'_>, matches: impl Fn(SocketAddr) -> bool) -> bool {
    if !matches!(uri.scheme, Scheme::Sip | Scheme::Sips) {
        return false;
    }
    match uri.host.ip() {
        Some(ip) => matches(SocketAddr::new(ip, uri.port.unwrap_or(5060))),
        None => false,
    }
}

/// True if `uri` names the edge, inner or public side.
pub(crate) fn is_own(config: &crate::EdgeConfig, uri: &Uri<'_>) -> bool {
    uri_names(uri, |address| {
        address == config.inner || config.public.iter().any(|(_, a)| *a == address)
    })
}

/// The context a hidden Via stack is bound to: the Call-ID the phone sees, and the
/// CSeq, so that the stack of one transaction cannot be replayed in another.
fn transaction_context(out: &mut Vec<u8>, call_id: &[u8], checked: &Checked<'_>) {
    out.clear();
    out.extend_from_slice(call_id);
    out.push(0);
    if let Some(cseq) = &checked.cseq {
        out.extend_from_slice(&cseq.number.to_be_bytes());
        out.extend_from_slice(cseq.method.as_bytes());
    }
}

/// Reads a key identifier written as four hexadecimal digits.
fn parse_key_id(text: &[u8]) -> Option<KeyId> {
    let text: &[u8; 4] = text.try_into().ok()?;
    let digit = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    Some([
        digit(text[0])? << 4 | digit(text[1])?,
        digit(text[2])? << 4 | digit(text[3])?,
    ])
}

/// Writes a key identifier as four hexadecimal digits.
pub(crate) fn push_key_id(out: &mut Vec<u8>, id: KeyId) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for byte in id {
        out.push(DIGITS[usize::from(byte >> 4)]);
        out.push(DIGITS[usize::from(byte & 0xf)]);
    }
}

/// Appends `item` with its length (two bytes) to a sealed list, its folded lines
/// unfolded (restored values go back as single lines).
fn push_item(out: &mut Vec<u8>, item: &[u8]) -> Result<(), DropReason> {
    let at = out.len();
    out.extend_from_slice(&[0, 0]);
    push_unfolded(out, item);
    let len = u16::try_from(out.len() - at - 2).map_err(|_| DropReason::Unroutable)?;
    out[at..at + 2].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// Appends a Route entry to `list` unless it is one of the edge's own at the front
/// (`leading` while only the edge's entries have been seen).
fn keep_route(list: &mut Vec<u8>, leading: &mut bool, own: bool, entry: &[u8]) {
    if !(*leading && own) {
        *leading = false;
        push_entry(list, entry);
    }
}

/// Appends an entry to a comma-separated list.
fn push_entry(out: &mut Vec<u8>, entry: &[u8]) {
    if !out.is_empty() {
        out.extend_from_slice(b", ");
    }
    push_unfolded(out, entry);
}

/// Appends `value` with every line break (and the white space folding it) turned into
/// one space.
fn push_unfolded(out: &mut Vec<u8>, value: &[u8]) {
    let mut rest = value;
    while let Some(at) = memchr::memchr2(b'\r', b'\n', rest) {
        out.extend_from_slice(&rest[..at]);
        out.push(b' ');
        let after = &rest[at..];
        let skip = after
            .iter()
            .position(|&b| !matches!(b, b'\r' | b'\n' | b' ' | b'\t'))
            .unwrap_or(after.len());
        rest = &after[skip..];
    }
    out.extend_from_slice(rest);
}

fn has_line_break(bytes: &[u8]) -> bool {
    memchr::memchr2(b'\r', b'\n', bytes).is_some()
}

/// The items of a sealed list, or `None` if it is not one.
fn items(bytes: &[u8]) -> Option<Vec<&[u8]>> {
    let mut items = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let (len, tail) = rest.split_first_chunk::<2>()?;
        let len = usize::from(u16::from_be_bytes(*len));
        let item = tail.get(..len)?;
        if has_line_break(item) {
            return None;
        }
        items.push(item);
        rest = &tail[len..];
    }
    Some(items)
}
