//! AES-SIV (RFC 5297) with AES-128 and one associated-data string, on key schedules
//! expanded once per key.
//!
//! The edge seals or opens several tokens per masked message, each a few blocks long. The
//! general-purpose `aes-siv` crate expands the CTR key and recomputes CMAC of the zero
//! block on every call, which cost more than the blocks themselves; here both are done
//! when the key is set. The output is RFC 5297's, byte for byte: tokens sealed before
//! still open, and the tests check this against the RFC's vector and the `aes-siv` crate.

use aes::Aes128;
use aes::cipher::{BlockCipherEncrypt, KeyInit};

/// Bytes in an AES block, a tag and a CMAC subkey.
const BLOCK: usize = 16;

/// Counter blocks encrypted in one call: AES-NI pipelines independent blocks.
const CTR_BATCH: usize = 8;

type Block = [u8; BLOCK];

/// The open of a token failed: wrong key, wrong associated data, or altered bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mismatch;

/// One AES-128-SIV key, ready to use.
pub(crate) struct Siv {
    /// The first half of the key: S2V's CMAC.
    mac: Aes128,
    /// The second half: the CTR keystream.
    ctr: Aes128,
    /// CMAC's subkey for a message ending on a whole block.
    whole: Block,
    /// CMAC's subkey for a message ending on a padded block.
    padded: Block,
    /// CMAC of the zero block, where every S2V starts.
    zero_mac: Block,
}

impl Siv {
    /// Expands `key` (the MAC key, then the CTR key).
    pub(crate) fn new(key: &[u8; 2 * BLOCK]) -> Self {
        let mut mac_key = [0u8; BLOCK];
        let mut ctr_key = [0u8; BLOCK];
        mac_key.copy_from_slice(&key[..BLOCK]);
        ctr_key.copy_from_slice(&key[BLOCK..]);
        let mac = Aes128::new(&mac_key.into());
        let ctr = Aes128::new(&ctr_key.into());
        let mut l = [0u8; BLOCK];
        mac.encrypt_block((&mut l).into());
        let whole = dbl(l);
        let padded = dbl(whole);
        let mut siv = Siv {
            mac,
            ctr,
            whole,
            padded,
            zero_mac: [0; BLOCK],
        };
        siv.zero_mac = siv.cmac(&[0; BLOCK], None);
        siv
    }

    /// Encrypts `data` in place; returns the tag (the synthetic IV).
    pub(crate) fn seal(&self, associated: &[u8], data: &mut [u8]) -> Block {
        let tag = self.s2v(associated, data);
        self.apply_keystream(&tag, data);
        tag
    }

    /// Decrypts `data` in place if `tag` proves it and `associated` authentic; on a
    /// mismatch `data` is left as it was (so another key can try the same bytes).
    pub(crate) fn open(
        &self,
        associated: &[u8],
        tag: &Block,
        data: &mut [u8],
    ) -> Result<(), Mismatch> {
        self.apply_keystream(tag, data);
        let expected = self.s2v(associated, data);
        // Constant time: a forger learns nothing from how long the refusal took.
        let difference = expected
            .iter()
            .zip(tag)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if std::hint::black_box(difference) == 0 {
            Ok(())
        } else {
            self.apply_keystream(tag, data);
            Err(Mismatch)
        }
    }

    /// S2V of one associated-data string and the plaintext (RFC 5297 §2.4).
    fn s2v(&self, associated: &[u8], plaintext: &[u8]) -> Block {
        let mut d = xor(dbl(self.zero_mac), &self.cmac(associated, None));
        match plaintext.len().checked_sub(BLOCK) {
            // xorend: D goes into the plaintext's last block.
            Some(head) => {
                xor_into(&mut d, &plaintext[head..]);
                self.cmac(&plaintext[..head], Some(&d))
            }
            None => {
                d = dbl(d);
                xor_into(&mut d, plaintext);
                d[plaintext.len()] ^= 0x80;
                self.cmac(&d, None)
            }
        }
    }

    /// CMAC (RFC 4493) of `head`, followed by `last` when given.
    fn cmac(&self, head: &[u8], last: Option<&Block>) -> Block {
        let mut state = [0u8; BLOCK];
        // Every whole block but the message's final one goes straight through.
        let total = head.len() + last.map_or(0, |_| BLOCK);
        let straight = if total == 0 {
            0
        } else {
            (total - 1) / BLOCK * BLOCK
        }
        .min(head.len() / BLOCK * BLOCK);
        for block in head[..straight].chunks_exact(BLOCK) {
            xor_into(&mut state, block);
            self.mac.encrypt_block((&mut state).into());
        }
        // What is left: at most a block of `head`, then `last` if any.
        let rest = &head[straight..];
        let mut tail = [0u8; 2 * BLOCK];
        tail[..rest.len()].copy_from_slice(rest);
        let mut tail_len = rest.len();
        if let Some(last) = last {
            tail[tail_len..tail_len + BLOCK].copy_from_slice(last);
            tail_len += BLOCK;
        }
        if tail_len > BLOCK {
            xor_into(&mut state, &tail[..BLOCK]);
            self.mac.encrypt_block((&mut state).into());
            tail.copy_within(BLOCK..tail_len, 0);
            tail_len -= BLOCK;
        }
        let mut final_block = [0u8; BLOCK];
        final_block[..tail_len].copy_from_slice(&tail[..tail_len]);
        if tail_len == BLOCK {
            xor_into(&mut final_block, &self.whole);
        } else {
            final_block[tail_len] = 0x80;
            xor_into(&mut final_block, &self.padded);
        }
        xor_into(&mut state, &final_block);
        self.mac.encrypt_block((&mut state).into());
        state
    }

