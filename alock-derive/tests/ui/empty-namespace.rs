use alock::AdvisoryKey;

#[derive(AdvisoryKey)]
#[advisory_key(namespace = "")]
struct Order(i32);

fn main() {}
