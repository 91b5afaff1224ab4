//! Range headers: no input panics; a partial range always lies inside the representation.
#![no_main]

use depot::http::range::{parse, RangeRequest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u64, &str)| {
    let (len, header) = input;
    // Small lengths are where the off-by-one bugs live; the raw u64 covers overflow.
    for len in [len, len % 64] {
        if let RangeRequest::Partial { start, end } = parse(header, len) {
            assert!(
                start <= end && end < len,
                "{header:?} of {len}: {start}-{end}"
            );
        }
    }
});
