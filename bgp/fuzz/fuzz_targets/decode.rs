//! Any byte string: decoding must not panic, and what decodes must re-encode to a
//! message that decodes to the same value.
#![no_main]

use bgp::wire::{Codec, Message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for four_octet_as in [true, false] {
        let codec = Codec { four_octet_as };
        if let Ok(m) = Message::decode(data, codec) {
            let again = m.encode(codec);
            assert_eq!(Message::decode(&again, codec), Ok(m));
        }
    }
});
