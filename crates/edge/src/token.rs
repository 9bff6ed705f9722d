//! Flow tokens: what the edge must remember about a peer, carried inside the messages.
//!
//! A stateless edge keeps no table of who is behind which NAT binding or TCP connection.
//! Instead it writes that into the messages it forwards, as a token that only holders of
//! the cluster key can read or forge: AES-SIV (RFC 5297), a deterministic authenticated
//! cipher, so that the same input always gives the same token (a re-REGISTER does not
//! pile up bindings, and every node with the key produces and accepts the same tokens).
//! Tokens are URL-safe base64 without padding, so they fit in URI and Via parameters.
//!
//! Each token is sealed for one [`Purpose`], which enters the cipher as associated data:
//! a token cut from a Via cannot be replayed as a Contact token.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::siv::Siv;

/// Length of a key: AES-128-SIV takes two 128-bit keys.
pub const KEY_LEN: usize = 32;

/// Largest plaintext a token carries (a flow plus an original Contact URI).
pub const MAX_PLAINTEXT: usize = 2048 + 64;

/// What a token is for; a token opens only for the purpose it was sealed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The edge's own Via on a forwarded request: where its responses go back to.
    Via,
    /// A masked Contact: the peer's flow and its original Contact URI.
    Contact,
    /// Derivation of the branch hashing key.
    BranchKey,
    /// Derivation of a key's public identifier.
    KeyId,
    /// Topology hiding: the upstream's Via stack, hidden in the edge's Via of a request
    /// sent to a phone (bound to the transaction).
    Stack,
    /// Topology hiding: internal Record-Route entries (bound to the dialog).
    Route,
    /// Topology hiding: an internal URI (a Contact, From or To; bound to the dialog).
    Uri,
    /// Topology hiding: a redirect target of a 3xx (bound to nothing: the phone may
    /// follow it with a new Call-ID).
    Redirect,
    /// Topology hiding: a Call-ID of the inside.
    CallId,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Purpose::Via => b"sipwall via 1",
            Purpose::Contact => b"sipwall contact 1",
            Purpose::BranchKey => b"sipwall branch key 1",
            Purpose::KeyId => b"sipwall key id 1",
            Purpose::Stack => b"sipwall via stack 1",
            Purpose::Route => b"sipwall route 1",
            Purpose::Uri => b"sipwall uri 1",
            Purpose::Redirect => b"sipwall redirect 1",
            Purpose::CallId => b"sipwall call-id 1",
        }
    }
}

/// The transport of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
    /// TLS over TCP.
    Tls,
}

impl Transport {
    /// The Via transport token.
    pub fn as_via(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }

    /// True for connection-oriented transports.
    pub fn is_stream(self) -> bool {
        !matches!(self, Transport::Udp)
    }

    fn code(self) -> u8 {
        match self {
            Transport::Udp => 0,
            Transport::Tcp => 1,
            Transport::Tls => 2,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(Transport::Udp),
            1 => Some(Transport::Tcp),
            2 => Some(Transport::Tls),
            _ => None,
        }
    }
}

/// A peer as the edge sees it: how to send to it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Flow {
    /// The transport the peer used.
    pub transport: Transport,
    /// The peer's transport address (after any NAT).
    pub remote: SocketAddr,
    /// For TCP and TLS, the connection the peer used (0 for UDP). A new connection is a
    /// new flow: a message for a closed connection fails with 430 (RFC 5626).
    pub connection: u64,
}

impl Flow {
    /// Appends the binary form of the flow to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.transport.code());
        match self.remote.ip() {
            IpAddr::V4(ip) => {
                out.push(4);
                out.extend_from_slice(&ip.octets());
            }
            IpAddr::V6(ip) => {
                out.push(6);
                out.extend_from_slice(&ip.octets());
            }
        }
        out.extend_from_slice(&self.remote.port().to_be_bytes());
        if self.transport.is_stream() {
            out.extend_from_slice(&self.connection.to_be_bytes());
        }
    }

    /// Reads a flow from the front of `bytes`; returns it and the rest.
    pub fn decode(bytes: &[u8]) -> Option<(Flow, &[u8])> {
        let (&code, rest) = bytes.split_first()?;
        let transport = Transport::from_code(code)?;
        let (&family, rest) = rest.split_first()?;
        let (ip, rest): (IpAddr, &[u8]) = match family {
            4 => {
                let (octets, rest) = rest.split_first_chunk::<4>()?;
                (Ipv4Addr::from(*octets).into(), rest)
            }
            6 => {
                let (octets, rest) = rest.split_first_chunk::<16>()?;
                (Ipv6Addr::from(*octets).into(), rest)
            }
            _ => return None,
        };
        let (port, rest) = rest.split_first_chunk::<2>()?;
        let (connection, rest) = if transport.is_stream() {
            let (id, rest) = rest.split_first_chunk::<8>()?;
            (u64::from_be_bytes(*id), rest)
        } else {
            (0, rest)
        };
        let flow = Flow {
            transport,
            remote: SocketAddr::new(ip, u16::from_be_bytes(*port)),
            connection,
        };
        Some((flow, rest))
    }
}

