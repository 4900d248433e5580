use alock::AdvisoryKey;

#[derive(AdvisoryKey)]
#[advisory_key(namespace = "bits")]
union Bits {
    int: i32,
    uint: u32,
}

fn main() {}
