use alock::AdvisoryKey;

#[derive(AdvisoryKey)]
#[advisory_key(namespace = 1.5)]
struct Float(i32);

#[derive(AdvisoryKey)]
#[advisory_key(namespace = true)]
struct Bool(i32);

#[derive(AdvisoryKey)]
#[advisory_key(namespace = b"orders")]
struct ByteString(i32);

#[derive(AdvisoryKey)]
#[advisory_key(namespace = 7u64)]
struct Suffixed(i32);

fn main() {}