/// Why a token was refused. Deliberately uninformative toward the peer: a forged,
/// truncated, replayed-for-another-purpose or stale token all look the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid or foreign token")]
pub struct BadToken;

/// A short public name of a key (two bytes of a value derived from it), written where a
/// later message must be sealed with the same key as an earlier one: a masked Call-ID
/// must not change when the key rotates in the middle of a dialog.
pub type KeyId = [u8; 2];

/// The sealing keys of one worker: the current key, and the previous one during a
/// rotation (tokens made with it still open, new tokens use the current key).
pub struct TokenCodec {
    current: Siv,
    previous: Option<Siv>,
    current_id: KeyId,
    previous_id: Option<KeyId>,
    /// Which key opened the last token: the current one (false) or the previous one.
    opened_with_previous: bool,
    /// Reused plaintext buffer.
    scratch: Vec<u8>,
    /// Reused associated data: the purpose's label, then the context.
    associated: Vec<u8>,
}

impl std::fmt::Debug for TokenCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCodec")
            .field("rotating", &self.previous.is_some())
            .finish_non_exhaustive()
    }
}

impl TokenCodec {
    /// A codec for `key`, also accepting tokens of `previous`.
    pub fn new(key: &[u8; KEY_LEN], previous: Option<&[u8; KEY_LEN]>) -> Self {
        let current = Siv::new(key);
        let previous = previous.map(Siv::new);
        let current_id = key_id(&current);
        let previous_id = previous.as_ref().map(key_id);
        TokenCodec {
            current,
            previous,
            current_id,
            previous_id,
            opened_with_previous: false,
            scratch: Vec::with_capacity(MAX_PLAINTEXT + 16),
            associated: Vec::with_capacity(256),
        }
    }

    /// The identifier of the current key.
    pub fn current_id(&self) -> KeyId {
        self.current_id
    }

    /// The identifier of the key that opened the last token.
    pub fn last_opened_id(&self) -> KeyId {
        match self.previous_id {
            Some(id) if self.opened_with_previous => id,
            _ => self.current_id,
        }
    }

    /// Seals `plaintext` for `purpose` and appends the token's base64 text to `out`.
    pub fn seal(&mut self, purpose: Purpose, plaintext: &[u8], out: &mut Vec<u8>) {
        self.seal_bound(purpose, b"", None, plaintext, out);
    }

    /// Seals `plaintext` for `purpose`, bound to `context` (the token opens only with the
    /// same context: a dialog's Call-ID, a transaction's Call-ID and CSeq), with the key
    /// named `key` if the codec holds it, else the current key.
    pub fn seal_bound(
        &mut self,
        purpose: Purpose,
        context: &[u8],
        key: Option<KeyId>,
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) {
        self.scratch.clear();
        self.scratch.extend_from_slice(&[0; 16]);
        self.scratch.extend_from_slice(plaintext);
        let (tag_room, body) = self.scratch.split_at_mut(16);
        let cipher = match (&self.previous, self.previous_id) {
            (Some(previous), Some(id)) if key == Some(id) && id != self.current_id => previous,
            _ => &self.current,
        };
        let associated = associated(&mut self.associated, purpose, context);
        tag_room.copy_from_slice(&cipher.seal(associated, body));
        let start = out.len();
        out.resize(
            start + base64::encoded_len(self.scratch.len(), false).unwrap_or(0),
            0,
        );
        let written = URL_SAFE_NO_PAD
            .encode_slice(&self.scratch, &mut out[start..])
            .unwrap_or(0);
        out.truncate(start + written);
    }

    /// Opens a token sealed for `purpose` by the current or the previous key; returns
    /// the plaintext, valid until the next call.
    pub fn open(&mut self, purpose: Purpose, token: &[u8]) -> Result<&[u8], BadToken> {
        self.open_bound(purpose, b"", token)
    }

