//! Version-aware comparison of firmware version strings ("2.10.2" > "2.9.0",
//! "GDC5902Q" > "GDC5602Q").

use std::cmp::Ordering;

enum Chunk<'a> {
    Num(&'a str),
    Text(&'a str),
}

fn chunks(v: &str) -> Vec<Chunk<'_>> {
    let mut out = Vec::new();
    let mut start = None;
    let mut numeric = false;
    for (i, c) in v.char_indices() {
        let is_sep = matches!(c, '.' | '-' | '_' | ' ' | ':' | '/');
        let is_digit = c.is_ascii_digit();
        match start {
            Some(s) if is_sep || is_digit != numeric => {
                out.push(if numeric {
                    Chunk::Num(&v[s..i])
                } else {
                    Chunk::Text(&v[s..i])
                });
                start = None;
            }
            _ => {}
        }
        if !is_sep && start.is_none() {
            start = Some(i);
            numeric = is_digit;
        }
    }
    if let Some(s) = start {
        out.push(if numeric {
            Chunk::Num(&v[s..])
        } else {
            Chunk::Text(&v[s..])
        });
    }
    out
}

fn cmp_num(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// Compares two version strings chunk by chunk: digits as numbers, the rest
/// case-insensitively as text; a number sorts after text; a longer version
/// with an equal prefix is newer.
pub fn compare(a: &str, b: &str) -> Ordering {
    let (ca, cb) = (chunks(a), chunks(b));
    for (x, y) in ca.iter().zip(cb.iter()) {
        let ord = match (x, y) {
            (Chunk::Num(x), Chunk::Num(y)) => cmp_num(x, y),
            (Chunk::Text(x), Chunk::Text(y)) => x.to_ascii_lowercase().cmp(&y.to_ascii_lowercase()),
            (Chunk::Num(_), Chunk::Text(_)) => Ordering::Greater,
            (Chunk::Text(_), Chunk::Num(_)) => Ordering::Less,
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    ca.len().cmp(&cb.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::*;

    #[test]
    fn compare_table() {
        let cases = [
            ("2.10.2", "2.9.0", Greater),
            ("2.10.2", "2.10.2", Equal),
            ("2.10", "2.10.1", Less),
            ("GDC5902Q", "GDC5602Q", Greater),
            ("1.0.010", "1.0.9", Greater),
            ("0x0a000f0", "0x0a000f0", Equal),
            ("v1.2", "V1.2", Equal),
            ("U30 v2.76 (02/09/2023)", "U30 v2.70 (11/01/2022)", Greater),
            ("99999999999999999999999", "1", Greater),
        ];
        for (a, b, want) in cases {
            assert_eq!(compare(a, b), want, "{a} vs {b}");
            assert_eq!(compare(b, a), want.reverse(), "{b} vs {a}");
        }
    }
}
