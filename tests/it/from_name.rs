//! `LockId::from_name` locks what sqlx's `PgAdvisoryLock::new` locks, for
//! every kind of name, so a program moving from sqlx's lock keeps its keys.

use alock::LockId;
use sqlx::postgres::PgAdvisoryLock;

fn sqlx_id(name: &str) -> LockId {
    let key = PgAdvisoryLock::new(name).key().clone();
    LockId::try_from(key).expect("sqlx keys a name by an int8")
}

fn assert_same_key(name: &str) {
    assert_eq!(LockId::from_name(name), sqlx_id(name), "name {name:?}");
}

#[test]
fn sqlx_documented_example() {
    assert_eq!(
        LockId::from_name("my first Postgres advisory lock!"),
        LockId::Int8(-5_560_419_505_042_474_287)
    );
    assert_same_key("my first Postgres advisory lock!");
}

#[test]
fn empty_ascii_and_unicode_names() {
    for name in [
        "",
        " ",
        "a",
        "orders",
        "Orders",
        "orders ",
        "orders:7",
        "\0",
        "tab\there",
        "café",
        "cafe\u{301}", // the same word, not normalized: another key
        "日本語のロック",
        "🔒 lock",
        "\u{10ffff}",
    ] {
        assert_same_key(name);
    }
    assert_ne!(LockId::from_name("café"), LockId::from_name("cafe\u{301}"));
}

#[test]
fn long_names() {
    for len in [31, 32, 33, 63, 64, 65, 127, 128, 129, 1000, 100_000] {
        assert_same_key(&"x".repeat(len));
        assert_same_key(&"é".repeat(len));
    }
}

/// xorshift64*, so the names are random but the same in every run.
struct Names(u64);

impl Names {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn name(&mut self) -> String {
        let len = self.next() % 80;
        (0..len)
            .map(|_| {
                let bits = self.next();
                match bits % 4 {
                    0 => char::from(b' ' + (bits >> 8) as u8 % 95),
                    _ => char::from_u32((bits >> 8) as u32 % 0x11_0000).unwrap_or('\u{fffd}'),
                }
            })
            .collect()
    }
}

#[test]
fn random_names() {
    let mut names = Names(0x9e37_79b9_7f4a_7c15);
    for _ in 0..2000 {
        assert_same_key(&names.name());
    }
}
