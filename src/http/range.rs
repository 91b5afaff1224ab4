//! `Range: bytes=...` parsing (RFC 9110 section 14) for a single range.

/// What a Range header asks of a representation of `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// Serve the whole representation (no header, a header we ignore, or several ranges).
    Full,
    /// Serve bytes `start..=end`.
    Partial { start: u64, end: u64 },
    /// Nothing of the representation overlaps the range: 416.
    Unsatisfiable,
}

/// Interprets a Range header value. Syntax we do not understand and multi-range requests are
/// ignored (the full body is a valid answer to both); only a well-formed single range that does
/// not overlap the content is unsatisfiable.
pub fn parse(header: &str, len: u64) -> RangeRequest {
    // Range units are case-insensitive (RFC 9110 section 14.1): `Bytes=0-4` is a byte range.
    let header = header.trim();
    let spec = match header.split_at_checked(6) {
        Some((unit, spec)) if unit.eq_ignore_ascii_case("bytes=") => spec,
        _ => return RangeRequest::Full,
    };
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeRequest::Full;
    };
    let num = |s: &str| -> Option<u64> {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            None
        } else {
            s.parse().ok()
        }
    };
    match (a.trim().is_empty(), b.trim().is_empty()) {
        // bytes=-N: the last N bytes
        (true, false) => match num(b) {
            Some(0) => RangeRequest::Unsatisfiable,
            // A suffix of an empty representation is satisfiable (RFC 9110 section 14.1.1:
            // the only satisfiable form for zero length) and selects nothing: the full,
            // empty, body with 200 is the answer, as there is no `bytes 0--1/0` to send.
            Some(_) if len == 0 => RangeRequest::Full,
            Some(n) => RangeRequest::Partial {
                start: len.saturating_sub(n),
                end: len - 1,
            },
            None => RangeRequest::Full,
        },
        // bytes=S-: from S to the end
        (false, true) => match num(a) {
            Some(s) if s >= len => RangeRequest::Unsatisfiable,
            Some(s) => RangeRequest::Partial {
                start: s,
                end: len - 1,
            },
            None => RangeRequest::Full,
        },
        // bytes=S-E
        (false, false) => match (num(a), num(b)) {
            (Some(s), Some(e)) if s <= e => {
                if s >= len {
                    RangeRequest::Unsatisfiable
                } else {
                    RangeRequest::Partial {
                        start: s,
                        end: e.min(len - 1),
                    }
                }
            }
            _ => RangeRequest::Full,
        },
        (true, true) => RangeRequest::Full,
    }
}

#[cfg(test)]
mod tests {
    use super::RangeRequest::*;
    use super::*;

    #[test]
    fn table() {
        let cases: &[(&str, u64, RangeRequest)] = &[
            ("bytes=0-0", 10, Partial { start: 0, end: 0 }),
            ("bytes=0-", 10, Partial { start: 0, end: 9 }),
            ("bytes=9-", 10, Partial { start: 9, end: 9 }),
            ("bytes=10-", 10, Unsatisfiable),
            ("bytes=5-100", 10, Partial { start: 5, end: 9 }),
            ("bytes=-3", 10, Partial { start: 7, end: 9 }),
            ("bytes=-30", 10, Partial { start: 0, end: 9 }),
            ("bytes=-0", 10, Unsatisfiable),
            ("bytes=0-", 0, Unsatisfiable),
            ("bytes=-1", 0, Full),
            ("bytes=-0", 0, Unsatisfiable),
            ("Bytes=0-4", 10, Partial { start: 0, end: 4 }),
            ("BYTES=-3", 10, Partial { start: 7, end: 9 }),
            ("bytes =0-4", 10, Full),
            ("byte=0-4", 10, Full),
            ("é=0-4", 10, Full),
            ("bytes=5-2", 10, Full),
            ("bytes=0-1,3-4", 10, Full),
            ("items=0-1", 10, Full),
            ("bytes=a-b", 10, Full),
            ("bytes=-", 10, Full),
            ("bytes=+1-2", 10, Full),
            ("bytes=99999999999999999999999-", 10, Full),
        ];
        for (h, len, want) in cases {
            assert_eq!(parse(h, *len), *want, "{h} of {len}");
        }
    }
}