    /// Opens a token sealed for `purpose` and bound to `context`.
    pub fn open_bound(
        &mut self,
        purpose: Purpose,
        context: &[u8],
        token: &[u8],
    ) -> Result<&[u8], BadToken> {
        // Base64 grows by 4/3; refuse oversized tokens before decoding anything.
        if token.len() > (MAX_PLAINTEXT + 16) * 4 / 3 + 4 {
            return Err(BadToken);
        }
        self.scratch.clear();
        self.scratch.resize(token.len() * 3 / 4 + 3, 0);
        let len = URL_SAFE_NO_PAD
            .decode_slice(token, &mut self.scratch)
            .map_err(|_| BadToken)?;
        if len < 16 {
            return Err(BadToken);
        }
        self.scratch.truncate(len);
        let mut tag = [0u8; 16];
        tag.copy_from_slice(&self.scratch[..16]);
        let associated = associated(&mut self.associated, purpose, context);
        // A failed attempt leaves the ciphertext in place (the cipher re-encrypts what it
        // decrypted), so the previous key can try the same bytes.
        for (is_previous, cipher) in std::iter::once((false, &self.current))
            .chain(self.previous.as_ref().map(|cipher| (true, cipher)))
        {
            if cipher
                .open(associated, &tag, &mut self.scratch[16..])
                .is_ok()
            {
                self.opened_with_previous = is_previous;
                return Ok(&self.scratch[16..]);
            }
        }
        Err(BadToken)
    }

    /// A keyed-hash key derived from the current key, for branch parameters.
    pub fn derive_branch_key(&mut self) -> [u8; 16] {
        derive(&self.current, Purpose::BranchKey)
    }
}

/// The associated data of a token, one string (each costs the cipher a pass): its
/// purpose's label, then a zero byte and its context if it has one. Tokens without
/// context keep the form they always had, so tokens written before contexts existed
/// still open.
fn associated<'b>(buffer: &'b mut Vec<u8>, purpose: Purpose, context: &[u8]) -> &'b [u8] {
    buffer.clear();
    buffer.extend_from_slice(purpose.label());
    if !context.is_empty() {
        buffer.push(0);
        buffer.extend_from_slice(context);
    }
    buffer
}

/// Sixteen bytes derived from a key for `purpose`.
fn derive(cipher: &Siv, purpose: Purpose) -> [u8; 16] {
    let mut block = [0u8; 16];
    cipher.seal(purpose.label(), &mut block)
}

/// The public identifier of a key.
fn key_id(cipher: &Siv) -> KeyId {
    let derived = derive(cipher, Purpose::KeyId);
    [derived[0], derived[1]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bound_token_opens_only_in_its_context_and_for_its_purpose() {
        let mut codec = TokenCodec::new(&[1; KEY_LEN], None);
        let mut token = Vec::new();
        codec.seal_bound(Purpose::Route, b"call-1", None, b"entries", &mut token);
        assert_eq!(
            codec.open_bound(Purpose::Route, b"call-1", &token),
            Ok(&b"entries"[..])
        );
        assert_eq!(
            codec.open_bound(Purpose::Route, b"call-2", &token),
            Err(BadToken)
        );
        assert_eq!(
            codec.open_bound(Purpose::Uri, b"call-1", &token),
            Err(BadToken)
        );
        assert_eq!(codec.open(Purpose::Route, &token), Err(BadToken));
        // Unbound tokens keep their form: sealing without context is `seal`.
        let mut plain = Vec::new();
        codec.seal(Purpose::Contact, b"x", &mut plain);
        let mut bound_empty = Vec::new();
        codec.seal_bound(Purpose::Contact, b"", None, b"x", &mut bound_empty);
        assert_eq!(plain, bound_empty);
    }

    #[test]
    fn tokens_name_the_key_that_sealed_them_across_a_rotation() {
        let mut old = TokenCodec::new(&[1; KEY_LEN], None);
        let mut rotated = TokenCodec::new(&[2; KEY_LEN], Some(&[1; KEY_LEN]));
        assert_ne!(old.current_id(), rotated.current_id());
        let mut token = Vec::new();
        old.seal_bound(Purpose::CallId, b"", None, b"abc@10.0.0.2", &mut token);
        assert!(rotated.open_bound(Purpose::CallId, b"", &token).is_ok());
        assert_eq!(rotated.last_opened_id(), old.current_id());
        // Sealing again with the key it named gives the same token.
        let mut again = Vec::new();
        rotated.seal_bound(
            Purpose::CallId,
            b"",
            Some(old.current_id()),
            b"abc@10.0.0.2",
            &mut again,
        );
        assert_eq!(again, token);
        // An unknown key identifier falls back to the current key.
        let mut current = Vec::new();
        rotated.seal_bound(
            Purpose::CallId,
            b"",
            Some([0, 0]),
            b"abc@10.0.0.2",
            &mut current,
        );
        assert!(rotated.open_bound(Purpose::CallId, b"", &current).is_ok());
        assert_eq!(rotated.last_opened_id(), rotated.current_id());
    }
}