    /// XORs the CTR keystream that starts at `tag` (two bits cleared, RFC 5297 §2.5)
    /// into `data`.
    fn apply_keystream(&self, tag: &Block, data: &mut [u8]) {
        let mut iv = *tag;
        iv[8] &= 0x7f;
        iv[12] &= 0x7f;
        let mut counter = u128::from_be_bytes(iv);
        let mut stream = [aes::Block::default(); CTR_BATCH];
        for chunk in data.chunks_mut(CTR_BATCH * BLOCK) {
            let blocks = chunk.len().div_ceil(BLOCK);
            for block in &mut stream[..blocks] {
                block.copy_from_slice(&counter.to_be_bytes());
                counter = counter.wrapping_add(1);
            }
            self.ctr.encrypt_blocks(&mut stream[..blocks]);
            for (bytes, block) in chunk.chunks_mut(BLOCK).zip(&stream) {
                xor_into_slice(bytes, block);
            }
        }
    }
}

/// Doubling in GF(2^128) (RFC 5297 §2.3).
fn dbl(block: Block) -> Block {
    let value = u128::from_be_bytes(block);
    let carry = if value >> 127 == 1 { 0x87 } else { 0 };
    ((value << 1) ^ carry).to_be_bytes()
}

fn xor(mut a: Block, b: &Block) -> Block {
    xor_into(&mut a, b);
    a
}

/// XORs `source` (at most a block) into the front of `target`.
fn xor_into(target: &mut Block, source: &[u8]) {
    for (t, s) in target.iter_mut().zip(source) {
        *t ^= s;
    }
}

fn xor_into_slice(target: &mut [u8], source: &[u8]) {
    for (t, s) in target.iter_mut().zip(source) {
        *t ^= s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes_siv::aead::inout::InOutBuf;
    use aes_siv::siv::Aes128Siv;
    use proptest::prelude::*;

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
            .collect()
    }

    #[test]
    fn rfc_5297_deterministic_vector() {
        // RFC 5297 A.1.
        let key: [u8; 32] = hex("fffefdfcfbfaf9f8f7f6f5f4f3f2f1f0f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff")
            .try_into()
            .expect("key");
        let associated = hex("101112131415161718191a1b1c1d1e1f2021222324252627");
        let mut data = hex("112233445566778899aabbccddee");
        let siv = Siv::new(&key);
        let tag = siv.seal(&associated, &mut data);
        assert_eq!(tag.to_vec(), hex("85632d07c6e8f37f950acd320a2ecc93"));
        assert_eq!(data, hex("40c02b9690c4dc04daef7f6afe5c"));
        assert_eq!(siv.open(&associated, &tag, &mut data), Ok(()));
        assert_eq!(data, hex("112233445566778899aabbccddee"));
    }

    #[test]
    fn a_mismatch_leaves_the_ciphertext_as_it_was() {
        let siv = Siv::new(&[3; 32]);
        let mut data = b"sip:alice@10.0.0.2:5080".to_vec();
        let tag = siv.seal(b"ad", &mut data);
        let sealed = data.clone();
        assert_eq!(siv.open(b"other ad", &tag, &mut data), Err(Mismatch));
        assert_eq!(data, sealed);
        let mut bad_tag = tag;
        bad_tag[15] ^= 1;
        assert_eq!(siv.open(b"ad", &bad_tag, &mut data), Err(Mismatch));
        assert_eq!(data, sealed);
        assert_eq!(
            Siv::new(&[4; 32]).open(b"ad", &tag, &mut data),
            Err(Mismatch)
        );
        assert_eq!(data, sealed);
    }

    proptest! {
        // Lengths around block boundaries matter most: 0, 15, 16, 17, 31, 32, 33, …
        #[test]
        fn same_output_as_the_aes_siv_crate(
            key in proptest::array::uniform32(any::<u8>()),
            associated in proptest::collection::vec(any::<u8>(), 0..70),
            plaintext in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let mut reference = Aes128Siv::new((&key).into());
            let mut expected = plaintext.clone();
            let expected_tag = reference
                .encrypt_inout_detached([&associated], InOutBuf::from(&mut expected[..]))
                .expect("seals");
            let siv = Siv::new(&key);
            let mut data = plaintext.clone();
            let tag = siv.seal(&associated, &mut data);
            prop_assert_eq!(&tag[..], expected_tag.as_slice());
            prop_assert_eq!(&data, &expected);
            prop_assert_eq!(siv.open(&associated, &tag, &mut data), Ok(()));
            prop_assert_eq!(data, plaintext);
        }
    }
}
