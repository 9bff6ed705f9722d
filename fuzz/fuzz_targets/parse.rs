//! Fuzz target `parse`: every way of reading a message must survive any input.
//!
//! The first byte of the input chooses where the rest is cut in two for the stream
//! framer; the rest goes through `parse_everything` of the shared contract
//! (`crates/sip/tests/support/contract.rs`, also run by the property tests): parsed as a
//! datagram and as a stream message under several limits, framed whole and in two
//! chunks, and, when it parses, read through every accessor and sanity, with the
//! invariants callers rely on checked along the way.

#![no_main]

#[path = "../../crates/sip/tests/support/contract.rs"]
mod contract;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&first, input)) = data.split_first() else {
        return;
    };
    let split = usize::from(first) * input.len() / 255;
    contract::parse_everything(input, split);
});
