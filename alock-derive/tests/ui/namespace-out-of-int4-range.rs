use alock::AdvisoryKey;

#[derive(AdvisoryKey)]
#[advisory_key(namespace = 3000000000)]
struct TooLarge(i32);

#[derive(AdvisoryKey)]
#[advisory_key(namespace = -2147483649)]
struct TooSmall(i32);

#[derive(AdvisoryKey)]
#[advisory_key(namespace = 1000000000000000000000000000000000000000000)]
struct WayTooLarge(i32);

fn main() {}
