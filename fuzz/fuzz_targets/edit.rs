//! Fuzz target `edit`: the editor's contract on any message.
//!
//! The first five bytes choose edits (Via push and pop, parameters, Request-URI, header
//! insertion, removal and replacement, body), applied with fixed valid texts to the
//! rest of the input when it parses; `check_edit_contract` of the shared contract
//! (`crates/sip/tests/support/contract.rs`, also run by the property tests) then
//! requires the output to be exactly one message that parses, with a Content-Length
//! equal to its body, and an editor without edits to change nothing.

#![no_main]

#[path = "../../crates/sip/tests/support/contract.rs"]
mod contract;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((ctl, input)) = data.split_first_chunk::<5>() else {
        return;
    };
    contract::check_edit_contract(input, *ctl);
});
